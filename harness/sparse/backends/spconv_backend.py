"""``spconv``: spconv 2.x (``spconv-cu126==2.3.8``) running the harness's own parameters.

Imported lazily by :func:`harness.sparse.backends.get_backend`. For each conv call a
weightless spconv conv module (built once per geometry and cached) is applied through its
``_conv_forward(training, input, weight, bias)`` with the harness module's effective weight,
so the state_dict never contains spconv modules and is identical on every backend
(traveller59/spconv v2.3.8 ``spconv/pytorch/conv.py`` ``SparseConvolutionBase._conv_forward``).

Rules enforced here:

* CPU features -> ``ConvAlgo.Native`` (spconv's implicit-GEMM algorithms are CUDA-only);
  CUDA -> spconv's default ``MaskImplicitGemm`` unless the backend was built with another
  algo. All layers sharing an ``indice_key`` must use the same algo (spconv asserts it), so
  the algo of a key is fixed by its first user and reused.
* The CPU-only ``spconv`` wheel is refused: its multi-threaded CPU gather/scatter returns
  wrong rows (traveller59/spconv#679), and its backward needs a CUDA stream (spconv#366).
* spconv's 1x1 fast path multiplies by the KRSC buffer *viewed* as ``(C_in, C_out)``
  (``conv.py``: ``torch.mm(features, weight.view(in_channels, out_channels))``), which is
  not the KRSC tensor's meaning; the canonical weight is transposed before that path so the
  result equals ``feats @ weight[:, 0, 0, 0, :].T`` like every other backend.
* Bias is added by the harness module, not by spconv (spconv's CPU inference path does not
  support a fused bias).

Kernel-map state (spconv's ``indice_dict``) lives in the tensor cache under ``"spconv"`` and
is shared by every layer of the network (spconv 1.x semantics; spconv 2.x copies it per
layer). Convs without an ``indice_key`` get a synthetic one so their pair counts are
recorded: ``"__subm_<stride>_<kernel>_<id(coords)>"`` (reused by subm convs of the same
geometry on the same voxels, as torchref does) or a unique ``"__strided_<n>"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

try:
    import spconv.pytorch as spconv_pytorch
    from spconv.core import ConvAlgo
    from spconv.cppconstants import CPU_ONLY_BUILD
except ImportError as error:  # re-raised by the registry with the install hint
    raise ImportError(f"spconv 2.x could not be imported: {error}") from error

if CPU_ONLY_BUILD:
    raise ImportError(
        "the CPU-only `spconv` wheel is installed; its threaded CPU path returns wrong rows "
        "(traveller59/spconv#679). Uninstall it and install spconv-cu126==2.3.8 (runs on CPU with algo=Native)."
    )

from harness.sparse.backends.base import ConvGeometry, ConvOutput
from harness.sparse.tensor import SparseTensor

BACKEND_NAME = "spconv"


@dataclass
class _SpconvNetworkState:
    """Per-network spconv state kept in ``SparseCache.backend_state["spconv"]``."""

    indice_dict: dict[str, Any] = field(default_factory=dict)
    algo_by_key: dict[str, Any] = field(default_factory=dict)
    pairs_by_key: dict[str, int] = field(default_factory=dict)
    strided_calls: int = 0


def _count_pairs(indice_data: Any, num_voxels: int) -> int:
    """All (input, output, offset) pairs of the kernel map spconv stored for one key.

    spconv's Native subm maps store only the offsets before the centre: the centre pairs
    (i -> i) and the mirrored offsets are implied (``indice_pair_num`` is 0 from the centre
    on, measured on 2.3.8), so the full count is ``2 * stored + N``.
    """
    if hasattr(indice_data, "indice_pair_num"):  # Native: (K,) pairs per offset
        stored = int(indice_data.indice_pair_num.sum().item())
        return 2 * stored + num_voxels if indice_data.is_subm else stored
    # implicit GEMM: pair_fwd is (K, N_out) input rows, -1 where absent [unverified on GPU]
    return int((indice_data.pair_fwd >= 0).sum().item())


class SpconvBackend:
    """spconv 2.x backend (see module docstring for the rules it enforces)."""

    name = BACKEND_NAME

    def __init__(self, cuda_algo: str = "MaskImplicitGemm") -> None:
        self.cuda_algo = getattr(ConvAlgo, cuda_algo)
        self._layers: dict[tuple, Any] = {}

    def conv(self, x: SparseTensor, weight: torch.Tensor, geometry: ConvGeometry, training: bool) -> ConvOutput:
        """Run one conv; see :class:`~harness.sparse.backends.base.SparseConvBackend`."""
        state: _SpconvNetworkState = x.cache.backend_state.setdefault(BACKEND_NAME, _SpconvNetworkState())
        key = self._indice_key(x, geometry, state)
        default_algo = self.cuda_algo if x.feats.is_cuda else ConvAlgo.Native
        algo = state.algo_by_key.setdefault(key, default_algo)
        out_channels, in_channels = int(weight.shape[0]), int(weight.shape[-1])
        layer = self._layer(geometry, in_channels, out_channels, algo)
        layer.indice_key = key  # layers are cached per geometry; the key changes per call
        if layer.conv1x1:
            # spconv reads the buffer as (C_in, C_out); hand it W^T so the product is feats @ W^T
            weight = weight.reshape(out_channels, in_channels).t()
        weight = weight.contiguous()  # spconv asserts contiguous filters (map_kernel_size slices are not)
        sp_input = spconv_pytorch.SparseConvTensor(
            x.feats.contiguous(), x.coords.contiguous(), list(x.spatial_shape), x.batch_size
        )
        if geometry.kind == "strided" and key in state.indice_dict:
            self._forget_rerun_strided_key(x, geometry, key, state)
        sp_input.indice_dict = state.indice_dict
        sp_output = layer._conv_forward(training, sp_input, weight, None)
        state.indice_dict = sp_output.indice_dict
        if layer.conv1x1:
            num_pairs = x.num_voxels
        else:
            if key not in state.pairs_by_key:
                state.pairs_by_key[key] = _count_pairs(state.indice_dict[key], x.num_voxels)
            num_pairs = state.pairs_by_key[key]
        return ConvOutput(sp_output.features, sp_output.indices, tuple(sp_output.spatial_shape), num_pairs)

    @staticmethod
    def _forget_rerun_strided_key(x: SparseTensor, geometry: ConvGeometry, key: str, state: _SpconvNetworkState) -> None:
        """A strided conv re-run on the same voxels (e.g. teacher and student on one input).

        spconv refuses to reuse a non-subm key, so the stored map is dropped and rebuilt
        (identical content); any other clash is an error, as in spconv 2.x.
        """
        stored = state.indice_dict[key]
        same_layer = (
            not stored.is_subm
            and tuple(stored.ksize) == geometry.kernel_size
            and tuple(stored.stride) == geometry.stride
            and tuple(stored.padding) == geometry.padding
            and (stored.indices is x.coords or torch.equal(stored.indices, x.coords))
        )
        if not same_layer:
            raise ValueError(
                f"indice_key {key!r} already belongs to another conv; only subm convs may share a key (spconv 2.x rule)"
            )
        state.indice_dict = {name: data for name, data in state.indice_dict.items() if name != key}
        state.pairs_by_key.pop(key, None)

    @staticmethod
    def _indice_key(x: SparseTensor, geometry: ConvGeometry, state: _SpconvNetworkState) -> str:
        if geometry.indice_key is not None:
            return geometry.indice_key
        if geometry.kind == "subm":
            # the coords tensor stays alive in spconv's indice_dict, so its id cannot be recycled
            return f"__subm_{x.stride}_{geometry.kernel_size}_{id(x.coords)}"
        if geometry.kind == "strided":
            state.strided_calls += 1
            return f"__strided_{state.strided_calls}"
        raise ValueError("an inverse conv needs the indice_key of its strided conv")

    def _layer(self, geometry: ConvGeometry, in_channels: int, out_channels: int, algo: Any) -> Any:
        """A cached weightless spconv module with this geometry (its own weight is never used)."""
        cache_key = (geometry.kind, geometry.kernel_size, geometry.stride, geometry.padding, in_channels, out_channels, algo)
        layer = self._layers.get(cache_key)
        if layer is None:
            common = dict(bias=False, indice_key="unset", algo=algo)
            if geometry.kind == "subm":
                layer = spconv_pytorch.SubMConv3d(in_channels, out_channels, geometry.kernel_size, **common)
            elif geometry.kind == "strided":
                layer = spconv_pytorch.SparseConv3d(
                    in_channels, out_channels, geometry.kernel_size, geometry.stride, geometry.padding, **common
                )
            else:
                layer = spconv_pytorch.SparseInverseConv3d(in_channels, out_channels, geometry.kernel_size, **common)
            del layer.weight  # free the unused (C_out, k0, k1, k2, C_in) buffer
            layer.register_parameter("weight", None)
            self._layers[cache_key] = layer
        return layer
