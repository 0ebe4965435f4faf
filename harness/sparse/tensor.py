"""The sparse voxel tensor shared by every backend, and the per-network cache it carries.

A :class:`SparseTensor` is backend-neutral: features, integer voxel coordinates, the grid
extent and the cumulative stride. Kernel maps are not stored on the tensor but in a
:class:`SparseCache` that every tensor derived from the same network input shares (by
reference), so a kernel map built by one layer is reused by every later layer with the same
``indice_key`` or geometry, exactly like spconv 1.x's shared ``indice_dict``
(traveller59/spconv v1.2.1 ``spconv/conv.py``) and torchsparse's stride-keyed ``kmaps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable

import torch

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class ConvRecord:
    """One sparse-conv call, as needed by a MACs profiler.

    ``num_pairs`` is the number of (input voxel, output voxel, kernel offset) triples in the
    kernel map that was used, so the call costs ``num_pairs * in_channels * out_channels``
    multiply-accumulates (PVKD supplement §3: N x K_bar x C_in x C_out).
    """

    module_id: int
    kind: str  # "subm" | "strided" | "inverse"
    backend: str
    num_pairs: int
    in_channels: int
    out_channels: int
    num_in: int  # active input voxels
    num_out: int  # active output voxels


@dataclass(frozen=True)
class DownsampleRecord:
    """What a strided conv with an ``indice_key`` leaves behind for its inverse conv.

    The inverse conv (spconv ``SparseInverseConv3d``) outputs exactly at ``in_coords`` with
    ``in_spatial_shape`` and ``in_stride``; ``out_coords`` is the strided conv's output, which
    the inverse conv must receive unchanged (same rows, same order).
    """

    in_coords: torch.Tensor  # (N_in, 4) int32
    in_spatial_shape: Triple
    in_stride: Triple
    out_coords: torch.Tensor  # (N_out, 4) int32
    out_spatial_shape: Triple
    kernel_size: Triple  # kernel-map geometry of the strided conv
    backend: str


@dataclass
class SparseCache:
    """State shared by all tensors that descend from one network input.

    Several networks may consume the same input tensor (teacher and student in KD): a conv
    whose ``indice_key`` or geometry already has a map on the same voxels reuses it, so the
    second network builds no kernel maps; a key reused with another geometry raises.

    Attributes:
        kernel_maps: backend-owned kernel maps; each backend namespaces its keys with its own
            name, e.g. ``("torchref", "key", "down2")`` or ``("torchref", "subm", stride, ks)``.
        downsample_records: ``indice_key`` -> :class:`DownsampleRecord` of the strided conv
            that created it (backend-neutral; used by inverse convs).
        backend_state: free-form per-backend state (e.g. spconv's ``indice_dict``).
        conv_records: one :class:`ConvRecord` per conv call, in call order.
    """

    kernel_maps: dict[Hashable, Any] = field(default_factory=dict)
    downsample_records: dict[str, DownsampleRecord] = field(default_factory=dict)
    backend_state: dict[str, Any] = field(default_factory=dict)
    conv_records: list[ConvRecord] = field(default_factory=list)

    @property
    def backends_used(self) -> tuple[str, ...]:
        """Backend names that ran a conv on this network input, in first-use order."""
        return tuple(dict.fromkeys(record.backend for record in self.conv_records))

    @property
    def total_pairs(self) -> int:
        """Sum of kernel-map pairs over all recorded conv calls."""
        return sum(record.num_pairs for record in self.conv_records)


@dataclass(frozen=True, eq=False)
class SparseTensor:
    """Active voxels of a batch of 3-D grids.

    Attributes:
        feats: (N, C) floating-point features, one row per active voxel.
        coords: (N, 4) int32 ``[batch, d0, d1, d2]``; ``d_i`` are voxel indices in units of
            this tensor's own grid cells (``stride`` input cells per cell), 0 <= d_i <
            ``spatial_shape[i]``. Same convention as spconv's ``indices``.
        spatial_shape: grid extent (cells) in the three spatial dimensions at this level.
        batch_size: number of samples; ``coords[:, 0]`` lies in ``[0, batch_size)``.
        stride: cumulative stride relative to the network input, per dimension (input cells
            per cell), e.g. (8, 8, 4) after Cylinder3D's pools of stride 2, 2 and (2, 2, 1).
        cache: :class:`SparseCache` shared by reference with every tensor derived from the
            same input.
    """

    feats: torch.Tensor
    coords: torch.Tensor
    spatial_shape: Triple
    batch_size: int
    stride: Triple = (1, 1, 1)
    cache: SparseCache = field(default_factory=SparseCache)

    def __post_init__(self) -> None:
        if self.feats.dim() != 2:
            raise ValueError(f"feats must be (N, C), got shape {tuple(self.feats.shape)}")
        if self.coords.dim() != 2 or self.coords.shape[1] != 4:
            raise ValueError(f"coords must be (N, 4) [batch, d0, d1, d2], got {tuple(self.coords.shape)}")
        if self.coords.dtype != torch.int32:
            raise TypeError(f"coords must be int32, got {self.coords.dtype}")
        if self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(
                f"feats has {self.feats.shape[0]} rows but coords has {self.coords.shape[0]}"
            )
        if len(self.spatial_shape) != 3 or len(self.stride) != 3:
            raise ValueError("spatial_shape and stride must have three entries")
        object.__setattr__(self, "spatial_shape", tuple(int(s) for s in self.spatial_shape))
        object.__setattr__(self, "stride", tuple(int(s) for s in self.stride))

    @classmethod
    def from_coords(
        cls,
        feats: torch.Tensor,
        coords: torch.Tensor,
        spatial_shape: tuple[int, int, int] | list[int],
        batch_size: int,
    ) -> SparseTensor:
        """Network input: a fresh cache, stride (1, 1, 1); ``coords`` is cast to int32.

        Coordinates must be unique per batch sample (one row per active voxel).
        """
        coords = coords.to(dtype=torch.int32).contiguous()
        return cls(feats, coords, tuple(spatial_shape), int(batch_size), (1, 1, 1), SparseCache())

    @property
    def num_voxels(self) -> int:
        """Number of active voxels N."""
        return int(self.coords.shape[0])

    @property
    def num_channels(self) -> int:
        """Feature width C."""
        return int(self.feats.shape[1])

    def replace_feature(self, feats: torch.Tensor) -> SparseTensor:
        """Same voxels (coords and cache shared, not copied) with new (N, C') features."""
        return SparseTensor(feats, self.coords, self.spatial_shape, self.batch_size, self.stride, self.cache)

    def with_geometry(
        self,
        feats: torch.Tensor,
        coords: torch.Tensor,
        spatial_shape: Triple,
        stride: Triple,
    ) -> SparseTensor:
        """A tensor on another voxel set of the same network (same batch size and cache)."""
        return SparseTensor(feats, coords, spatial_shape, self.batch_size, stride, self.cache)

    def dense(self) -> torch.Tensor:
        """Scatter into a dense (B, C, d0, d1, d2) tensor, spconv's ``dense()`` layout.

        Memory is B x C x prod(spatial_shape) elements: use only on small grids (a full
        480 x 360 x 32 Cylinder3D grid with 20 classes is 442 MB in fp32 per sample).
        """
        batch, d0, d1, d2 = self.coords.long().unbind(1)
        out = self.feats.new_zeros((self.batch_size, *self.spatial_shape, self.num_channels))
        out = out.index_put((batch, d0, d1, d2), self.feats)
        return out.permute(0, 4, 1, 2, 3).contiguous()
