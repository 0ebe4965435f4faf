"""Sparse conv modules that own their parameters, whichever backend computes them.

Every module holds ``weight`` in spconv 2.x's KRSC layout ``(C_out, k0, k1, k2, C_in)`` and an
optional ``bias`` ``(C_out,)``, so ``state_dict()`` is the same on every backend and matches
spconv 2.x module names/shapes (traveller59/spconv v2.3.8 ``spconv/pytorch/conv.py``). The
backend is a plain attribute (``"auto"`` by default) resolved per call from the feature device;
switch it for a whole model with :func:`harness.sparse.selection.set_backend`.

``map_kernel_size`` emulates spconv 1.2.1's kernel-map sharing: in spconv 1.x every conv whose
``indice_key`` was already used reuses the first user's kernel map regardless of its own
kernel size and indexes its filters by that map's offsets (traveller59/spconv v1.2.1
``spconv/conv.py`` ``SparseConvolution.forward``, ``src/spconv/spconv_ops.cc`` ``indiceConv``;
maintainer's statement in xinge008/Cylinder3D#102). The official Cylinder3D checkpoints were
trained that way. With ``map_kernel_size`` set, the kernel map uses that geometry and the conv
multiplies by ``weight.reshape(C_out, K_nominal, C_in)[:, :K_map]`` viewed as
``(C_out, *map_kernel_size, C_in)``; the parameter keeps its nominal shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from harness.sparse.backends import AUTO, get_backend, resolve_backend
from harness.sparse.backends.base import ConvGeometry, ConvKind
from harness.sparse.kernel_map import as_triple
from harness.sparse.tensor import ConvRecord, DownsampleRecord, SparseTensor

IntOrTriple = int | Sequence[int]

__all__ = ["SparseConvModule", "SparseConv3d", "SparseInverseConv3d", "SubMConv3d"]


class SparseConvModule(nn.Module):
    """Base class: parameters, effective weight, backend dispatch, bias, cache records.

    Attributes:
        backend: requested backend name (``"auto"``, ``"torchref"``, ``"spconv"``,
            ``"minkowski"``); ``last_backend`` is the concrete one used by the latest call.
    """

    kind: ConvKind = "subm"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        stride: IntOrTriple = 1,
        padding: IntOrTriple = 0,
        indice_key: str | None = None,
        bias: bool = False,
        map_kernel_size: IntOrTriple | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = as_triple(kernel_size, "kernel_size")
        self.stride = as_triple(stride, "stride")
        self.padding = as_triple(padding, "padding")
        self.indice_key = indice_key
        self.map_kernel_size = as_triple(map_kernel_size, "map_kernel_size") if map_kernel_size is not None else self.kernel_size
        if math.prod(self.map_kernel_size) > math.prod(self.kernel_size):
            raise ValueError(
                f"map_kernel_size {self.map_kernel_size} has more offsets than the weight's kernel {self.kernel_size}"
            )
        self.backend: str = AUTO
        self.last_backend: str | None = None
        self.weight = nn.Parameter(torch.empty(self.out_channels, *self.kernel_size, self.in_channels))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """spconv 2.x default init: kaiming-uniform with a = sqrt(5), fan_in = C_in * prod(kernel).

        Same bounds as ``SparseConvolution.reset_parameters`` in spconv/pytorch/conv.py.
        """
        fan_in = self.in_channels * math.prod(self.kernel_size)
        gain = nn.init.calculate_gain("leaky_relu", math.sqrt(5))
        bound = math.sqrt(3.0) * gain / math.sqrt(fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    @property
    def uses_map_emulation(self) -> bool:
        """True when the kernel map geometry differs from the weight's nominal kernel."""
        return self.map_kernel_size != self.kernel_size

    def effective_weight(self) -> torch.Tensor:
        """(C_out, *map_kernel_size, C_in) weight the conv actually multiplies by.

        The first ``prod(map_kernel_size)`` kernel slices of the row-major flattened weight
        (spconv 1.x indexing, see module docstring); the full weight without emulation.
        """
        if not self.uses_map_emulation:
            return self.weight
        used_offsets = math.prod(self.map_kernel_size)
        flat = self.weight.reshape(self.out_channels, math.prod(self.kernel_size), self.in_channels)
        return flat[:, :used_offsets].reshape(self.out_channels, *self.map_kernel_size, self.in_channels)

    def geometry(self) -> ConvGeometry:
        """Kernel-map geometry of this layer."""
        return ConvGeometry(self.kind, self.map_kernel_size, self.stride, self.padding, self.indice_key)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """Apply the conv. ``x.feats`` is (N, C_in); returns a tensor with (N_out, C_out) feats."""
        if x.num_channels != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, got {x.num_channels}")
        backend_name = resolve_backend(self.backend, x.feats.device)
        self.last_backend = backend_name
        result = get_backend(backend_name).conv(x, self.effective_weight(), self.geometry(), self.training)
        feats = result.feats if self.bias is None else result.feats + self.bias
        out = x.with_geometry(feats, result.coords, result.spatial_shape, self._output_stride(x))
        if self.kind == "strided" and self.indice_key is not None:
            x.cache.downsample_records[self.indice_key] = DownsampleRecord(
                x.coords, x.spatial_shape, x.stride, result.coords, result.spatial_shape, self.map_kernel_size, backend_name
            )
        x.cache.conv_records.append(
            ConvRecord(id(self), self.kind, backend_name, result.num_pairs, self.in_channels, self.out_channels, x.num_voxels, out.num_voxels)
        )
        return out

    def _output_stride(self, x: SparseTensor) -> tuple[int, int, int]:
        return x.stride

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1, 1):
            text += f", stride={self.stride}"
        if self.padding != (0, 0, 0):
            text += f", padding={self.padding}"
        if self.uses_map_emulation:
            text += f", map_kernel_size={self.map_kernel_size}"
        if self.indice_key is not None:
            text += f", indice_key={self.indice_key!r}"
        if self.bias is None:
            text += ", bias=False"
        return text + f", backend={self.backend!r}"


class SubMConv3d(SparseConvModule):
    """Submanifold sparse conv: output voxels = input voxels (spconv ``SubMConv3d``, "same" padding).

    Offset ``k`` reads the input at ``out + (k - kernel_size // 2)``; odd kernels only.
    ``map_kernel_size`` (optional) emulates spconv 1.x key sharing (module docstring).
    """

    kind: ConvKind = "subm"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        indice_key: str | None = None,
        bias: bool = False,
        map_kernel_size: IntOrTriple | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, indice_key, bias, map_kernel_size)
        if any(k % 2 == 0 for k in self.map_kernel_size):
            raise ValueError(f"SubMConv3d needs odd kernel sizes, got {self.map_kernel_size}")


class SparseConv3d(SparseConvModule):
    """Regular (usually strided) sparse conv, spconv ``SparseConv3d`` semantics.

    Output grid ``floor((in + 2p - k) / s) + 1``; input cell ``x = o * s - p + k`` feeds
    output ``o`` (traveller59/spconv ``spconv/pytorch/ops.py`` ``get_conv_output_size``).
    Output stride = input stride x ``stride``. Give it an ``indice_key`` if a
    :class:`SparseInverseConv3d` must undo it.
    """

    kind: ConvKind = "strided"  # same constructor as the base: (cin, cout, kernel_size, stride, padding, ...)

    def _output_stride(self, x: SparseTensor) -> tuple[int, int, int]:
        return tuple(a * b for a, b in zip(x.stride, self.stride))  # type: ignore[return-value]


class SparseInverseConv3d(SparseConvModule):
    """Inverse of the :class:`SparseConv3d` that created ``indice_key`` (spconv ``SparseInverseConv3d``).

    Reuses that conv's kernel map with input and output swapped; the output voxels, grid and
    stride are that conv's input ones. ``kernel_size`` must equal that conv's kernel-map
    geometry. The input must be the strided conv's output voxels (same rows, same order).
    """

    kind: ConvKind = "inverse"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        indice_key: str,
        bias: bool = False,
        map_kernel_size: IntOrTriple | None = None,
    ) -> None:
        if indice_key is None:
            raise ValueError("SparseInverseConv3d needs the indice_key of the strided conv it inverts")
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, indice_key, bias, map_kernel_size)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """Apply the inverse conv; see the class docstring."""
        record = x.cache.downsample_records.get(self.indice_key)
        if record is None:
            raise ValueError(f"no strided conv with indice_key {self.indice_key!r} ran on this network input")
        backend_name = resolve_backend(self.backend, x.feats.device)
        if record.backend != backend_name:
            raise ValueError(
                f"the strided conv {self.indice_key!r} ran on {record.backend!r} but its inverse runs on {backend_name!r}; "
                "use one backend per network (harness.sparse.set_backend)"
            )
        return super().forward(x)

    def _output_stride(self, x: SparseTensor) -> tuple[int, int, int]:
        return x.cache.downsample_records[self.indice_key].in_stride
