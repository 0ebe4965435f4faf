"""Count sparse-conv multiply-accumulates per layer from the kernel maps actually used.

PVKD supplement §3 ("MACs calculation"): a sparse conv costs ``N x K_bar x C_in x C_out``
MACs, with ``K_bar`` the average kernel-map size per output voxel, following SPVNAS
(mit-han-lab/spvnas). ``N x K_bar`` is the total number of kernel-map pairs, which every
conv records in the tensor cache (:class:`~harness.sparse.tensor.ConvRecord`); this module
only attaches names. Dense layers (point MLPs, linear heads) are not counted here.

    with count_sparse_macs(model) as counter:
        model(x)
    counter.total_macs, counter.layers  # per call: name, pairs, C_in, C_out, MACs
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from harness.sparse.conv import SparseConvModule
from harness.sparse.tensor import SparseTensor


@dataclass(frozen=True)
class LayerMacs:
    """One sparse-conv call: ``macs = pairs * in_channels * out_channels``."""

    name: str
    kind: str
    backend: str
    pairs: int
    in_channels: int
    out_channels: int
    num_out: int  # active output voxels

    @property
    def macs(self) -> int:
        """Multiply-accumulates of this call."""
        return self.pairs * self.in_channels * self.out_channels

    @property
    def mean_kernel_map_size(self) -> float:
        """K_bar: pairs per output voxel."""
        return self.pairs / self.num_out if self.num_out else 0.0


@dataclass
class SparseMacsCounter:
    """Per-call records collected by :func:`count_sparse_macs`."""

    layers: list[LayerMacs] = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        """Sum over all recorded calls."""
        return sum(layer.macs for layer in self.layers)

    def as_rows(self) -> list[dict[str, Any]]:
        """One dict per call (name, kind, backend, pairs, channels, num_out, macs), e.g. for pandas."""
        return [{**asdict(layer), "macs": layer.macs} for layer in self.layers]


@contextmanager
def count_sparse_macs(model: nn.Module) -> Iterator[SparseMacsCounter]:
    """Record (name, pairs, C_in, C_out, MACs) for every sparse-conv call inside the block.

    Uses forward hooks on the model's :class:`~harness.sparse.conv.SparseConvModule` layers;
    they are removed on exit. Works with every backend (each reports its pair count).
    """
    counter = SparseMacsCounter()
    handles = []

    def make_hook(name: str):
        def hook(module: SparseConvModule, inputs: tuple[Any, ...], output: SparseTensor) -> None:
            record = output.cache.conv_records[-1]
            if record.module_id != id(module):  # pragma: no cover - guards against re-entrancy
                raise RuntimeError(f"conv record of {name!r} not found in the tensor cache")
            counter.layers.append(
                LayerMacs(name, record.kind, record.backend, record.num_pairs, record.in_channels, record.out_channels, record.num_out)
            )

        return hook

    for name, module in model.named_modules():
        if isinstance(module, SparseConvModule):
            handles.append(module.register_forward_hook(make_hook(name or type(module).__name__)))
    try:
        yield counter
    finally:
        for handle in handles:
            handle.remove()
