"""Kernel maps (input row, output row, kernel offset) for sparse 3-D convolutions, pure torch.

Conventions, all following spconv 2.x (traveller59/spconv v2.3.8):

* Kernel offsets are enumerated row-major over ``(k0, k1, k2)`` (``k2`` fastest), the
  flattening of the KRSC weight ``(C_out, k0, k1, k2, C_in)``.
* Submanifold conv (``SubMConv3d``, odd kernels only): output voxels = input voxels, and
  offset ``k`` reads the input at ``out + (k - kernel_size // 2)`` (a correlation).
* Strided / regular sparse conv (``SparseConv3d``): an input cell ``x`` feeds output cell
  ``o`` through offset ``k`` iff ``x = o * stride - padding + k`` (dilation 1), and the output
  grid is ``floor((in + 2 * padding - kernel_size) / stride) + 1`` per dimension
  (``spconv/pytorch/ops.py`` ``get_conv_output_size``). The active outputs are every cell
  reachable from an active input; they come out sorted by ``[batch, d0, d1, d2]``.
* Inverse conv (``SparseInverseConv3d``): the strided conv's map with input and output swapped.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from harness.sparse.hashing import SortedKeyIndex, coords_to_keys, keys_to_coords, offset_to_key_delta

Triple = tuple[int, int, int]


def as_triple(value: int | Sequence[int], name: str) -> Triple:
    """``3`` -> ``(3, 3, 3)``; a length-3 sequence -> tuple of ints."""
    if isinstance(value, int):
        return (value, value, value)
    triple = tuple(int(v) for v in value)
    if len(triple) != 3:
        raise ValueError(f"{name} must be an int or have 3 entries, got {value!r}")
    return triple  # type: ignore[return-value]


def conv_output_size(
    spatial_shape: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int]
) -> Triple:
    """Output grid of a regular sparse conv: ``floor((in + 2p - k) / s) + 1`` per dimension.

    spconv 2.x output-size rule with dilation 1 (traveller59/spconv
    ``spconv/pytorch/ops.py`` ``get_conv_output_size``). Units: grid cells.
    """
    out = tuple((int(n) + 2 * int(p) - int(k)) // int(s) + 1 for n, k, s, p in zip(spatial_shape, kernel_size, stride, padding))
    if any(size <= 0 for size in out):
        raise ValueError(
            f"conv output grid {out} is empty: input {tuple(spatial_shape)}, kernel {tuple(kernel_size)}, "
            f"stride {tuple(stride)}, padding {tuple(padding)}"
        )
    return out  # type: ignore[return-value]


def kernel_offsets(kernel_size: Sequence[int]) -> list[Triple]:
    """Kernel positions ``(k0, k1, k2)``, ``0 <= k_i < kernel_size[i]``, row-major (KRSC order)."""
    return list(itertools.product(*(range(int(k)) for k in kernel_size)))  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class KernelMap:
    """Input->output pairs of one sparse conv, grouped by kernel offset.

    Attributes:
        kernel_size: kernel geometry the map was built for.
        num_in / num_out: active voxels on the input / output side.
        in_rows, out_rows: (P,) int64 pair rows, concatenated offset by offset; within an
            offset every output row appears at most once.
        segments: ``(offset, start, end)``: pairs of kernel offset ``offset`` (row-major
            index into the flattened kernel) are ``in_rows[start:end]``/``out_rows[start:end]``.
        identity_offset: for submanifold maps, the centre offset whose pairs are ``i -> i``
            for every voxel; they are not stored in ``in_rows``/``out_rows``.
    """

    kernel_size: Triple
    num_in: int
    num_out: int
    in_rows: torch.Tensor
    out_rows: torch.Tensor
    segments: tuple[tuple[int, int, int], ...]
    identity_offset: int | None = None

    @property
    def kernel_volume(self) -> int:
        """Number of kernel offsets K."""
        return self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]

    @property
    def num_pairs(self) -> int:
        """All (input, output, offset) pairs including the implicit identity ones."""
        identity_pairs = self.num_in if self.identity_offset is not None else 0
        return int(self.in_rows.shape[0]) + identity_pairs

    def pairs_per_offset(self) -> list[int]:
        """(K,) pair count per kernel offset, row-major."""
        counts = [0] * self.kernel_volume
        for offset, start, end in self.segments:
            counts[offset] += end - start
        if self.identity_offset is not None:
            counts[self.identity_offset] += self.num_in
        return counts

    def transposed(self) -> KernelMap:
        """The same pairs with input and output swapped (inverse / transposed conv)."""
        return KernelMap(
            self.kernel_size,
            self.num_out,
            self.num_in,
            self.out_rows,
            self.in_rows,
            self.segments,
            self.identity_offset,
        )


def _segments_from_parts(parts: list[tuple[int, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Concatenate per-offset (offset, in_rows, out_rows) parts and index them by segment.

    Offsets without pairs get no segment (saves three empty kernel calls each in the conv).
    """
    parts = [part for part in parts if part[1].shape[0] > 0]
    if not parts:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, ()
    sizes = [int(p[1].shape[0]) for p in parts]
    segments = []
    start = 0
    for (offset, _, _), size in zip(parts, sizes):
        segments.append((offset, start, start + size))
        start += size
    in_rows = torch.cat([p[1] for p in parts])
    out_rows = torch.cat([p[2] for p in parts])
    return in_rows, out_rows, tuple(segments)


def build_submanifold_map(
    coords: torch.Tensor, spatial_shape: Sequence[int], batch_size: int, kernel_size: Sequence[int]
) -> KernelMap:
    """Kernel map of a submanifold conv on ``coords`` (spconv ``SubMConv3d`` semantics).

    Offset ``k`` pairs output voxel ``j`` with the input voxel at ``coords[j] + (k - ks // 2)``.
    Only half of the offsets are searched: the pairs of the mirrored offset ``K - 1 - k`` are
    the same pairs with input and output swapped.

    Args:
        coords: (N, 4) int32 ``[batch, d0, d1, d2]``, unique rows.
        spatial_shape: grid extent in cells.
        batch_size: number of samples.
        kernel_size: odd kernel extents.
    """
    kernel_size = as_triple(kernel_size, "kernel_size")
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"submanifold conv needs odd kernel sizes, got {kernel_size}")
    radius = [k // 2 for k in kernel_size]
    margin = max(radius)
    index = SortedKeyIndex(coords_to_keys(coords, spatial_shape, batch_size, margin))
    sorted_keys, order = index.sorted_keys, index.order
    last = max(int(sorted_keys.shape[0]) - 1, 0)
    offsets = kernel_offsets(kernel_size)
    volume = len(offsets)
    centre = volume // 2
    found_pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for k in range(centre):
        shift = [offsets[k][d] - radius[d] for d in range(3)]
        # query with the sorted keys shifted by a constant: sorted queries search ~2x faster
        query = sorted_keys + offset_to_key_delta(shift, spatial_shape, margin)
        position = torch.searchsorted(sorted_keys, query).clamp_(max=last)
        hit = (sorted_keys[position] == query).nonzero().squeeze(1)
        in_rows, out_rows = order[position[hit]], order[hit]
        found_pairs[k] = (in_rows, out_rows)
        found_pairs[volume - 1 - k] = (out_rows, in_rows)  # mirrored offset
    parts = [(k, *found_pairs[k]) for k in range(volume) if k != centre]
    in_rows, out_rows, segments = _segments_from_parts(parts)
    n = int(coords.shape[0])
    return KernelMap(kernel_size, n, n, in_rows, out_rows, segments, identity_offset=centre)


def build_strided_map(
    coords: torch.Tensor,
    spatial_shape: Sequence[int],
    batch_size: int,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
) -> tuple[KernelMap, torch.Tensor, Triple]:
    """Kernel map, output coordinates and output grid of a regular (strided) sparse conv.

    Implements spconv's rule ``x = o * stride - padding + k``: for every input cell ``x`` and
    offset ``k`` the candidate output ``o = (x + padding - k) / stride`` is kept when the
    division is exact and ``0 <= o < out_shape``. Active outputs are the unique candidates,
    sorted by ``[batch, d0, d1, d2]``.

    Returns:
        kernel_map: pairs grouped by offset.
        out_coords: (N_out, 4) int32.
        out_shape: output grid extent in cells.
    """
    kernel_size = as_triple(kernel_size, "kernel_size")
    stride = as_triple(stride, "stride")
    padding = as_triple(padding, "padding")
    out_shape = conv_output_size(spatial_shape, kernel_size, stride, padding)
    cells = coords[:, 1:].long()
    # Per dimension d and kernel position k_d: output cell o_d = (x_d + p_d - k_d) / s_d and
    # whether it is exact and inside the grid; an offset is valid where all three are.
    out_cell: list[list[torch.Tensor]] = []
    valid: list[list[torch.Tensor]] = []
    for d in range(3):
        numerator = cells[:, d] + padding[d]
        out_cell.append([])
        valid.append([])
        for k_d in range(kernel_size[d]):
            cell = torch.div(numerator - k_d, stride[d], rounding_mode="floor")
            out_cell[d].append(cell)
            valid[d].append((cell * stride[d] == numerator - k_d) & (cell >= 0) & (cell < out_shape[d]))
    _, s1, s2 = out_shape
    if batch_size * out_shape[0] * s1 * s2 >= 2**62:
        raise OverflowError(f"output grid {out_shape} x batch {batch_size} too large for int64 keys")
    batch_major = coords[:, 0].long() * out_shape[0]
    in_parts, key_parts, offset_ids = [], [], []
    for k, (k0, k1, k2) in enumerate(kernel_offsets(kernel_size)):
        in_rows = (valid[0][k0] & valid[1][k1] & valid[2][k2]).nonzero().squeeze(1)
        key = ((batch_major[in_rows] + out_cell[0][k0][in_rows]) * s1 + out_cell[1][k1][in_rows]) * s2
        in_parts.append(in_rows)
        key_parts.append(key + out_cell[2][k2][in_rows])  # = coords_to_keys(..., out_shape, margin=0)
        offset_ids.append(k)
    all_keys = torch.cat(key_parts)
    out_keys, out_rows_all = torch.unique(all_keys, sorted=True, return_inverse=True)
    out_coords = keys_to_coords(out_keys, out_shape)
    parts = []
    start = 0
    for k, in_rows in zip(offset_ids, in_parts):
        size = in_rows.shape[0]
        parts.append((k, in_rows, out_rows_all[start : start + size]))
        start += size
    in_rows, out_rows, segments = _segments_from_parts(parts)
    kernel_map = KernelMap(kernel_size, int(coords.shape[0]), int(out_coords.shape[0]), in_rows, out_rows, segments)
    return kernel_map, out_coords, out_shape
