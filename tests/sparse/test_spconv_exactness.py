"""torchref vs spconv-cu126 2.3.8 on CPU (algo=Native), float64: outputs and every gradient.

Both backends run the same harness modules with the same parameters; only the compute
differs. Row orders of strided outputs differ between backends, so outputs are compared
after sorting by coordinates, and the loss weights each output row by a probe that depends
only on its coordinates.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

spconv = pytest.importorskip("spconv.pytorch", reason="spconv-cu126==2.3.8 is not importable here (pip install 'pvkd-harness[spconv]')")

from harness.sparse import (  # noqa: E402
    SparseConv3d,
    SparseInverseConv3d,
    SparseTensor,
    SubMConv3d,
    resolve_backend,
    set_backend,
)
from harness.sparse.testing import MiniCylinderUNet  # noqa: E402
from tests.sparse.sparse_cases import StackedConvs, assert_backends_agree, random_voxels  # noqa: E402

TOLERANCE = 1e-10
GRID = (10, 9, 8)
BATCH = 2


def _assert_backends_agree(model: nn.Module, in_channels: int, seed: int) -> dict[str, float]:
    return assert_backends_agree(model, in_channels, seed, "spconv", GRID, BATCH, TOLERANCE)


def test_spconv_backend_is_the_cuda_wheel_on_cpu() -> None:
    from spconv.cppconstants import CPU_ONLY_BUILD

    assert not CPU_ONLY_BUILD, "the CPU-only spconv wheel gives wrong rows with >1 thread (spconv#679)"
    assert resolve_backend("spconv", "cpu") == "spconv"
    assert resolve_backend("auto", "cpu") == "torchref"


@pytest.mark.parametrize("kernel_size", [(1, 3, 3), (3, 1, 3), (3, 3, 3), (3, 1, 1), (1, 1, 1)])
def test_subm_matches_spconv(kernel_size) -> None:
    _assert_backends_agree(StackedConvs(SubMConv3d(3, 5, kernel_size, indice_key="k", bias=True)), 3, seed=20)


@pytest.mark.parametrize(
    "kernel_size, stride, padding",
    [(3, 2, 1), (3, (2, 2, 1), 1), (2, 2, 0)],
    ids=["k3s2p1", "k3s221p1", "k2s2p0"],
)
def test_strided_and_inverse_match_spconv(kernel_size, stride, padding) -> None:
    strided = SparseConv3d(3, 4, kernel_size, stride, padding, indice_key="down")
    _assert_backends_agree(StackedConvs(strided), 3, seed=21)
    inverse = SparseInverseConv3d(4, 2, kernel_size, indice_key="down", bias=True)
    _assert_backends_agree(StackedConvs(SparseConv3d(3, 4, kernel_size, stride, padding, indice_key="down"), inverse), 3, seed=22)


def test_spconv1_key_sharing_emulation_matches_spconv() -> None:
    # Cylinder3D UpBlock under spconv 1.x: conv1 (1,3,3) creates the key, conv2 (3,1,3) and
    # conv3 (3,3,3) reuse its (1,3,3) map with their first 9 weight slices.
    model = StackedConvs(
        SubMConv3d(3, 4, (1, 3, 3), indice_key="up0"),
        SubMConv3d(4, 4, (3, 1, 3), indice_key="up0", map_kernel_size=(1, 3, 3)),
        SubMConv3d(4, 2, (3, 3, 3), indice_key="up0", map_kernel_size=(1, 3, 3)),
    )
    errors = _assert_backends_agree(model, 3, seed=23)
    assert errors


def test_cylinder_like_unet_block_matches_spconv_end_to_end() -> None:
    torch.manual_seed(0)
    model = MiniCylinderUNet(in_channels=4, width=4, num_classes=5, pool_stride=(2, 2, 1))
    model.train()  # batch-norm statistics from the batch, as in training
    _assert_backends_agree(model, 4, seed=24)


def test_layers_without_indice_key_match_spconv() -> None:
    # the spconv backend gives them synthetic keys so their pair counts are recorded too
    model = StackedConvs(SubMConv3d(3, 4, 3), SubMConv3d(4, 4, 3), SparseConv3d(4, 2, 2, 2, 0))
    _assert_backends_agree(model, 3, seed=25)


def test_rerun_on_the_same_input_tensor_on_spconv() -> None:
    coords = random_voxels(GRID, BATCH, 0.3, seed=26)
    x = SparseTensor.from_coords(torch.randn(coords.shape[0], 4, dtype=torch.float64), coords, GRID, BATCH)
    model = set_backend(MiniCylinderUNet(4, 4, 3).double().eval(), "spconv")
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first.feats, second.feats)
    with pytest.raises(ValueError, match="already belongs"):
        set_backend(SparseConv3d(4, 4, 2, 2, 0, indice_key="down_pool"), "spconv").double()(x)
