"""torchref vs spconv-cu126 2.3.8 on CPU (algo=Native), float64: outputs and every gradient.

Both backends run the same harness modules with the same parameters; only the compute
differs. Row orders of strided outputs differ between backends, so outputs are compared
after sorting by coordinates, and the loss weights each output row by a probe that depends
only on its coordinates.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

spconv = pytest.importorskip("spconv.pytorch", reason="spconv-cu126==2.3.8 is not importable here (pip install 'pvkd-harness[spconv]')")

from harness.sparse import (  # noqa: E402
    SparseConv3d,
    SparseInverseConv3d,
    SparseTensor,
    SubMConv3d,
    count_sparse_macs,
    resolve_backend,
    set_backend,
)
from harness.sparse.testing import MiniCylinderUNet  # noqa: E402
from tests.sparse.sparse_cases import random_voxels, rows_sorted_by_coords  # noqa: E402

TOLERANCE = 1e-10
GRID = (10, 9, 8)
BATCH = 2


class _Single(nn.Module):
    """One conv, or a strided conv followed by its inverse."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: SparseTensor) -> SparseTensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _run(model: nn.Module, backend: str, coords: torch.Tensor, feats: torch.Tensor, seed: int = 0):
    """Forward + backward on ``backend``; returns sorted output, input grad, param grads, MACs records."""
    set_backend(model, backend)
    model.zero_grad(set_to_none=True)
    feats = feats.clone().requires_grad_(True)
    with count_sparse_macs(model) as counter:
        out = model(SparseTensor.from_coords(feats, coords, GRID, BATCH))
    assert {layer.backend for layer in counter.layers} == {backend}
    order = rows_sorted_by_coords(out.coords)
    out_sorted = out.feats[order]
    probe = torch.randn(out_sorted.shape, generator=torch.Generator().manual_seed(seed), dtype=out_sorted.dtype)
    (out_sorted * probe).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.coords[order], out_sorted.detach(), feats.grad.clone(), grads, [(l.name, l.pairs) for l in counter.layers]


def _assert_backends_agree(model: nn.Module, in_channels: int, seed: int) -> dict[str, float]:
    coords = random_voxels(GRID, BATCH, 0.3, seed=seed)
    feats = torch.randn(coords.shape[0], in_channels, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    model = model.double()
    ref = _run(model, "torchref", coords, feats, seed)
    sp = _run(model, "spconv", coords, feats, seed)
    assert torch.equal(ref[0], sp[0]), "output coordinates differ"
    errors = {"output": (ref[1] - sp[1]).abs().max().item(), "grad_input": (ref[2] - sp[2]).abs().max().item()}
    assert ref[3].keys() == sp[3].keys() and ref[3]
    for name in ref[3]:
        errors[f"grad_{name}"] = (ref[3][name] - sp[3][name]).abs().max().item()
    assert ref[4] == sp[4], "kernel-map pair counts differ"
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{worst}: {errors[worst]:.3e} > {TOLERANCE} ({errors})"
    return errors


def test_spconv_backend_is_the_cuda_wheel_on_cpu() -> None:
    from spconv.cppconstants import CPU_ONLY_BUILD

    assert not CPU_ONLY_BUILD, "the CPU-only spconv wheel gives wrong rows with >1 thread (spconv#679)"
    assert resolve_backend("spconv", "cpu") == "spconv"
    assert resolve_backend("auto", "cpu") == "torchref"


@pytest.mark.parametrize("kernel_size", [(1, 3, 3), (3, 1, 3), (3, 3, 3), (3, 1, 1), (1, 1, 1)])
def test_subm_matches_spconv(kernel_size) -> None:
    _assert_backends_agree(_Single(SubMConv3d(3, 5, kernel_size, indice_key="k", bias=True)), 3, seed=20)


@pytest.mark.parametrize(
    "kernel_size, stride, padding",
    [(3, 2, 1), (3, (2, 2, 1), 1), (2, 2, 0)],
    ids=["k3s2p1", "k3s221p1", "k2s2p0"],
)
def test_strided_and_inverse_match_spconv(kernel_size, stride, padding) -> None:
    strided = SparseConv3d(3, 4, kernel_size, stride, padding, indice_key="down")
    _assert_backends_agree(_Single(strided), 3, seed=21)
    inverse = SparseInverseConv3d(4, 2, kernel_size, indice_key="down", bias=True)
    _assert_backends_agree(_Single(SparseConv3d(3, 4, kernel_size, stride, padding, indice_key="down"), inverse), 3, seed=22)


def test_spconv1_key_sharing_emulation_matches_spconv() -> None:
    # Cylinder3D UpBlock under spconv 1.x: conv1 (1,3,3) creates the key, conv2 (3,1,3) and
    # conv3 (3,3,3) reuse its (1,3,3) map with their first 9 weight slices.
    model = _Single(
        SubMConv3d(3, 4, (1, 3, 3), indice_key="up0"),
        SubMConv3d(4, 4, (3, 1, 3), indice_key="up0", map_kernel_size=(1, 3, 3)),
        SubMConv3d(4, 2, (3, 3, 3), indice_key="up0", map_kernel_size=(1, 3, 3)),
    )
    errors = _assert_backends_agree(model, 3, seed=23)
    assert errors


def test_cylinder_like_unet_block_matches_spconv_end_to_end() -> None:
    torch.manual_seed(0)
    model = MiniCylinderUNet(in_channels=4, width=4, num_classes=5, pool_stride=(2, 2, 1))
    model.train()  # batch-norm statistics from the batch, as in training
    _assert_backends_agree(model, 4, seed=24)


def test_layers_without_indice_key_match_spconv() -> None:
    # the spconv backend gives them synthetic keys so their pair counts are recorded too
    model = _Single(SubMConv3d(3, 4, 3), SubMConv3d(4, 4, 3), SparseConv3d(4, 2, 2, 2, 0))
    _assert_backends_agree(model, 3, seed=25)


def test_rerun_on_the_same_input_tensor_on_spconv() -> None:
    coords = random_voxels(GRID, BATCH, 0.3, seed=26)
    x = SparseTensor.from_coords(torch.randn(coords.shape[0], 4, dtype=torch.float64), coords, GRID, BATCH)
    model = set_backend(MiniCylinderUNet(4, 4, 3).double().eval(), "spconv")
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first.feats, second.feats)
    with pytest.raises(ValueError, match="already belongs"):
        set_backend(SparseConv3d(4, 4, 2, 2, 0, indice_key="down_pool"), "spconv").double()(x)
