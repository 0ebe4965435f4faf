"""torchref vs MinkowskiEngine 0.5.4 (CPU build) in float64: every conv kind, outputs and every gradient.

Both backends run the same harness modules with the same parameters; only the compute differs.
Outputs are compared after sorting by coordinates and the loss weights each output row by a
probe that depends only on its coordinates. ME's CPU kernels run in float64 (measured), so the
tolerance is the one of the spconv comparison (1e-10); measured worst absolute errors: 6e-14 (single
3x3x3 subm conv), 5e-15 (strided + inverse), 1.7e-13 (Cylinder3D-like block, outputs and gradients).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.minkowski_support import require_minkowski

require_minkowski()

from harness.backbones.weights_spvnas import krsc_to_torchsparse_kernel  # noqa: E402
from harness.sparse import SparseConv3d, SparseInverseConv3d, SparseTensor, SubMConv3d, set_backend  # noqa: E402
from harness.sparse.backends.minkowski import spconv_strided_output_coords  # noqa: E402
from harness.sparse.backends.minkowski_layout import krsc_to_minkowski_kernel, minkowski_kernel_to_krsc  # noqa: E402
from harness.sparse.testing import MiniCylinderUNet  # noqa: E402
from tests.sparse.sparse_cases import StackedConvs, assert_backends_agree, brute_force_strided_pairs, random_voxels, rows_sorted_by_coords  # noqa: E402

TOLERANCE = 1e-10
GRID = (10, 9, 8)
BATCH = 2


def _assert_backends_agree(model: nn.Module, in_channels: int, seed: int) -> dict[str, float]:
    return assert_backends_agree(model, in_channels, seed, "minkowski", GRID, BATCH, TOLERANCE)


@pytest.mark.parametrize("kernel_size", [(1, 3, 3), (3, 1, 3), (3, 3, 1), (3, 3, 3), (3, 1, 1), (1, 1, 1)])
def test_subm_matches_torchref(kernel_size) -> None:
    _assert_backends_agree(StackedConvs(SubMConv3d(3, 5, kernel_size, indice_key="k", bias=True)), 3, seed=20)


@pytest.mark.parametrize(
    "kernel_size, stride, padding",
    [(3, 2, 1), (3, (2, 2, 1), 1), (2, 2, 0)],
    ids=["k3s2p1", "k3s221p1", "k2s2p0"],
)
def test_strided_and_inverse_match_torchref(kernel_size, stride, padding) -> None:
    _assert_backends_agree(StackedConvs(SparseConv3d(3, 4, kernel_size, stride, padding, indice_key="down")), 3, seed=21)
    inverse = SparseInverseConv3d(4, 2, kernel_size, indice_key="down", bias=True)
    _assert_backends_agree(StackedConvs(SparseConv3d(3, 4, kernel_size, stride, padding, indice_key="down"), inverse), 3, seed=22)


@pytest.mark.parametrize("kernel_size, stride, padding", [((3, 3, 3), (2, 2, 2), (1, 1, 1)), ((3, 3, 3), (2, 2, 1), (1, 1, 1)), ((2, 2, 2), (2, 2, 2), (0, 0, 0))])
def test_strided_output_set_is_spconvs_brute_force(kernel_size, stride, padding) -> None:
    from harness.sparse.backends.base import ConvGeometry

    coords = random_voxels(GRID, BATCH, 0.2, seed=3)
    out, shape = spconv_strided_output_coords(coords, GRID, ConvGeometry("strided", kernel_size, stride, padding))
    expected, _, expected_shape = brute_force_strided_pairs(coords.numpy(), GRID, kernel_size, stride, padding)
    assert shape == expected_shape
    assert {tuple(row) for row in out.tolist()} == expected and out.shape[0] == len(expected)
    assert torch.equal(out[rows_sorted_by_coords(out)], out), "rows sorted by [batch, d0, d1, d2]"


def test_unsupported_padding_is_refused() -> None:
    coords = random_voxels(GRID, BATCH, 0.3, seed=4)
    layer = set_backend(SparseConv3d(3, 4, 3, 2, 0), "minkowski")
    with pytest.raises(NotImplementedError, match=r"needs padding \(1, 1, 1\)"):
        layer(SparseTensor.from_coords(torch.randn(coords.shape[0], 3), coords, GRID, BATCH))


def test_spconv1_key_sharing_emulation_matches_torchref() -> None:
    # Cylinder3D UpBlock under spconv 1.x: later layers reuse the (1,3,3) map with their first 9 weight slices
    model = StackedConvs(
        SubMConv3d(3, 4, (1, 3, 3), indice_key="up0"),
        SubMConv3d(4, 4, (3, 1, 3), indice_key="up0", map_kernel_size=(1, 3, 3)),
        SubMConv3d(4, 2, (3, 3, 3), indice_key="up0", map_kernel_size=(1, 3, 3)),
    )
    _assert_backends_agree(model, 3, seed=23)


@pytest.mark.parametrize("pool_stride", [(2, 2, 2), (2, 2, 1)])
def test_cylinder_like_unet_block_matches_torchref_end_to_end(pool_stride) -> None:
    torch.manual_seed(0)
    model = MiniCylinderUNet(in_channels=4, width=4, num_classes=5, pool_stride=pool_stride).train()
    _assert_backends_agree(model, 4, seed=24)


def test_layers_without_indice_key_match_torchref() -> None:
    model = StackedConvs(SubMConv3d(3, 4, 3), SubMConv3d(4, 4, 3), SparseConv3d(4, 2, 2, 2, 0))
    _assert_backends_agree(model, 3, seed=25)


def test_rerun_on_the_same_input_tensor_is_identical() -> None:
    coords = random_voxels(GRID, BATCH, 0.3, seed=26)
    x = SparseTensor.from_coords(torch.randn(coords.shape[0], 4, dtype=torch.float64), coords, GRID, BATCH)
    model = set_backend(MiniCylinderUNet(4, 4, 3).double().eval(), "minkowski")
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first.feats, second.feats)


def test_float32_matches_float64_reference() -> None:
    """The training dtype: ME float32 vs torchref float64 on the same block (tolerance from float32 rounding)."""
    coords = random_voxels(GRID, BATCH, 0.3, seed=27)
    feats = torch.randn(coords.shape[0], 4, dtype=torch.float64, generator=torch.Generator().manual_seed(27))
    torch.manual_seed(0)
    model = MiniCylinderUNet(4, 4, 3).eval()
    with torch.no_grad():
        out32 = set_backend(model, "minkowski")(SparseTensor.from_coords(feats.float(), coords, GRID, BATCH))
        out64 = set_backend(model.double(), "torchref")(SparseTensor.from_coords(feats, coords, GRID, BATCH))
    assert out32.feats.dtype == torch.float32
    assert torch.equal(out32.coords, out64.coords)
    assert (out32.feats.double() - out64.feats).abs().max().item() <= 1e-4 * max(1.0, out64.feats.abs().max().item())


# ----------------------------------------------------------------------------- layout
def test_minkowski_kernel_layout_by_hand() -> None:
    weight = torch.arange(2 * 2 * 2 * 2 * 3, dtype=torch.float64).reshape(2, 2, 2, 2, 3)  # (C_out, k0, k1, k2, C_in)
    kernel = krsc_to_minkowski_kernel(weight)
    assert kernel.shape == (8, 3, 2)
    # ME offset (k0, k1, k2) = (0, 0, 1) is index 4 (first axis fastest); torchsparse's k2 puts it at index 1 (z fastest)
    assert torch.equal(kernel[4], weight[:, 0, 0, 1, :].T) and torch.equal(kernel[1], weight[:, 1, 0, 0, :].T)
    assert torch.equal(krsc_to_torchsparse_kernel(weight)[1], weight[:, 0, 0, 1, :].T)
    assert torch.equal(minkowski_kernel_to_krsc(kernel, 2), weight)
    odd = torch.randn(4, 1, 3, 3, 5, dtype=torch.float64)
    assert torch.equal(krsc_to_minkowski_kernel(odd)[1 + 3 * 2], odd[:, 0, 1, 2, :].T)  # index k0 + 1*k1 + 3*k2
    assert torch.equal(minkowski_kernel_to_krsc(krsc_to_minkowski_kernel(odd), (1, 3, 3)), odd)
    with pytest.raises(ValueError, match="does not match kernel size"):
        minkowski_kernel_to_krsc(kernel, 3)


def test_row_maps_between_our_order_and_minkowskis() -> None:
    """ME's CPU map keeps insertion order on these inputs (its CUDA map does not): the maps must be exact either way."""
    from harness.sparse.backends.minkowski import MinkowskiBackend

    coords = random_voxels(GRID, BATCH, 0.3, seed=28)
    x = SparseTensor.from_coords(torch.randn(coords.shape[0], 3, dtype=torch.float64), coords, GRID, BATCH)
    set_backend(SparseConv3d(3, 2, 3, 2, 1, indice_key="d").double(), "minkowski")(x)
    state = x.cache.backend_state["minkowski"]
    assert len(state.levels) == 2  # the input set and the pooled set, each inserted once
    for level in state.levels:
        stride = torch.tensor([1, *level.key.get_tensor_stride()], dtype=torch.int32)
        me_coords = state.manager.get_coordinates(level.key)
        assert torch.equal(me_coords, level.coords[level.our_rows_of_me] * stride)
        assert torch.equal(me_coords[level.me_rows_of_ours], level.coords * stride)
    assert MinkowskiBackend._level(state, coords.clone(), (1, 1, 1)) is state.levels[0]  # equal coords reuse the key
