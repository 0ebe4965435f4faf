"""The contract between the conv modules (which own the parameters) and a compute backend.

A backend receives the input tensor, the effective KRSC weight ``(C_out, k0, k1, k2, C_in)``
(already sliced for ``map_kernel_size`` emulation) and a :class:`ConvGeometry`, and returns
the output features, coordinates and grid plus the kernel-map pair count. Bias, stride
bookkeeping and MACs records are handled once by the modules in :mod:`harness.sparse.conv`,
so every backend computes exactly the same function of the same parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from harness.sparse.tensor import SparseTensor

Triple = tuple[int, int, int]
ConvKind = Literal["subm", "strided", "inverse"]


@dataclass(frozen=True)
class ConvGeometry:
    """Geometry of one sparse conv call.

    Attributes:
        kind: ``"subm"`` (output voxels = input voxels), ``"strided"`` (regular sparse conv,
            spconv ``SparseConv3d``) or ``"inverse"`` (spconv ``SparseInverseConv3d``).
        kernel_size: kernel extent used for the kernel map (the module's ``map_kernel_size``).
        stride: conv stride in cells (``(1, 1, 1)`` for subm and inverse).
        padding: zero padding in cells (strided only).
        indice_key: name under which the kernel map is shared (spconv ``indice_key``).
    """

    kind: ConvKind
    kernel_size: Triple
    stride: Triple = (1, 1, 1)
    padding: Triple = (0, 0, 0)
    indice_key: str | None = None

    @property
    def kernel_volume(self) -> int:
        """Number of kernel offsets K."""
        return self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]


@dataclass(frozen=True)
class ConvOutput:
    """What a backend returns for one conv call.

    Attributes:
        feats: (N_out, C_out) output features, without bias.
        coords: (N_out, 4) int32 output coordinates.
        spatial_shape: output grid extent in cells.
        num_pairs: kernel-map pairs used (for MACs: ``num_pairs * C_in * C_out``).
    """

    feats: torch.Tensor
    coords: torch.Tensor
    spatial_shape: Triple
    num_pairs: int


class SparseConvBackend(Protocol):
    """A compute backend for sparse convs. Implementations live in ``harness.sparse.backends``."""

    name: str

    def conv(self, x: SparseTensor, weight: torch.Tensor, geometry: ConvGeometry, training: bool) -> ConvOutput:
        """Run one conv. ``weight`` is (C_out, *geometry.kernel_size, C_in), KRSC."""
        ...
