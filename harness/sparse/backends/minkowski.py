"""``minkowski``: MinkowskiEngine 0.5.x wrapper (optional, best effort, NOT tested in this repo).

MinkowskiEngine cannot be installed on the project's CPU box without a 6-minute source build
and a ``collections.abc`` patch (see the backend spec), so this file is exercised only where
someone installed it. It is kept small and refuses what it cannot reproduce exactly:

* Submanifold convs with odd kernels: ME's stride-1 conv outputs on the input coordinates and
  reads ``x(u + offset)`` (a correlation), as spconv's ``SubMConv3d``.
* Strided convs only with ``kernel_size == stride`` and ``padding == 0`` (MinkUNet's k2 s2):
  ME generates strided outputs at ``floor(x / s) * s``, which equals spconv's output set only
  in that case. Cylinder3D's k3 s2 p1 pools raise ``NotImplementedError``.
* Inverse convs = ME transposed convs back onto the strided conv's input coordinates.

Layout adapters (NVIDIA/MinkowskiEngine ``MinkowskiEngine/MinkowskiConvolution.py``,
``MinkowskiCoordinateManager.py``): ME kernels are ``(K, C_in, C_out)`` with the first spatial
axis fastest, so the KRSC weight ``(C_out, k0, k1, k2, C_in)`` becomes
``weight.permute(3, 2, 1, 4, 0).reshape(K, C_in, C_out)``; ME coordinates are in input-grid
units (``d_i * stride_i``), ours in level units. ME orders rows by its own coordinate map, so
features are permuted in and out with the ``insert_and_map`` maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

try:
    import MinkowskiEngine as ME
except ImportError as error:  # re-raised by the registry with the install hint
    raise ImportError(f"MinkowskiEngine could not be imported: {error}") from error

from harness.sparse.backends.base import ConvGeometry, ConvOutput
from harness.sparse.tensor import SparseTensor

BACKEND_NAME = "minkowski"


@dataclass
class _Level:
    """One registered coordinate set: its ME key and the row maps between our order and ME's."""

    key: Any
    coords: torch.Tensor  # our (N, 4) int32 coords, our row order
    me_rows_of_ours: torch.Tensor  # (N,) ME row of each of our rows
    our_rows_of_me: torch.Tensor  # (N,) our row of each ME row


@dataclass
class _MinkowskiNetworkState:
    manager: Any
    levels: list[_Level] = field(default_factory=list)
    strided_inputs: dict[str, _Level] = field(default_factory=dict)


class MinkowskiBackend:
    """MinkowskiEngine backend (see module docstring for what it supports)."""

    name = BACKEND_NAME

    def conv(self, x: SparseTensor, weight: torch.Tensor, geometry: ConvGeometry, training: bool) -> ConvOutput:
        """Run one conv; see :class:`~harness.sparse.backends.base.SparseConvBackend`."""
        state = x.cache.backend_state.get(BACKEND_NAME)
        if state is None:
            map_type = ME.CoordinateMapType.CUDA if x.feats.is_cuda else ME.CoordinateMapType.CPU
            state = _MinkowskiNetworkState(ME.CoordinateManager(D=3, coordinate_map_type=map_type))
            x.cache.backend_state[BACKEND_NAME] = state
        level = self._level(state, x)
        kernel = weight.permute(3, 2, 1, 4, 0).reshape(geometry.kernel_volume, weight.shape[-1], weight.shape[0])
        feats_me = x.feats[level.our_rows_of_me]
        if geometry.kind == "subm":
            generator = ME.KernelGenerator(list(geometry.kernel_size), stride=1, dilation=1, dimension=3)
            out_me = ME.MinkowskiConvolutionFunction().apply(
                feats_me, kernel, generator, ME.ConvolutionMode.DEFAULT, level.key, level.key, state.manager
            )
            pairs = self._pairs(state, level.key, level.key, generator)
            return ConvOutput(out_me[level.me_rows_of_ours], x.coords, x.spatial_shape, pairs)
        if geometry.kind == "strided":
            if geometry.kernel_size != geometry.stride or geometry.padding != (0, 0, 0):
                raise NotImplementedError("minkowski backend: strided convs need kernel_size == stride and padding 0")
            generator = ME.KernelGenerator(list(geometry.kernel_size), stride=list(geometry.stride), dilation=1, dimension=3)
            out_key = ME.CoordinateMapKey(4)
            out_me = ME.MinkowskiConvolutionFunction().apply(
                feats_me, kernel, generator, ME.ConvolutionMode.DEFAULT, level.key, out_key, state.manager
            )
            out_stride = [a * b for a, b in zip(x.stride, geometry.stride)]
            coords_me = state.manager.get_coordinates(out_key).to(x.coords.device)
            out_coords = torch.cat((coords_me[:, :1], coords_me[:, 1:] // torch.tensor(out_stride, device=coords_me.device)), dim=1).int()
            identity = torch.arange(out_coords.shape[0], device=out_coords.device)
            state.levels.append(_Level(out_key, out_coords, identity, identity))
            if geometry.indice_key is not None:
                state.strided_inputs[geometry.indice_key] = level
            out_shape = tuple((n - k) // s + 1 for n, k, s in zip(x.spatial_shape, geometry.kernel_size, geometry.stride))
            return ConvOutput(out_me, out_coords, out_shape, self._pairs(state, level.key, out_key, generator))
        target = state.strided_inputs[geometry.indice_key]
        record = x.cache.downsample_records[geometry.indice_key]
        generator = ME.KernelGenerator(list(geometry.kernel_size), stride=list(geometry.kernel_size), dilation=1, dimension=3)
        out_me = ME.MinkowskiConvolutionTransposeFunction().apply(
            feats_me, kernel, generator, ME.ConvolutionMode.DEFAULT, level.key, target.key, state.manager
        )
        pairs = self._pairs(state, target.key, level.key, generator)
        return ConvOutput(out_me[target.me_rows_of_ours], target.coords, record.in_spatial_shape, pairs)

    @staticmethod
    def _level(state: _MinkowskiNetworkState, x: SparseTensor) -> _Level:
        for level in state.levels:
            if level.coords is x.coords:
                return level
        scale = torch.tensor([1, *x.stride], dtype=torch.int32, device=x.coords.device)
        key, (unique_map, inverse_map) = state.manager.insert_and_map(x.coords * scale, list(x.stride))
        level = _Level(key, x.coords, inverse_map.long(), unique_map.long())
        state.levels.append(level)
        return level

    @staticmethod
    def _pairs(state: _MinkowskiNetworkState, in_key: Any, out_key: Any, generator: Any) -> int:
        kernel_map = state.manager.kernel_map(
            in_key, out_key, stride=generator.kernel_stride, kernel_size=generator.kernel_size
        )
        return int(sum(pairs.shape[-1] for pairs in kernel_map.values()))
