"""Shared inputs and brute-force references for the sparse tests (numpy, independent of the code under test)."""

from __future__ import annotations

import itertools

import numpy as np
import torch


def random_voxels(
    spatial_shape: tuple[int, int, int], batch_size: int, fill: float, seed: int
) -> torch.Tensor:
    """(N, 4) int32 unique coords: each grid cell of each sample active with probability ``fill``, rows shuffled."""
    rng = np.random.default_rng(seed)
    active = rng.random((batch_size, *spatial_shape)) < fill
    coords = np.argwhere(active)
    coords = coords[rng.permutation(coords.shape[0])]
    return torch.from_numpy(coords.astype(np.int32))


def brute_force_strided_pairs(
    coords: np.ndarray,
    spatial_shape: tuple[int, int, int],
    kernel_size: tuple[int, int, int],
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
) -> tuple[set[tuple[int, int, int, int]], set[tuple[tuple[int, ...], tuple[int, ...], int]], tuple[int, int, int]]:
    """Enumerate every output cell o and offset k; input cell x = o*s - p + k (spconv rule).

    Returns (active output coords, {(input coord, output coord, offset index)}, output grid).
    """
    out_shape = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(spatial_shape, kernel_size, stride, padding))
    active = {tuple(int(v) for v in row) for row in coords}
    batches = sorted({row[0] for row in active})
    offsets = list(itertools.product(*(range(k) for k in kernel_size)))
    outputs, pairs = set(), set()
    for b in batches:
        for o in itertools.product(*(range(n) for n in out_shape)):
            for k_index, k in enumerate(offsets):
                x = tuple(o[d] * stride[d] - padding[d] + k[d] for d in range(3))
                if (b, *x) in active:
                    outputs.add((b, *o))
                    pairs.add(((b, *x), (b, *o), k_index))
    return outputs, pairs, out_shape  # type: ignore[return-value]


def brute_force_submanifold_pairs(
    coords: np.ndarray, kernel_size: tuple[int, int, int]
) -> set[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """{(input coord, output coord, offset index)} with input = output + (k - ks // 2), all voxel pairs tested."""
    offsets = list(itertools.product(*(range(k) for k in kernel_size)))
    radius = [k // 2 for k in kernel_size]
    active = {tuple(int(v) for v in row) for row in coords}
    pairs = set()
    for out in active:
        for k_index, k in enumerate(offsets):
            x = (out[0], *(out[1 + d] + k[d] - radius[d] for d in range(3)))
            if x in active:
                pairs.add((x, out, k_index))
    return pairs


def kernel_map_as_coord_triples(kernel_map, in_coords: torch.Tensor, out_coords: torch.Tensor) -> set:
    """A KernelMap's pairs as {(input coord, output coord, offset index)}, identity pairs included."""
    triples = set()
    in_list = in_coords.tolist()
    out_list = out_coords.tolist()
    in_rows = kernel_map.in_rows.tolist()
    out_rows = kernel_map.out_rows.tolist()
    for offset, start, end in kernel_map.segments:
        for i, o in zip(in_rows[start:end], out_rows[start:end]):
            triples.add((tuple(in_list[i]), tuple(out_list[o]), offset))
    if kernel_map.identity_offset is not None:
        for row in in_list:
            triples.add((tuple(row), tuple(row), kernel_map.identity_offset))
    return triples


def rows_sorted_by_coords(coords: torch.Tensor) -> torch.Tensor:
    """Permutation sorting (N, 4) coords lexicographically, to compare backends with different row orders."""
    c = coords.long()
    keys = ((c[:, 0] * 4096 + c[:, 1]) * 4096 + c[:, 2]) * 4096 + c[:, 3]
    return torch.argsort(keys)


class StackedConvs(torch.nn.Module):
    """One conv, or a strided conv followed by its inverse: the unit the backend exactness tests compare."""

    def __init__(self, *layers: torch.nn.Module) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def run_on_backend(model: torch.nn.Module, backend: str, coords: torch.Tensor, feats: torch.Tensor, grid, batch: int,
                   seed: int = 0):
    """Forward + backward of ``model`` on ``backend``: (sorted output coords, sorted output feats, input grad,
    parameter grads, kernel-map pair counts per layer). The loss weights each output row by a probe that depends
    only on its position in coordinate order, so backends with different row orders get the same loss."""
    from harness.sparse import SparseTensor, count_sparse_macs, set_backend

    set_backend(model, backend)
    model.zero_grad(set_to_none=True)
    feats = feats.clone().requires_grad_(True)
    with count_sparse_macs(model) as counter:
        out = model(SparseTensor.from_coords(feats, coords, grid, batch))
    assert {layer.backend for layer in counter.layers} == {backend}
    order = rows_sorted_by_coords(out.coords)
    out_sorted = out.feats[order]
    probe = torch.randn(out_sorted.shape, generator=torch.Generator().manual_seed(seed), dtype=out_sorted.dtype)
    (out_sorted * probe).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.coords[order], out_sorted.detach(), feats.grad.clone(), grads, [(l.name, l.pairs) for l in counter.layers]


def assert_backends_agree(model: torch.nn.Module, in_channels: int, seed: int, backend: str, grid, batch: int,
                          tolerance: float) -> dict[str, float]:
    """torchref vs ``backend`` in float64 on random voxels: same output coordinates and pair counts, outputs and
    every gradient within ``tolerance`` (absolute); returns the errors."""
    coords = random_voxels(grid, batch, 0.3, seed=seed)
    feats = torch.randn(coords.shape[0], in_channels, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    model = model.double()
    ref = run_on_backend(model, "torchref", coords, feats, grid, batch, seed)
    other = run_on_backend(model, backend, coords, feats, grid, batch, seed)
    assert torch.equal(ref[0], other[0]), "output coordinates differ"
    assert other[1].dtype == torch.float64 and other[1].abs().max() > 0
    errors = {"output": (ref[1] - other[1]).abs().max().item(), "grad_input": (ref[2] - other[2]).abs().max().item()}
    assert ref[3].keys() == other[3].keys() and ref[3]
    for name in ref[3]:
        errors[f"grad_{name}"] = (ref[3][name] - other[3][name]).abs().max().item()
    assert ref[4] == other[4], "kernel-map pair counts differ"
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance, f"{worst}: {errors[worst]:.3e} > {tolerance} ({errors})"
    return errors
