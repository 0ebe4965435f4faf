"""Conv modules on the torchref backend: hand-computed values, geometry, emulation, gradients."""

from __future__ import annotations

import pytest
import torch

from harness.sparse import (
    SparseConv3d,
    SparseInverseConv3d,
    SparseTensor,
    SubMConv3d,
    describe_backend,
    resolve_backend,
    set_backend,
    use_backend,
)
from harness.sparse.testing import MiniCylinderUNet
from tests.sparse.sparse_cases import random_voxels

GRID = (6, 5, 4)


def _tensor(coords: torch.Tensor, feats: torch.Tensor, grid=GRID, batch_size: int = 1) -> SparseTensor:
    return SparseTensor.from_coords(feats, coords, grid, batch_size)


def _three_voxels() -> SparseTensor:
    # voxels a=(0,0,0), b=(0,0,1), c=(0,1,1) (d0, d1, d2), features 1, 2, 3
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1]], dtype=torch.int32)
    return _tensor(coords, torch.tensor([[1.0], [2.0], [3.0]]), grid=(1, 2, 2))


def test_subm_three_voxels_hand_computed_along_last_axis() -> None:
    conv = SubMConv3d(1, 1, (1, 1, 3))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 10.0, 100.0]).view(1, 1, 1, 3, 1))
    out = conv(_three_voxels())
    # offset k reads the input at out + (k - 1) along d2:
    # a: 10*1 + 100*b(2) = 210; b: 1*a(1) + 10*2 = 21; c: 10*3 = 30 (no d2-neighbours)
    assert out.feats.flatten().tolist() == [210.0, 21.0, 30.0]
    assert out.coords is _three_voxels().coords or torch.equal(out.coords, _three_voxels().coords)


def test_subm_hand_computed_along_middle_axis_with_channels() -> None:
    conv = SubMConv3d(2, 1, (1, 3, 1), bias=True)
    x = _three_voxels().replace_feature(torch.tensor([[1.0, 0.5], [2.0, 0.25], [3.0, 0.125]]))
    with torch.no_grad():
        # KRSC (C_out=1, 1, 3, 1, C_in=2): offset k along d1, per input channel weights
        conv.weight.copy_(torch.tensor([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]]).view(1, 1, 3, 1, 2))
        conv.bias.fill_(0.5)
    out = conv(x)
    # a: centre only -> 10*1 + 20*0.5 = 20; b: centre 10*2 + 20*0.25 = 25, + d1+1 neighbour c: 100*3 + 200*0.125 = 325
    # c: centre 30 + 2.5 = 32.5, + d1-1 neighbour b: 1*2 + 2*0.25 = 2.5
    assert out.feats.flatten().tolist() == [20.5, 350.5, 35.5]


def test_strided_conv_hand_computed_and_stride_bookkeeping() -> None:
    # d2 cells 0, 1, 3; k=2 s=2 p=0 along d2 -> outputs o=0 (from 0 and 1), o=1 (from 3)
    coords = torch.tensor([[0, 0, 0, 3], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.int32)
    x = _tensor(coords, torch.tensor([[5.0], [1.0], [2.0]]), grid=(1, 1, 4))
    conv = SparseConv3d(1, 1, (1, 1, 2), (1, 1, 2), 0, indice_key="down")
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 10.0]).view(1, 1, 1, 2, 1))
    out = conv(x)
    assert out.coords.tolist() == [[0, 0, 0, 0], [0, 0, 0, 1]]
    assert out.feats.flatten().tolist() == [1.0 * 1 + 10.0 * 2, 10.0 * 5]
    assert out.spatial_shape == (1, 1, 2) and out.stride == (1, 1, 2)
    assert out.cache is x.cache


def test_inverse_conv_restores_input_coords_grid_and_stride() -> None:
    coords = random_voxels(GRID, 2, 0.4, seed=5)
    x = _tensor(coords, torch.randn(coords.shape[0], 3), batch_size=2)
    down = SparseConv3d(3, 4, 3, (2, 2, 1), 1, indice_key="pool")(x)
    assert down.stride == (2, 2, 1) and down.spatial_shape == (3, 3, 4)
    up = SparseInverseConv3d(4, 2, 3, indice_key="pool")(down)
    assert up.coords is x.coords
    assert up.spatial_shape == GRID and up.stride == (1, 1, 1) and up.feats.shape == (coords.shape[0], 2)


def test_inverse_conv_without_its_strided_conv_raises() -> None:
    coords = random_voxels(GRID, 1, 0.4, seed=6)
    x = _tensor(coords, torch.randn(coords.shape[0], 2))
    with pytest.raises(ValueError, match="no strided conv"):
        SparseInverseConv3d(2, 2, 3, indice_key="missing")(x)


def test_state_dict_is_krsc_and_backend_independent() -> None:
    conv = SubMConv3d(4, 8, (1, 3, 3), indice_key="k", bias=True)
    assert set(conv.state_dict()) == {"weight", "bias"}
    assert conv.weight.shape == (8, 1, 3, 3, 4)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    set_backend(conv, "spconv")
    assert all(torch.equal(before[k], v) for k, v in conv.state_dict().items())


def test_map_kernel_size_equals_manual_conv_with_sliced_weight() -> None:
    coords = random_voxels(GRID, 1, 0.5, seed=7)
    feats = torch.randn(coords.shape[0], 3, dtype=torch.float64)
    emulated = SubMConv3d(3, 5, (3, 3, 3), map_kernel_size=(1, 3, 3)).double()
    manual = SubMConv3d(3, 5, (1, 3, 3)).double()
    with torch.no_grad():
        manual.weight.copy_(emulated.weight.reshape(5, 27, 3)[:, :9].reshape(5, 1, 3, 3, 3))
    out_emulated = emulated(_tensor(coords, feats))
    out_manual = manual(_tensor(coords, feats))
    torch.testing.assert_close(out_emulated.feats, out_manual.feats, rtol=0, atol=1e-13)
    out_emulated.feats.sum().backward()
    unused = emulated.weight.grad.reshape(5, 27, 3)[:, 9:]
    assert torch.count_nonzero(unused) == 0  # slices 9..26 are dead, as in spconv 1.x
    assert emulated.weight.shape == (5, 3, 3, 3, 3)  # checkpoint shape kept


def test_cylinder3d_key_sharing_needs_map_kernel_size() -> None:
    coords = random_voxels(GRID, 1, 0.5, seed=8)
    x = _tensor(coords, torch.randn(coords.shape[0], 2))
    first = SubMConv3d(2, 2, (1, 3, 3), indice_key="prebef")
    nominal = SubMConv3d(2, 2, (3, 1, 3), indice_key="prebef")
    emulated = SubMConv3d(2, 2, (3, 1, 3), indice_key="prebef", map_kernel_size=(1, 3, 3))
    y = first(x)
    with pytest.raises(ValueError, match="map_kernel_size"):
        nominal(y)
    z = emulated(y)
    assert z.cache.conv_records[-1].num_pairs == y.cache.conv_records[-1].num_pairs


def test_map_kernel_size_larger_than_kernel_is_rejected() -> None:
    with pytest.raises(ValueError):
        SubMConv3d(2, 2, (1, 3, 3), map_kernel_size=(3, 3, 3))


@pytest.mark.parametrize("layer", ["subm", "strided", "strided_inverse"])
def test_gradcheck_float64(layer: str) -> None:
    coords = random_voxels((4, 3, 3), 1, 0.5, seed=9)
    feats = torch.randn(coords.shape[0], 2, dtype=torch.float64, requires_grad=True)
    subm = SubMConv3d(2, 3, (3, 1, 3), bias=True).double()
    strided = SparseConv3d(2, 3, 3, 2, 1, indice_key="d").double()
    inverse = SparseInverseConv3d(3, 2, 3, indice_key="d").double()

    def run(feats, *params):
        x = SparseTensor.from_coords(feats, coords, (4, 3, 3), 1)
        if layer == "subm":
            return subm(x).feats
        y = strided(x)
        return inverse(y).feats if layer == "strided_inverse" else y.feats

    params = {
        "subm": list(subm.parameters()),
        "strided": list(strided.parameters()),
        "strided_inverse": list(strided.parameters()) + list(inverse.parameters()),
    }[layer]
    assert torch.autograd.gradcheck(run, (feats, *params), eps=1e-6, atol=1e-8)


def test_subm_kernel_maps_are_cached_per_key_and_geometry() -> None:
    coords = random_voxels(GRID, 1, 0.5, seed=10)
    x = _tensor(coords, torch.randn(coords.shape[0], 2))
    a = SubMConv3d(2, 2, 3, indice_key="a")
    b = SubMConv3d(2, 2, 3)  # same geometry, no key: reuses the map built for "a"
    b(a(x))
    torchref_maps = {k: v for k, v in x.cache.kernel_maps.items() if k[0] == "torchref"}
    assert len({id(v) for v in torchref_maps.values()}) == 1


def test_backend_selection_and_context_manager() -> None:
    assert resolve_backend("auto", "cpu") == "torchref"
    with pytest.raises(ValueError):
        resolve_backend("torchsparse", "cpu")
    model = MiniCylinderUNet(4, 4, 3)
    assert describe_backend(model, "cpu") == "torchref"
    with use_backend(model, "torchref"):
        assert {m.backend for m in model.modules() if hasattr(m, "last_backend")} == {"torchref"}
    assert {m.backend for m in model.modules() if hasattr(m, "last_backend")} == {"auto"}
    with pytest.raises(ValueError):
        set_backend(model, "nope")


def test_minkowski_backend_reports_install_hint_when_missing() -> None:
    try:
        import MinkowskiEngine  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="MinkowskiEngine"):
            resolve_backend("minkowski", "cpu")
    else:  # pragma: no cover - only where ME is installed
        assert resolve_backend("minkowski", "cpu") == "minkowski"


def test_mini_unet_runs_and_keeps_input_voxels() -> None:
    coords = random_voxels((8, 8, 6), 2, 0.3, seed=11)
    x = SparseTensor.from_coords(torch.randn(coords.shape[0], 4), coords, (8, 8, 6), 2)
    out = MiniCylinderUNet(4, 4, 3)(x)
    assert out.coords is x.coords and out.feats.shape == (coords.shape[0], 3)
    assert x.cache.backends_used == ("torchref",)


def test_two_networks_on_one_input_share_kernel_maps() -> None:
    # KD feeds teacher and student the same tensor: keys repeat, the maps are reused
    coords = random_voxels((8, 8, 6), 1, 0.3, seed=13)
    x = SparseTensor.from_coords(torch.randn(coords.shape[0], 4), coords, (8, 8, 6), 1)
    teacher, student = MiniCylinderUNet(4, 8, 3), MiniCylinderUNet(4, 4, 3)
    teacher(x)
    maps_after_teacher = len(x.cache.kernel_maps)
    out = student(x)
    assert len(x.cache.kernel_maps) == maps_after_teacher and out.coords is x.coords


def test_strided_key_clash_raises() -> None:
    coords = random_voxels(GRID, 1, 0.4, seed=14)
    x = _tensor(coords, torch.randn(coords.shape[0], 2))
    SparseConv3d(2, 2, 3, 2, 1, indice_key="pool")(x)
    with pytest.raises(ValueError, match="already belongs"):
        SparseConv3d(2, 2, 2, 2, 0, indice_key="pool")(x)


def test_empty_input_gives_empty_output() -> None:
    x = _tensor(torch.zeros(0, 4, dtype=torch.int32), torch.zeros(0, 2))
    assert SubMConv3d(2, 3, 3)(x).feats.shape == (0, 3)
    assert SparseConv3d(2, 3, 3, 2, 1)(x).feats.shape == (0, 3)
