"""``torchref``: pure-PyTorch sparse conv (gather -> matmul -> index_add), CPU and CUDA.

No compiled extension. Kernel maps come from :mod:`harness.sparse.kernel_map` (sorted int64
keys + ``searchsorted``) and are cached in the tensor's :class:`~harness.sparse.tensor.SparseCache`:
under ``indice_key`` when one is given, and under ``(stride, geometry)`` otherwise (the
torchsparse convention). The arithmetic follows spconv 2.x's "Native" algorithm
(traveller59/spconv ``spconv/pytorch/ops.py`` ``indice_conv``/``indice_conv_backward``):
for every kernel offset, gather the paired input rows, multiply by that offset's
``(C_in, C_out)`` weight slice and scatter-add into the paired output rows.

Determinism: on CPU the result is bit-reproducible; on CUDA ``index_add_`` uses atomics, so
the summation order (and the last bits of fp32 results) may vary between runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from harness.sparse.backends.base import ConvGeometry, ConvOutput
from harness.sparse.kernel_map import KernelMap, build_strided_map, build_submanifold_map
from harness.sparse.tensor import SparseTensor

BACKEND_NAME = "torchref"


class _GatherGemmScatter(torch.autograd.Function):
    """``out[o] = sum over pairs (i, o, k) of feats[i] @ weight[k]`` with a hand-written backward.

    Shapes: feats (N_in, C_in); weight (K, C_in, C_out); out (N_out, C_out).

    Work is streamed offset by offset through two small reusable buffers sized for the
    largest offset (as spconv's Native CPU path does, ``spconv/pytorch/ops.py``
    ``indice_conv``): gathering all P pairs at once allocates a fresh P x C tensor per call,
    and on CPU the page faults of that allocation cost more than the GEMMs (measured 2.3x
    slower for a 3x3x3 conv on 20k voxels, 64 channels). Nothing but the inputs is saved for
    backward.
    """

    @staticmethod
    def forward(ctx: Any, feats: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
        ctx.kernel_map = kernel_map
        ctx.save_for_backward(feats, weight)
        out_channels = weight.shape[2]
        if kernel_map.identity_offset is not None:
            out = torch.mm(feats, weight[kernel_map.identity_offset])
        else:
            out = feats.new_zeros((kernel_map.num_out, out_channels))
        if kernel_map.segments:
            rows = _largest_segment(kernel_map)
            gathered = feats.new_empty((rows, feats.shape[1]))
            products = feats.new_empty((rows, out_channels))
            for offset, start, end in kernel_map.segments:
                n = end - start
                torch.index_select(feats, 0, kernel_map.in_rows[start:end], out=gathered[:n])
                torch.mm(gathered[:n], weight[offset], out=products[:n])
                out.index_add_(0, kernel_map.out_rows[start:end], products[:n])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        feats, weight = ctx.saved_tensors
        kernel_map: KernelMap = ctx.kernel_map
        need_feats_grad, need_weight_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        centre = kernel_map.identity_offset
        if need_weight_grad:
            grad_weight = torch.zeros_like(weight)
            if centre is not None:
                torch.mm(feats.t(), grad_out, out=grad_weight[centre])
        if need_feats_grad:
            if centre is not None:
                grad_feats = torch.mm(grad_out, weight[centre].t())
            else:
                grad_feats = feats.new_zeros(feats.shape)
        if kernel_map.segments and (need_feats_grad or need_weight_grad):
            rows = _largest_segment(kernel_map)
            gathered_grad = grad_out.new_empty((rows, grad_out.shape[1]))  # grad_out rows of the pairs
            gathered_feats = feats.new_empty((rows, feats.shape[1]))  # feats rows, then their grads
            for offset, start, end in kernel_map.segments:
                n = end - start
                torch.index_select(grad_out, 0, kernel_map.out_rows[start:end], out=gathered_grad[:n])
                if need_weight_grad:
                    torch.index_select(feats, 0, kernel_map.in_rows[start:end], out=gathered_feats[:n])
                    torch.mm(gathered_feats[:n].t(), gathered_grad[:n], out=grad_weight[offset])
                if need_feats_grad:
                    torch.mm(gathered_grad[:n], weight[offset].t(), out=gathered_feats[:n])
                    grad_feats.index_add_(0, kernel_map.in_rows[start:end], gathered_feats[:n])
        return grad_feats, grad_weight, None


def _largest_segment(kernel_map: KernelMap) -> int:
    return max(end - start for _, start, end in kernel_map.segments)


def gather_gemm_scatter(feats: torch.Tensor, weight_krsc: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
    """Apply a kernel map: (N_in, C_in) features, KRSC weight (C_out, *ks, C_in) -> (N_out, C_out).

    Differentiable in ``feats`` and ``weight_krsc`` (first order).
    """
    out_channels, in_channels = weight_krsc.shape[0], weight_krsc.shape[-1]
    weight_kio = weight_krsc.reshape(out_channels, kernel_map.kernel_volume, in_channels).permute(1, 2, 0).contiguous()
    return _GatherGemmScatter.apply(feats.contiguous(), weight_kio, kernel_map)


@dataclass(frozen=True, eq=False)
class _CachedMap:
    """A kernel map with the input coordinates it was built on (to validate reuse)."""

    kind: str  # "subm" | "strided"
    in_coords: torch.Tensor
    in_spatial_shape: tuple[int, int, int]
    kernel_map: KernelMap
    out_coords: torch.Tensor
    out_spatial_shape: tuple[int, int, int]


def _same_coords(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Identity fast path, else exact comparison (O(N))."""
    return a is b or (a.shape == b.shape and a.device == b.device and torch.equal(a, b))


class TorchRefBackend:
    """Pure-torch backend; stateless apart from the kernel maps it puts in the tensor cache."""

    name = BACKEND_NAME

    def conv(self, x: SparseTensor, weight: torch.Tensor, geometry: ConvGeometry, training: bool) -> ConvOutput:
        """Run one conv; see :class:`~harness.sparse.backends.base.SparseConvBackend`."""
        if geometry.kind == "subm":
            entry = self._submanifold_map(x, geometry)
            kernel_map = entry.kernel_map
        elif geometry.kind == "strided":
            entry = self._strided_map(x, geometry)
            kernel_map = entry.kernel_map
        else:
            entry, kernel_map = self._inverse_map(x, geometry)
        feats = gather_gemm_scatter(x.feats, weight, kernel_map)
        if geometry.kind == "inverse":
            return ConvOutput(feats, entry.in_coords, entry.in_spatial_shape, kernel_map.num_pairs)
        return ConvOutput(feats, entry.out_coords, entry.out_spatial_shape, kernel_map.num_pairs)

    @staticmethod
    def _submanifold_map(x: SparseTensor, geometry: ConvGeometry) -> _CachedMap:
        maps = x.cache.kernel_maps
        key_entry_name = (BACKEND_NAME, "key", geometry.indice_key)
        if geometry.indice_key is not None and key_entry_name in maps:
            entry = maps[key_entry_name]
            if entry.kind != "subm":
                raise ValueError(f"indice_key {geometry.indice_key!r} belongs to a strided conv; a subm conv cannot reuse it")
            if entry.kernel_map.kernel_size != geometry.kernel_size:
                raise ValueError(
                    f"subm convs sharing indice_key {geometry.indice_key!r} must share the kernel-map geometry: "
                    f"stored {entry.kernel_map.kernel_size}, this layer {geometry.kernel_size}. To emulate spconv 1.x "
                    "key sharing pass map_kernel_size equal to the first user's kernel size."
                )
            if not _same_coords(entry.in_coords, x.coords):
                raise ValueError(f"subm convs sharing indice_key {geometry.indice_key!r} must run on the same voxels")
            return entry
        geometry_entry_name = (BACKEND_NAME, "subm", x.stride, geometry.kernel_size)
        entry = maps.get(geometry_entry_name)
        if entry is None or not _same_coords(entry.in_coords, x.coords):
            kernel_map = build_submanifold_map(x.coords, x.spatial_shape, x.batch_size, geometry.kernel_size)
            entry = _CachedMap("subm", x.coords, x.spatial_shape, kernel_map, x.coords, x.spatial_shape)
            maps[geometry_entry_name] = entry
        if geometry.indice_key is not None:
            maps[key_entry_name] = entry
        return entry

    @staticmethod
    def _strided_map(x: SparseTensor, geometry: ConvGeometry) -> _CachedMap:
        maps = x.cache.kernel_maps
        key_entry_name = (BACKEND_NAME, "key", geometry.indice_key)
        geometry_entry_name = (BACKEND_NAME, "strided", x.stride, geometry.kernel_size, geometry.stride, geometry.padding)
        if geometry.indice_key is not None and key_entry_name in maps:
            # Allowed only as a re-run of the same layer on the same voxels (e.g. teacher and
            # student fed the same input tensor); anything else is a key clash.
            entry = maps[key_entry_name]
            if entry is not maps.get(geometry_entry_name) or not _same_coords(entry.in_coords, x.coords):
                raise ValueError(
                    f"indice_key {geometry.indice_key!r} already belongs to another conv; only subm convs may share "
                    "a key (spconv 2.x rule), give each strided conv its own key"
                )
            return entry
        entry = maps.get(geometry_entry_name)
        if entry is None or not _same_coords(entry.in_coords, x.coords):
            kernel_map, out_coords, out_shape = build_strided_map(
                x.coords, x.spatial_shape, x.batch_size, geometry.kernel_size, geometry.stride, geometry.padding
            )
            entry = _CachedMap("strided", x.coords, x.spatial_shape, kernel_map, out_coords, out_shape)
            maps[geometry_entry_name] = entry
        if geometry.indice_key is not None:
            maps[key_entry_name] = entry
        return entry

    @staticmethod
    def _inverse_map(x: SparseTensor, geometry: ConvGeometry) -> tuple[_CachedMap, KernelMap]:
        entry = x.cache.kernel_maps.get((BACKEND_NAME, "key", geometry.indice_key))
        if entry is None or entry.kind != "strided":
            raise ValueError(
                f"inverse conv with indice_key {geometry.indice_key!r} needs the kernel map of a strided conv with "
                "that key, built earlier in this network by the torchref backend"
            )
        if entry.kernel_map.kernel_size != geometry.kernel_size:
            raise ValueError(
                f"inverse conv kernel {geometry.kernel_size} differs from its strided conv's {entry.kernel_map.kernel_size}"
            )
        if not _same_coords(entry.out_coords, x.coords):
            raise ValueError(
                f"inverse conv input must be the voxels produced by the strided conv with indice_key {geometry.indice_key!r}"
            )
        return entry, entry.kernel_map.transposed()
