"""Load mit-han-lab/spvnas (torchsparse) checkpoints into :class:`MinkUNet` / :class:`SPVCNN`.

spvnas ``model_zoo.py`` stores ``{"model": state_dict, ...}`` (it loads ``torch.load(...)['model']``).
Module names are the same as ours; only the sparse-conv parameters differ:

* torchsparse ``Conv3d`` owns ``kernel`` of shape ``(K, C_in, C_out)``, or ``(C_in, C_out)`` for a
  stride-1 kernel of size 1 (mit-han-lab/torchsparse ``torchsparse/nn/modules/conv.py``); ours own
  ``weight`` in spconv's KRSC layout ``(C_out, k0, k1, k2, C_in)`` (``harness/sparse/conv.py``), with
  ``(d0, d1, d2) = (x, y, z)`` on the cubic grid.
* Kernel-offset order (torchsparse ``backend/hashmap/hashmap_cuda.cuh`` ``lookup_coords_kernel``;
  ``nn/utils/kernel.py`` ``get_kernel_offsets``). Offset ``k`` of an
  output voxel ``o`` reads the input at ``o * stride + offset(k)`` (a correlation) where
    - odd kernel volume: ``k = ix + kx * (iy + ky * iz)`` (x fastest), ``offset_d = i_d - (k_d - 1) // 2``
      -- for k3: ``k = (dx+1) + 3 (dy+1) + 9 (dz+1)``;
    - even kernel volume: ``k = iz + kz * (iy + ky * ix)`` (z fastest), ``offset_d = i_d - (k_d - 1) // 2``
      -- for k2: ``k = 4 dx + 2 dy + dz``, offsets 0..1.
  A transposed conv uses its strided conv's map with input and output swapped and the same ``k``.
* Ours (``harness/sparse/kernel_map.py``): KRSC flattened row-major (``k2`` = z fastest); a SubM
  offset ``(i0, i1, i2)`` reads ``out + (i - ks // 2)``; a strided conv reads ``o * s - p + i``; the
  inverse conv swaps that map. Hence:
    - odd kernels: ``kernel.reshape(kz, ky, kx, C_in, C_out).permute(4, 2, 1, 0, 3)``;
    - even kernels: ``kernel.reshape(kx, ky, kz, C_in, C_out).permute(4, 0, 1, 2, 3)`` (same order);
    - ``(C_in, C_out)``: ``kernel.t().reshape(C_out, 1, 1, 1, C_in)``.

Everything else (BatchNorm, ``classifier.0``, ``point_transforms``) is copied unchanged. The
harness's own checkpoints are plain ``state_dict()`` s and need no conversion.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from os import PathLike

import torch
from torch import nn

from harness.sparse.conv import SparseConvModule
from harness.sparse.kernel_map import as_triple

__all__ = [
    "convert_spvnas_state_dict",
    "krsc_to_torchsparse_kernel",
    "load_spvnas_checkpoint",
    "to_spvnas_state_dict",
    "torchsparse_kernel_to_krsc",
]

Triple = tuple[int, int, int]


def torchsparse_kernel_to_krsc(kernel: torch.Tensor, kernel_size: int | Sequence[int]) -> torch.Tensor:
    """torchsparse ``kernel`` ((K, C_in, C_out) or (C_in, C_out)) -> KRSC ``(C_out, kx, ky, kz, C_in)``.

    See the module docstring for the offset orders. Returns a contiguous copy.
    """
    ks = as_triple(kernel_size, "kernel_size")
    volume = math.prod(ks)
    if kernel.dim() == 2:
        if volume != 1:
            raise ValueError(f"a 2-D torchsparse kernel {tuple(kernel.shape)} is a size-1 kernel, not {ks}")
        c_in, c_out = kernel.shape
        return kernel.t().reshape(c_out, 1, 1, 1, c_in).contiguous()
    if kernel.dim() != 3 or kernel.shape[0] != volume:
        raise ValueError(f"torchsparse kernel of shape {tuple(kernel.shape)} does not match kernel size {ks}")
    _, c_in, c_out = kernel.shape
    kx, ky, kz = ks
    if volume % 2 == 1:  # x fastest
        return kernel.reshape(kz, ky, kx, c_in, c_out).permute(4, 2, 1, 0, 3).contiguous()
    return kernel.reshape(kx, ky, kz, c_in, c_out).permute(4, 0, 1, 2, 3).contiguous()  # z fastest


def krsc_to_torchsparse_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`torchsparse_kernel_to_krsc`: KRSC -> (K, C_in, C_out), or (C_in, C_out) for k = 1.

    (torchsparse keeps a 3-D kernel for size 1 with stride != 1; no such layer exists in spvnas.)
    """
    c_out, kx, ky, kz, c_in = weight.shape
    volume = kx * ky * kz
    if volume == 1:
        return weight.reshape(c_out, c_in).t().contiguous()
    if volume % 2 == 1:
        return weight.permute(3, 2, 1, 4, 0).reshape(volume, c_in, c_out).contiguous()
    return weight.permute(1, 2, 3, 4, 0).reshape(volume, c_in, c_out).contiguous()


def _infer_kernel_size(kernel: torch.Tensor) -> Triple:
    if kernel.dim() == 2:
        return (1, 1, 1)
    edge = round(kernel.shape[0] ** (1 / 3))
    if edge**3 != kernel.shape[0]:
        raise ValueError(f"cannot infer a cubic kernel size from a torchsparse kernel of shape {tuple(kernel.shape)}")
    return (edge, edge, edge)


def convert_spvnas_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Rename ``<conv>.kernel`` -> ``<conv>.weight`` and convert it to KRSC; copy the rest.

    Args:
        state_dict: spvnas/torchsparse state_dict (a leading ``module.`` from DistributedDataParallel is
            stripped).
        model: if given, each conv's kernel size is read from the model's
            :class:`~harness.sparse.conv.SparseConvModule`; otherwise it is inferred from the shape
            (27 -> 3, 8 -> 2, 2-D -> 1).

    Returns:
        a state_dict for our modules (load it with ``strict=True``).
    """
    convs = {name: m for name, m in model.named_modules() if isinstance(m, SparseConvModule)} if model is not None else {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.endswith(".kernel"):
            prefix = key[: -len(".kernel")]
            module = convs.get(prefix)
            kernel_size = module.kernel_size if module is not None else _infer_kernel_size(value)
            out[f"{prefix}.weight"] = torchsparse_kernel_to_krsc(value, kernel_size)
        else:
            out[key] = value
    return out


def to_spvnas_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our state_dict in spvnas/torchsparse layout (``kernel`` names and shapes), e.g. to compare or export."""
    convs = {name for name, m in model.named_modules() if isinstance(m, SparseConvModule)}
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in convs and leaf == "weight":
            out[f"{prefix}.kernel"] = krsc_to_torchsparse_kernel(value)
        else:
            out[key] = value
    return out


def load_spvnas_checkpoint(model: nn.Module, path: str | PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    """Load an spvnas model-zoo checkpoint (``init`` file) into ``model`` with ``strict=True``.

    The file is read with ``torch.load(weights_only=True)``; the state_dict is taken from its ``"model"``
    entry (spvnas ``model_zoo.py``), or the file itself if it is a bare state_dict. The model must
    match the checkpoint's configuration: ``width`` = its ``cr`` and ``num_classes`` = 19 for the
    SemanticKITTI zoo weights (``net.config``).

    Returns:
        ``model``.

    Raises:
        RuntimeError: missing/unexpected keys or shape mismatches (from ``load_state_dict``).
    """
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    state_dict = checkpoint["model"] if isinstance(checkpoint, Mapping) and "model" in checkpoint else checkpoint
    model.load_state_dict(convert_spvnas_state_dict(state_dict, model), strict=True)
    return model
