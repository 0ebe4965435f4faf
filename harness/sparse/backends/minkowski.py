"""``minkowski``: MinkowskiEngine 0.5.4 (CPU build from the PyPI sdist, ``tools/build_minkowski.sh``).

MinkowskiEngine (ME) computes the kernel maps and the gather-GEMM-scatter of every conv kind
the three backbones use; the harness modules own the parameters, so the state_dict is the same
on every backend. ME's CPU kernels are templated on float32 and float64 (measured on 0.5.4: a
float64 input gives float64 outputs and gradients), so the exactness tests compare in float64.

How spconv's conv semantics are expressed in ME (NVIDIA/MinkowskiEngine 0.5.4
``MinkowskiConvolution.py``, ``MinkowskiCoordinateManager.py``, ``src/kernel_region.hpp``):

* Coordinates: ours are in level cells ``d_i`` at cumulative stride ``t_i``; ME's are input
  cells ``d_i * t_i`` under a coordinate-map key of tensor stride ``t``. Every coordinate set is
  inserted once per network input with ``insert_and_map``; ME orders rows its own way, so
  features are permuted into ME's order and back with the returned row maps.
* Kernel offsets: ME pairs output ``o`` with input ``o + t_in * delta``, where ``delta`` runs
  over ``k - (k_size - 1) // 2`` for odd sizes (centred) and over ``0 .. k_size - 1`` for even
  sizes, first axis fastest (:mod:`harness.sparse.backends.minkowski_layout`).
* Submanifold conv (any kernel, e.g. Cylinder3D's (1,3,3)/(3,1,3)/(3,3,1) and k1): input key
  = output key, so ``out(u) = sum_delta W_delta^T x(u + delta)`` as spconv's ``SubMConv3d``.
* Strided conv, spconv rule ``x = o * s - p + k``: equal to ME's pairing with
  ``delta = k - p`` exactly when ``p = (k_size - 1) // 2`` for odd and ``p = 0`` for even
  kernels -- MinkUNet's k2 s2 p0, Cylinder3D's k3 s2 p1 and its k3 (2,2,1)-stride p1 pools.
  Any other padding raises ``NotImplementedError``. ME's own strided output set
  (``floor(x / s) * s``) is spconv's only for ``k == s``, so the output coordinates are
  computed here by spconv's rule (every exact ``o = (x + p - k) / s`` inside the output
  grid, sorted by ``[batch, d0, d1, d2]``) and handed to ME as a pre-inserted output key.
* Inverse conv (spconv ``SparseInverseConv3d``): ME's transposed conv from the strided conv's
  output key back to its input key, which uses the same pairs swapped (measured), with the
  same weight slice per offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import warnings

import torch

try:
    with warnings.catch_warnings():  # its import warns that a CPU_ONLY build has no CUDA: that is the build made here
        warnings.filterwarnings("ignore", message="The MinkowskiEngine was compiled with CPU_ONLY flag")
        import MinkowskiEngine as ME
    from MinkowskiEngineBackend._C import ConvolutionMode
except ImportError as error:  # re-raised by the registry with the install hint
    raise ImportError(f"MinkowskiEngine could not be imported: {error}") from error

from harness.sparse.backends.base import ConvGeometry, ConvOutput
from harness.sparse.backends.minkowski_layout import krsc_to_minkowski_kernel
from harness.sparse.kernel_map import conv_output_size, kernel_offsets
from harness.sparse.tensor import SparseTensor

BACKEND_NAME = "minkowski"


@dataclass
class _Level:
    """One coordinate set registered with ME: its key and the row maps between our order and ME's."""

    key: Any  # ME CoordinateMapKey
    coords: torch.Tensor  # our (N, 4) int32 coords, our row order (kept alive: identity lookups)
    me_rows_of_ours: torch.Tensor  # (N,) int64: ME row of each of our rows
    our_rows_of_me: torch.Tensor  # (N,) int64: our row of each ME row


@dataclass
class _MinkowskiNetworkState:
    """Per-network ME state kept in ``SparseCache.backend_state["minkowski"]``."""

    manager: Any  # ME CoordinateManager
    levels: list[_Level] = field(default_factory=list)
    pairs: dict[tuple, int] = field(default_factory=dict)


def spconv_strided_output_coords(
    coords: torch.Tensor, spatial_shape: tuple[int, int, int], geometry: ConvGeometry
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Active outputs of a strided conv under spconv's rule ``x = o * s - p + k``.

    Args:
        coords: (N, 4) int32 ``[batch, d0, d1, d2]`` input cells.
        spatial_shape: input grid in cells.
        geometry: a ``"strided"`` geometry.

    Returns:
        (N_out, 4) int32 output cells, unique and sorted by ``[batch, d0, d1, d2]``, and the
        output grid ``floor((n + 2p - k) / s) + 1``.
    """
    out_shape = conv_output_size(spatial_shape, geometry.kernel_size, geometry.stride, geometry.padding)
    offsets = torch.tensor(kernel_offsets(geometry.kernel_size), dtype=torch.long, device=coords.device)  # (K, 3)
    stride = torch.tensor(geometry.stride, dtype=torch.long, device=coords.device)
    padding = torch.tensor(geometry.padding, dtype=torch.long, device=coords.device)
    upper = torch.tensor(out_shape, dtype=torch.long, device=coords.device)
    numerator = coords[:, None, 1:].long() + padding - offsets  # (N, K, 3) = o * s where exact
    cells = torch.div(numerator, stride, rounding_mode="floor")
    valid = ((cells * stride == numerator) & (cells >= 0) & (cells < upper)).all(dim=2)  # (N, K)
    batch = coords[:, None, :1].long().expand(-1, offsets.shape[0], 1)
    candidates = torch.cat((batch, cells), dim=2)[valid]
    return torch.unique(candidates, dim=0).int(), out_shape


class MinkowskiBackend:
    """MinkowskiEngine backend (see the module docstring for the mapping of each conv kind)."""

    name = BACKEND_NAME

    def conv(self, x: SparseTensor, weight: torch.Tensor, geometry: ConvGeometry, training: bool) -> ConvOutput:
        """Run one conv; see :class:`~harness.sparse.backends.base.SparseConvBackend`."""
        state = x.cache.backend_state.get(BACKEND_NAME)
        if state is None:
            map_type = ME.CoordinateMapType.CUDA if x.feats.is_cuda else ME.CoordinateMapType.CPU
            state = _MinkowskiNetworkState(ME.CoordinateManager(D=3, coordinate_map_type=map_type))
            x.cache.backend_state[BACKEND_NAME] = state
        source = self._level(state, x.coords, x.stride)
        kernel = krsc_to_minkowski_kernel(weight)
        feats_me = x.feats.contiguous()[source.our_rows_of_me]
        if geometry.kind == "subm":
            generator = ME.KernelGenerator(list(geometry.kernel_size), stride=1, dilation=1, dimension=3)
            out_me = ME.MinkowskiConvolutionFunction.apply(
                feats_me, kernel, generator, ConvolutionMode.DEFAULT, source.key, source.key, state.manager
            )
            pairs = self._pairs(state, source, source, generator, transposed=False)
            return ConvOutput(out_me[source.me_rows_of_ours], x.coords, x.spatial_shape, pairs)
        if geometry.kind == "strided":
            self._check_padding(geometry)
            out_coords, out_shape = spconv_strided_output_coords(x.coords, x.spatial_shape, geometry)
            out_stride = tuple(t * s for t, s in zip(x.stride, geometry.stride))
            target = self._level(state, out_coords, out_stride)
            generator = ME.KernelGenerator(list(geometry.kernel_size), stride=list(geometry.stride), dilation=1, dimension=3)
            out_me = ME.MinkowskiConvolutionFunction.apply(
                feats_me, kernel, generator, ConvolutionMode.DEFAULT, source.key, target.key, state.manager
            )
            pairs = self._pairs(state, source, target, generator, transposed=False)
            return ConvOutput(out_me[target.me_rows_of_ours], out_coords, out_shape, pairs)
        # inverse: back onto the input voxels of the strided conv that shares the indice_key
        record = x.cache.downsample_records[geometry.indice_key]
        target = self._level(state, record.in_coords, record.in_stride)
        stride = [o // i for o, i in zip(x.stride, record.in_stride)]
        generator = ME.KernelGenerator(list(geometry.kernel_size), stride=stride, dilation=1, dimension=3)
        out_me = ME.MinkowskiConvolutionTransposeFunction.apply(
            feats_me, kernel, generator, ConvolutionMode.DEFAULT, source.key, target.key, state.manager
        )
        pairs = self._pairs(state, source, target, generator, transposed=True)
        return ConvOutput(out_me[target.me_rows_of_ours], record.in_coords, record.in_spatial_shape, pairs)

    @staticmethod
    def _check_padding(geometry: ConvGeometry) -> None:
        """ME's offsets are centred for odd and start at 0 for even kernels: only that padding maps."""
        expected = tuple((k - 1) // 2 if k % 2 == 1 else 0 for k in geometry.kernel_size)
        if geometry.padding != expected:
            raise NotImplementedError(
                f"minkowski backend: a strided conv with kernel {geometry.kernel_size} needs padding {expected} "
                f"(ME's kernel offsets), got {geometry.padding}; run this layer on torchref or spconv"
            )

    @staticmethod
    def _level(state: _MinkowskiNetworkState, coords: torch.Tensor, stride: tuple[int, int, int]) -> _Level:
        """The registered level holding exactly ``coords`` at ``stride``, inserting it on first use."""
        for level in state.levels:
            if level.coords is coords or (
                tuple(level.key.get_tensor_stride()) == tuple(stride)
                and level.coords.shape == coords.shape
                and torch.equal(level.coords, coords)
            ):
                return level
        scale = torch.tensor([1, *stride], dtype=torch.int32, device=coords.device)
        # a fresh string id per set: two sets at the same stride (teacher and student, two pools) never share a key
        key, (unique_map, inverse_map) = state.manager.insert_and_map(
            (coords * scale).contiguous(), list(stride), f"harness{len(state.levels)}"
        )
        if unique_map.shape[0] != coords.shape[0]:
            raise ValueError(f"minkowski backend: {coords.shape[0] - unique_map.shape[0]} duplicate voxel coordinates")
        level = _Level(key, coords, inverse_map.long(), unique_map.long())
        state.levels.append(level)
        return level

    @staticmethod
    def _pairs(state: _MinkowskiNetworkState, source: _Level, target: _Level, generator: Any, transposed: bool) -> int:
        """Kernel-map pairs of one conv (for MACs), read once per (keys, geometry) from ME's cached map."""
        cache_key = (str(source.key), str(target.key), tuple(generator.kernel_size), tuple(generator.kernel_stride), transposed)
        if cache_key not in state.pairs:
            kernel_map = state.manager.kernel_map(
                source.key, target.key, stride=generator.kernel_stride, kernel_size=generator.kernel_size, is_transpose=transposed
            )
            state.pairs[cache_key] = int(sum(pairs.shape[-1] for pairs in kernel_map.values()))
        return state.pairs[cache_key]
