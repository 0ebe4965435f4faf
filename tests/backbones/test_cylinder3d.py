"""Cylinder3D backbone and its official-checkpoint converters.

Expected values are computed here independently of the model code: parameter counts from the
the released checkpoints and from layer shapes by
hand; the official key list and spconv-1 weight shapes are restated from xinge008/Cylinder3D
``network/cylinder_fea_generator.py`` and ``network/segmentator_3d_asymm_spconv.py``.

Inputs are small crops of the real SemanticKITTI frame ``sequences/00/velodyne/000000.bin``
(skipped visibly without ``$PVKD_REAL_DATA``). The module runs torch on one thread: on these
small inputs two OpenMP threads only add synchronisation cost, and on a shared 2-core box they
are oversubscribed (measured: 10-20x slower wall time under load).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.backbones.base import BACKBONES, BackboneInput, TapPoint, collate_scans
from harness.backbones.cylinder3d import Cylinder3D
from harness.backbones.weights_cylinder3d import (
    ALLOW_MISSING_REFINEMENT,
    convert_official_state_dict,
    cylinder3d_from_official,
    detect_conv_layout,
    export_official_state_dict,
    infer_cylinder3d_config,
    load_official_cylinder3d,
)
from harness.data.semantickitti import read_points
from harness.sparse import SparseTensor, backend_available, set_backend
from harness.voxelize.cylindrical import cylindrical_voxelize


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- helpers
def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{name}": (channels,) for name in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()
    }


def _linear(prefix: str, fan_in: int, fan_out: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (fan_out, fan_in), f"{prefix}.bias": (fan_out,)}


def official_spconv1_shapes(c: int, f: int, out_fea: int = 256, classes: int = 20, fea_dim: int = 9) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official Cylinder3D state dict, conv weights in spconv 1.x (k0,k1,k2,Cin,Cout).

    Restated layer by layer from the official files (not from harness code).
    """
    g, s = "cylinder_3d_generator", "cylinder_3d_spconv_seg"
    shapes: dict[str, tuple[int, ...]] = {}
    shapes |= _bn(f"{g}.PPmodel.0", fea_dim)
    shapes |= _linear(f"{g}.PPmodel.1", fea_dim, 64) | _bn(f"{g}.PPmodel.2", 64)
    shapes |= _linear(f"{g}.PPmodel.4", 64, 128) | _bn(f"{g}.PPmodel.5", 128)
    shapes |= _linear(f"{g}.PPmodel.7", 128, 256) | _bn(f"{g}.PPmodel.8", 256)
    shapes |= _linear(f"{g}.PPmodel.10", 256, out_fea)
    shapes |= _linear(f"{g}.fea_compression.0", out_fea, f)

    def conv(name: str, kernel: tuple[int, int, int], cin: int, cout: int) -> None:
        shapes[f"{s}.{name}.weight"] = (*kernel, cin, cout)

    # ResContextBlock(F, c): conv1 1x3x3, conv1_2 3x1x3, conv2 3x1x3, conv3 1x3x3
    conv("downCntx.conv1", (1, 3, 3), f, c); shapes |= _bn(f"{s}.downCntx.bn0", c)
    conv("downCntx.conv1_2", (3, 1, 3), c, c); shapes |= _bn(f"{s}.downCntx.bn0_2", c)
    conv("downCntx.conv2", (3, 1, 3), f, c); shapes |= _bn(f"{s}.downCntx.bn1", c)
    conv("downCntx.conv3", (1, 3, 3), c, c); shapes |= _bn(f"{s}.downCntx.bn2", c)
    for block, cin, cout in (("resBlock2", c, 2 * c), ("resBlock3", 2 * c, 4 * c), ("resBlock4", 4 * c, 8 * c), ("resBlock5", 8 * c, 16 * c)):
        conv(f"{block}.conv1", (3, 1, 3), cin, cout); shapes |= _bn(f"{s}.{block}.bn0", cout)
        conv(f"{block}.conv1_2", (1, 3, 3), cout, cout); shapes |= _bn(f"{s}.{block}.bn0_2", cout)
        conv(f"{block}.conv2", (1, 3, 3), cin, cout); shapes |= _bn(f"{s}.{block}.bn1", cout)
        conv(f"{block}.conv3", (3, 1, 3), cout, cout); shapes |= _bn(f"{s}.{block}.bn2", cout)
        conv(f"{block}.pool", (3, 3, 3), cout, cout)
    for block, cin, cout in (("upBlock0", 16 * c, 16 * c), ("upBlock1", 16 * c, 8 * c), ("upBlock2", 8 * c, 4 * c), ("upBlock3", 4 * c, 2 * c)):
        conv(f"{block}.trans_dilao", (3, 3, 3), cin, cout); shapes |= _bn(f"{s}.{block}.trans_bn", cout)
        conv(f"{block}.conv1", (1, 3, 3), cout, cout); shapes |= _bn(f"{s}.{block}.bn1", cout)
        conv(f"{block}.conv2", (3, 1, 3), cout, cout); shapes |= _bn(f"{s}.{block}.bn2", cout)
        conv(f"{block}.conv3", (3, 3, 3), cout, cout); shapes |= _bn(f"{s}.{block}.bn3", cout)
        conv(f"{block}.up_subm", (3, 3, 3), cout, cout)
    conv("ReconNet.conv1", (3, 1, 1), 2 * c, 2 * c); shapes |= _bn(f"{s}.ReconNet.bn0", 2 * c)
    conv("ReconNet.conv1_2", (1, 3, 1), 2 * c, 2 * c); shapes |= _bn(f"{s}.ReconNet.bn0_2", 2 * c)
    conv("ReconNet.conv1_3", (1, 1, 3), 2 * c, 2 * c); shapes |= _bn(f"{s}.ReconNet.bn0_3", 2 * c)
    conv("logits", (3, 3, 3), 4 * c, classes)
    shapes[f"{s}.logits.bias"] = (classes,)
    return shapes


def _num_params(shapes: dict[str, tuple[int, ...]]) -> int:
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return sum(int(np.prod(shape)) for key, shape in shapes.items() if not key.endswith(skip))


def synthetic_official_state_dict(c: int, f: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in official_spconv1_shapes(c, f).items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(shape, generator=gen)
    return out


def _crop(points: np.ndarray, max_range: float, sector: float) -> np.ndarray:
    """Points within ``max_range`` metres and ``|azimuth| < sector / 2`` radians (real neighbour density)."""
    rho = np.linalg.norm(points[:, :2], axis=1)
    phi = np.arctan2(points[:, 1], points[:, 0])
    return points[(rho < max_range) & (np.abs(phi) < sector / 2)]


@pytest.fixture(scope="module")
def frames(kitti_root: Path) -> list[np.ndarray]:
    return [read_points(kitti_root / f"sequences/00/velodyne/{i:06d}.bin") for i in (0, 1)]


@pytest.fixture(scope="module")
def crop_batch(frames) -> BackboneInput:
    """~9k points / ~2k voxels of frame 0 (10 m, 57 degree sector)."""
    return collate_scans([cylindrical_voxelize(_crop(frames[0], 10.0, 1.0))])


@pytest.fixture(scope="module")
def tiny_batch(frames) -> BackboneInput:
    """~4k points / ~0.9k voxels of frame 0."""
    return collate_scans([cylindrical_voxelize(_crop(frames[0], 10.0, 0.5))])


def _loss(out, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    rp = torch.randn(out.point_logits.shape, generator=gen, dtype=out.point_logits.dtype)
    rv = torch.randn(out.voxel_logits.shape, generator=gen, dtype=out.voxel_logits.dtype)
    return (out.point_logits * rp).mean() + (out.voxel_logits * rv).mean() + out.voxel_logits.square().mean()


def _refinement_params(c: int, out_fea: int = 256, classes: int = 20) -> int:
    """BN(4c+out) -> L(.,256) -> BN -> L(256,128) -> BN -> L(128,64) -> BN -> L(64,classes), by hand."""
    d = 4 * c + out_fea
    return 2 * d + (d * 256 + 256) + 2 * 256 + (256 * 128 + 128) + 2 * 128 + (128 * 64 + 64) + 2 * 64 + (64 * classes + classes)


# ----------------------------------------------------------------------------- construction
def test_registry_entry_resolves():
    assert BACKBONES.get("cylinder3d") is Cylinder3D


@pytest.mark.parametrize(
    "kwargs, official, dead",
    [
        (dict(width=1.0), 55_853_366, 6_266_880),  # teacher c32 F16 out256 (the released checkpoint)
        (dict(width=0.5), 14_071_542, 1_566_720),  # PVKD student c16 F16 out256
        (dict(width=1.0, num_input_features=32), 55_866_694, 6_266_880),  # PVKD semantickitti.yaml teacher
        (dict(width=0.5, out_fea_dim=128, num_classes=17), 14_031_411, 1_566_720),  # nuScenes student
    ],
)
def test_parameter_counts_match_official_definitions(kwargs, official, dead):
    with torch.device("meta"):
        model = Cylinder3D(**kwargs)
        nominal = Cylinder3D(**kwargs, legacy_spconv1_keys=False)
    counts = model.parameter_counts()
    assert counts["official"] == official == model.official_parameters()
    assert counts["dead_under_kernel_map_mode"] == dead
    assert nominal.parameter_counts()["dead_under_kernel_map_mode"] == 0
    classes = kwargs.get("num_classes", 20)
    refinement = _refinement_params(model.init_size, kwargs.get("out_fea_dim", 256), classes)
    assert counts["point_refinement"] == refinement
    assert counts["total"] == official + refinement
    # the official part is the independently restated official layer list
    assert _num_params(official_spconv1_shapes(model.init_size, model.num_input_features, kwargs.get("out_fea_dim", 256), classes)) == official


def test_refinement_head_counts_by_hand():
    # teacher: BN(384)=768, L(384,256)=98,560, BN=512, L(256,128)=32,896, BN=256, L(128,64)=8,256, BN=128, L(64,20)=1,300
    assert _refinement_params(32) == 768 + 98_560 + 512 + 32_896 + 256 + 8_256 + 128 + 1_300 == 142_676
    assert _refinement_params(16) == 126_164
    with torch.device("meta"):
        assert Cylinder3D(width=1.0).parameter_counts()["point_refinement"] == 142_676
        assert Cylinder3D(width=0.5).parameter_counts()["point_refinement"] == 126_164
        assert Cylinder3D(width=0.5, point_refinement=False).parameter_counts()["point_refinement"] == 0


def test_widths_and_mode_are_recorded():
    with torch.device("meta"):
        teacher, student = Cylinder3D(width=1.0), Cylinder3D(width=0.5, legacy_spconv1_keys=False)
    assert (teacher.init_size, teacher.num_input_features, teacher.out_fea_dim) == (32, 16, 256)
    assert (student.init_size, student.num_input_features, student.out_fea_dim) == (16, 16, 256)
    assert teacher.legacy_spconv1_keys and teacher.kernel_map_mode == "spconv1_shared_keys"
    assert not student.legacy_spconv1_keys and student.kernel_map_mode == "nominal"
    with torch.device("meta"):
        rebuilt = Cylinder3D(**student.config)
    assert rebuilt.config == student.config and rebuilt.kernel_map_mode == "nominal"


def test_legacy_kernel_map_geometry_follows_first_user_of_each_key():
    """The geometry each layer runs with under spconv 1.2.1 key sharing."""
    with torch.device("meta"):
        seg = Cylinder3D(width=0.5).cylinder_3d_spconv_seg
        nominal = Cylinder3D(width=0.5, legacy_spconv1_keys=False).cylinder_3d_spconv_seg
    expected = {"downCntx": {n: (1, 3, 3) for n in ("conv1", "conv1_2", "conv2", "conv3")}, "ReconNet": {n: (3, 1, 1) for n in ("conv1", "conv1_2", "conv1_3")}}
    for i in range(2, 6):
        expected[f"resBlock{i}"] = {n: (3, 1, 3) for n in ("conv1", "conv1_2", "conv2", "conv3")} | {"pool": (3, 3, 3)}
    for i in range(4):
        expected[f"upBlock{i}"] = {"trans_dilao": (3, 3, 3), "up_subm": (3, 3, 3), "conv1": (1, 3, 3), "conv2": (1, 3, 3), "conv3": (1, 3, 3)}
    for block, layers in expected.items():
        for layer, geometry in layers.items():
            assert getattr(getattr(seg, block), layer).map_kernel_size == geometry, (block, layer)
    assert seg.logits.map_kernel_size == (3, 3, 3)
    # official keys shared; nominal mode: one key per kernel geometry, nominal kernels
    assert {seg.upBlock1.conv1.indice_key, seg.upBlock1.conv2.indice_key, seg.upBlock1.conv3.indice_key} == {"up1"}
    assert seg.resBlock3.conv2.indice_key == "down3bef" and seg.resBlock3.pool.indice_key == "down3"
    assert nominal.upBlock1.conv3.map_kernel_size == (3, 3, 3) and nominal.upBlock1.conv3.indice_key == "up1_333"
    assert nominal.downCntx.conv1_2.map_kernel_size == (3, 1, 3)


def test_dense_layer_macs_by_hand():
    with torch.device("meta"):
        teacher = Cylinder3D(width=1.0)
    macs = teacher.dense_macs(num_points=1000, num_voxels=300)
    assert macs["point_mlp"] == 1000 * (9 * 64 + 64 * 128 + 128 * 256 + 256 * 256)  # 107,072 per point
    assert macs["fea_compression"] == 300 * 256 * 16
    assert macs["point_refinement"] == 1000 * ((128 + 256) * 256 + 256 * 128 + 128 * 64 + 64 * 20)
    assert macs["total"] == macs["point_mlp"] + macs["fea_compression"] + macs["point_refinement"]


def test_refinement_fuses_voxel_and_pre_conv_point_features():
    """Reading of Cylinder3D#28: point logits = MLP(concat[voxel features of the point's voxel, PPmodel output])."""
    torch.manual_seed(0)
    head = Cylinder3D(width=0.5).point_refinement.double().eval()
    assert head.mlp[1].in_features == 4 * 16 + 256 and [m.out_features for m in head.mlp if isinstance(m, torch.nn.Linear)] == [256, 128, 64]
    voxel = torch.randn(5, 64, dtype=torch.float64)
    point = torch.randn(7, 256, dtype=torch.float64)
    rows = torch.tensor([0, 0, 1, 4, 4, 2, -1])
    with torch.no_grad():
        logits, features = head(voxel, point, rows)
        fused = torch.cat((torch.cat((voxel[rows.clamp(min=0)][:6], torch.zeros(1, 64, dtype=torch.float64))), point), 1)
        torch.testing.assert_close(features, head.mlp(fused), rtol=0, atol=0)
        torch.testing.assert_close(logits, head.classifier(features), rtol=0, atol=0)
        assert not torch.allclose(logits[0], logits[1])  # same voxel, different points


# ----------------------------------------------------------------------------- checkpoints
def test_official_spconv1_state_dict_loads_and_lands_permuted():
    official = synthetic_official_state_dict(c=32, f=16)
    assert official["cylinder_3d_spconv_seg.downCntx.conv1.weight"].shape == (1, 3, 3, 16, 32)
    assert detect_conv_layout(official) == "spconv1"
    assert infer_cylinder3d_config(official) == dict(
        init_size=32, num_input_features=16, fea_dim=9, out_fea_dim=256, num_classes=20, point_refinement=False
    )

    bare = Cylinder3D(width=1.0, point_refinement=False)
    report = load_official_cylinder3d(bare, official, strict=True)
    assert report.layout == "spconv1" and report.missing_keys == [] and report.unexpected_keys == []
    assert report.loaded_keys == len(official)
    seg = bare.cylinder_3d_spconv_seg
    src = lambda name: official[f"cylinder_3d_spconv_seg.{name}.weight"]  # noqa: E731
    # KRSC w[o, k0, k1, k2, i] == spconv-1 w[k0, k1, k2, i, o]
    assert seg.downCntx.conv1.weight[31, 0, 2, 1, 15] == src("downCntx.conv1")[0, 2, 1, 15, 31]
    assert seg.downCntx.conv1_2.weight[5, 2, 0, 1, 7] == src("downCntx.conv1_2")[2, 0, 1, 7, 5]
    assert seg.upBlock0.conv3.weight[100, 1, 2, 0, 511] == src("upBlock0.conv3")[1, 2, 0, 511, 100]
    assert seg.resBlock5.pool.weight[3, 2, 1, 0, 400] == src("resBlock5.pool")[2, 1, 0, 400, 3]
    assert seg.logits.weight[19, 0, 1, 2, 127] == src("logits")[0, 1, 2, 127, 19]
    assert torch.equal(seg.ReconNet.conv1_3.weight, src("ReconNet.conv1_3").permute(4, 0, 1, 2, 3))
    assert torch.equal(seg.logits.bias, official["cylinder_3d_spconv_seg.logits.bias"])
    assert torch.equal(bare.cylinder_3d_generator.PPmodel[10].weight, official["cylinder_3d_generator.PPmodel.10.weight"])
    assert int(seg.upBlock2.bn3.num_batches_tracked) == 7
    # and back to the official layout, bit for bit
    exported = export_official_state_dict(bare)
    assert exported.keys() == official.keys() and all(torch.equal(exported[k], official[k]) for k in official)

    # DataParallel prefixes
    wrapped = {f"module.{k}": v for k, v in official.items()}
    assert load_official_cylinder3d(Cylinder3D(width=1.0, point_refinement=False), wrapped, strict=True).missing_keys == []


def test_refinement_head_strict_policy_reports_exactly_its_keys():
    official = synthetic_official_state_dict(c=16, f=16, seed=3)
    model = Cylinder3D(width=0.5)
    with pytest.raises(KeyError, match="point_refinement"):
        load_official_cylinder3d(model, official, strict=True)
    before = {k: v.clone() for k, v in model.point_refinement.state_dict().items()}
    report = load_official_cylinder3d(model, official, strict=ALLOW_MISSING_REFINEMENT)
    refinement_keys = sorted(k for k in model.state_dict() if k.startswith("point_refinement."))
    assert report.missing_keys == refinement_keys and len(refinement_keys) == 4 * 5 + 3 * 2 + 2
    assert report.unexpected_keys == []
    assert all(torch.equal(before[k], v) for k, v in model.point_refinement.state_dict().items())
    # any other missing or unexpected key still fails under the relaxed policy
    broken = dict(official)
    broken.pop("cylinder_3d_spconv_seg.upBlock1.bn2.running_var")
    with pytest.raises(KeyError, match="upBlock1.bn2.running_var"):
        load_official_cylinder3d(Cylinder3D(width=0.5), broken, strict=ALLOW_MISSING_REFINEMENT)
    with pytest.raises(KeyError, match="extra"):
        load_official_cylinder3d(Cylinder3D(width=0.5), official | {"extra.weight": torch.zeros(1)}, strict=ALLOW_MISSING_REFINEMENT)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_official_cylinder3d(Cylinder3D(width=1.0, point_refinement=False), official, strict=True)


def test_checkpoint_file_and_spconv2_layout_round_trip(tmp_path: Path):
    official = synthetic_official_state_dict(c=16, f=16, seed=5)
    path = tmp_path / "model_save.pt"
    torch.save(official, path)
    model, report = cylinder3d_from_official(path)
    assert report.layout == "spconv1" and model.init_size == 16 and not model.has_point_refinement
    # spconv 2.x checkpoint (KRSC): passes through unchanged
    krsc, layout = convert_official_state_dict(official)
    assert layout == "spconv1" and detect_conv_layout(krsc) == "spconv2"
    again = Cylinder3D(width=0.5, point_refinement=False)
    assert load_official_cylinder3d(again, krsc, strict=True).layout == "spconv2"
    assert all(torch.equal(again.state_dict()[k], model.state_dict()[k]) for k in krsc)
    # a harness checkpoint with the refinement head loads strictly into a fresh model
    full = Cylinder3D(width=0.5)
    torch.save(full.state_dict(), tmp_path / "harness.pt")
    rebuilt, report = cylinder3d_from_official(tmp_path / "harness.pt", strict=True)
    assert rebuilt.has_point_refinement and report.missing_keys == [] and report.layout == "spconv2"


# ----------------------------------------------------------------------------- forward / backward
@pytest.mark.real_data
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "nominal"])
def test_student_forward_backward_on_real_crop(crop_batch, legacy):
    torch.manual_seed(0)
    model = Cylinder3D(width=0.5, legacy_spconv1_keys=legacy)
    out = model(crop_batch)
    n, m = crop_batch.point_features.shape[0], crop_batch.voxel_coords.shape[0]
    assert n > 5000 and m > 1000
    assert out.point_logits.shape == (n, 20) and out.voxel_logits.shape == (m, 20)
    assert torch.isfinite(out.point_logits).all() and torch.isfinite(out.voxel_logits).all()
    _loss(out).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{name} gets no gradient"
    for block in range(4):
        conv3 = getattr(model.cylinder_3d_spconv_seg, f"upBlock{block}").conv3
        grad = conv3.weight.grad.reshape(conv3.out_channels, 27, conv3.in_channels)
        assert grad[:, :9].abs().sum() > 0
        if legacy:  # spconv-1: the (1,3,3) map of key "upN" indexes only slices 0..8
            assert torch.count_nonzero(grad[:, 9:]) == 0
        else:
            assert (grad[:, 9:].abs().sum(dim=(0, 2)) > 0).sum() >= 12  # most of the other 18 offsets have pairs


@pytest.mark.real_data
def test_teacher_forward_backward_on_real_crop(tiny_batch):
    torch.manual_seed(0)
    model = Cylinder3D(width=1.0)
    out = model(tiny_batch)
    assert out.point_logits.shape == (tiny_batch.point_features.shape[0], 20)
    assert out.voxel_logits.shape == (tiny_batch.voxel_coords.shape[0], 20)
    _loss(out).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert torch.count_nonzero(model.cylinder_3d_spconv_seg.upBlock0.conv3.weight.grad.reshape(512, 27, 512)[:, 9:]) == 0


@pytest.mark.real_data
def test_without_refinement_point_logits_are_voxel_logits(tiny_batch):
    torch.manual_seed(0)
    model = Cylinder3D(width=0.5, point_refinement=False).eval()
    with torch.no_grad():
        out = model(tiny_batch)
    assert torch.equal(out.point_logits, out.voxel_logits[tiny_batch.point_to_voxel])
    assert not any(k.startswith("point_refinement") for k in model.state_dict())


def test_generator_max_pools_points_per_voxel():
    torch.manual_seed(0)
    model = Cylinder3D(width=0.5).double().eval()
    gen = model.cylinder_3d_generator
    feats = torch.randn(50, 9, dtype=torch.float64)
    point_to_voxel = torch.randint(0, 7, (50,))
    point_to_voxel[point_to_voxel == 3] = -1  # a point without voxel and an empty voxel
    per_point, per_voxel = gen(feats, point_to_voxel, 8)
    mlp = gen.PPmodel(feats)
    expected = torch.zeros(8, 256, dtype=torch.float64)
    for v in range(8):
        rows = mlp[point_to_voxel == v]
        if len(rows):
            expected[v] = rows.max(dim=0).values
    assert torch.equal(per_point, mlp)
    torch.testing.assert_close(per_voxel, gen.fea_compression(expected), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- backends
def _run(model: Cylinder3D, batch: BackboneInput, backend: str):
    set_backend(model, backend)
    model.zero_grad(set_to_none=True)
    out = model(batch)
    _loss(out).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return out, grads


@pytest.mark.real_data
@pytest.mark.parametrize("legacy", [False, True], ids=["nominal", "legacy"])
def test_torchref_equals_spconv(tiny_batch, legacy):
    if not backend_available("spconv"):
        pytest.skip("spconv (spconv-cu126 2.3.8) is not importable; install pvkd-harness[spconv]")
    torch.manual_seed(0)
    model = Cylinder3D(width=0.5, legacy_spconv1_keys=legacy).double()
    ref_out, ref_grads = _run(model, tiny_batch, "torchref")
    sp_out, sp_grads = _run(model, tiny_batch, "spconv")
    assert {m.last_backend for m in model.modules() if hasattr(m, "last_backend")} == {"spconv"}
    for ref, other in ((ref_out.point_logits, sp_out.point_logits), (ref_out.voxel_logits, sp_out.voxel_logits)):
        assert (ref - other).abs().max() <= 1e-10 * max(1.0, ref.abs().max().item())
    for name, ref in ref_grads.items():
        diff = (ref - sp_grads[name]).abs().max().item()
        assert diff <= 1e-10 * max(1.0, ref.abs().max().item()), f"{name}: {diff}"


# ----------------------------------------------------------------------------- taps and batching
@pytest.mark.real_data
def test_tap_points_capture_documented_shapes_without_changing_forward(tiny_batch):
    torch.manual_seed(0)
    model = Cylinder3D(width=0.5).eval()
    c, n, m = model.init_size, tiny_batch.point_features.shape[0], tiny_batch.voxel_coords.shape[0]
    with torch.no_grad():
        plain = model(tiny_batch)
    captured: dict[str, object] = {}
    snapshots: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, args, output):
            captured[name] = output
            snapshots[name] = (output.feats if isinstance(output, SparseTensor) else output).clone()

        return fn

    modules = dict(model.named_modules())
    handles = [modules[path].register_forward_hook(hook(name)) for name, path in model.tap_points.items()]
    with torch.no_grad():
        hooked = model(tiny_batch)
    for handle in handles:
        handle.remove()
    assert torch.equal(plain.point_logits, hooked.point_logits) and torch.equal(plain.voxel_logits, hooked.voxel_logits)
    assert set(captured) == {"point_logits", "voxel_logits", "point_features", "voxel_features"} | {
        f"{kind}.{i}" for kind in ("encoder", "decoder") for i in range(4)
    }
    for name in ("point_logits", "voxel_logits", "point_features", "voxel_features"):
        assert isinstance(modules[model.tap_points[name]], TapPoint)
    assert torch.equal(captured["point_logits"], hooked.point_logits)
    assert torch.equal(captured["voxel_logits"], hooked.voxel_logits)
    assert captured["point_features"].shape == (n, 64)
    assert captured["voxel_features"].shape == (m, 4 * c)
    encoder = [(2 * c, (2, 2, 2), (240, 180, 16)), (4 * c, (4, 4, 4), (120, 90, 8)), (8 * c, (8, 8, 4), (60, 45, 8)), (16 * c, (16, 16, 4), (30, 23, 8))]
    decoder = [(16 * c, (8, 8, 4), (60, 45, 8)), (8 * c, (4, 4, 4), (120, 90, 8)), (4 * c, (2, 2, 2), (240, 180, 16)), (2 * c, (1, 1, 1), (480, 360, 32))]
    for kind, table in (("encoder", encoder), ("decoder", decoder)):
        for i, (channels, stride, shape) in enumerate(table):
            tensor = captured[f"{kind}.{i}"]
            assert isinstance(tensor, SparseTensor)
            assert tensor.num_channels == channels and tensor.stride == stride and tensor.spatial_shape == shape, (kind, i)
            assert tensor.feats.shape[0] == tensor.coords.shape[0]
    assert torch.equal(captured["decoder.3"].coords, tiny_batch.voxel_coords)
    # the snapshots were not modified in place after the hook ran
    for name, snapshot in snapshots.items():
        value = captured[name]
        assert torch.equal(value.feats if isinstance(value, SparseTensor) else value, snapshot), name


@pytest.mark.real_data
def test_batch_of_two_scans_equals_single_scans(frames):
    scans = [cylindrical_voxelize(_crop(frame, 10.0, 0.5)) for frame in frames]
    torch.manual_seed(0)
    model = Cylinder3D(width=0.5).double().eval()
    with torch.no_grad():  # give BN non-trivial running statistics so eval mode is not an identity
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    batch = collate_scans(scans)
    assert batch.batch_size == 2 and set(batch.voxel_coords[:, 0].tolist()) == {0, 1}
    with torch.no_grad():
        both = model(batch)
        singles = [model(collate_scans([scan])) for scan in scans]
    n0, m0 = scans[0].num_points, scans[0].num_voxels
    torch.testing.assert_close(both.point_logits[:n0], singles[0].point_logits, rtol=0, atol=1e-10)
    torch.testing.assert_close(both.point_logits[n0:], singles[1].point_logits, rtol=0, atol=1e-10)
    torch.testing.assert_close(both.voxel_logits[:m0], singles[0].voxel_logits, rtol=0, atol=1e-10)
    torch.testing.assert_close(both.voxel_logits[m0:], singles[1].voxel_logits, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- official code (opt-in)
class _SharedIndiceDict(dict):
    """spconv 1.x passes one ``indice_dict`` by reference through the whole network; spconv 2.x copies
    it in every conv (``indice_dict = input.indice_dict.copy()``), which would hide a key created on
    a conv's *output* from a later conv on its *input* (e.g. ``conv2(x)`` after ``conv1(x)``)."""

    def copy(self):
        return self


@pytest.mark.real_data
@pytest.mark.parametrize("legacy", [False, True], ids=["nominal", "legacy"])
def test_equals_official_segmentator_run_on_spconv(tiny_batch, legacy, monkeypatch):
    """The official ``Asymm_3d_spconv`` source, run on spconv 2.x Native, gives our voxel logits and gradients.

    Opt-in: set ``CYLINDER3D_SRC`` to a checkout of xinge008/Cylinder3D. Legacy mode runs the
    official code under spconv 1.x semantics: one shared ``indice_dict``, subm reuse of a key
    whatever the kernel size, and filters indexed by the stored map's offsets (the first
    ``K_map`` slices of the flattened weight). Nominal mode gives each kernel geometry its own key.
    """
    import importlib.util
    import os
    import sys
    import types

    src = os.environ.get("CYLINDER3D_SRC")
    if not src:
        pytest.skip("set CYLINDER3D_SRC to a xinge008/Cylinder3D checkout to compare with the official network code")
    if not backend_available("spconv"):
        pytest.skip("spconv (spconv-cu126 2.3.8) is not importable")
    import spconv.pytorch as sp
    from spconv.core import ConvAlgo
    from spconv.pytorch import conv as sp_conv

    def factory(cls):
        return lambda *args, **kwargs: cls(*args, **kwargs, algo=ConvAlgo.Native)

    shim = types.ModuleType("spconv")
    shim.SubMConv3d, shim.SparseConv3d = factory(sp.SubMConv3d), factory(sp.SparseConv3d)
    shim.SparseInverseConv3d = factory(sp.SparseInverseConv3d)
    shim.SparseConvTensor = lambda f, i, s, b: sp.SparseConvTensor(f, i, s, b, indice_dict=_SharedIndiceDict() if legacy else None)
    monkeypatch.setitem(sys.modules, "spconv", shim)
    # the official code assigns ``x.features = ...`` (spconv 1.x API) and densifies the logits
    monkeypatch.setattr(sp.SparseConvTensor, "features", property(lambda t: t._features, lambda t, v: setattr(t, "_features", v)))
    monkeypatch.setattr(sp.SparseConvTensor, "dense", lambda t, channels_first=True: t)
    if legacy:
        original = sp_conv.SparseConvolution._conv_forward

        def spconv1_forward(self, training, x, weight, bias, *args, **kwargs):
            data = x.indice_dict.get(self.indice_key) if self.indice_key is not None else None
            if self.subm and data is not None and int(data.indice_pair_num.shape[0]) != weight[0, ..., 0].numel():
                used = int(data.indice_pair_num.shape[0])
                flat = weight.reshape(weight.shape[0], -1, weight.shape[-1])[:, :used]
                weight = flat.reshape(weight.shape[0], *data.ksize, weight.shape[-1]).contiguous()
            return original(self, training, x, weight, bias, *args, **kwargs)

        monkeypatch.setattr(sp_conv.SparseConvolution, "_check_subm_reuse_valid", lambda *a, **k: None)
        monkeypatch.setattr(sp_conv.SparseConvolution, "_conv_forward", spconv1_forward)
    spec = importlib.util.spec_from_file_location("_official_segmentator", Path(src) / "network" / "segmentator_3d_asymm_spconv.py")
    official_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official_module)
    if not legacy:
        def keyed(make, tag):
            return lambda i, o, stride=1, indice_key=None: make(i, o, stride=stride, indice_key=f"{indice_key}_{tag}")

        for name, tag in (("conv3x3", "333"), ("conv1x3", "133"), ("conv3x1", "313"), ("conv3x1x1", "311"), ("conv1x3x1", "131"), ("conv1x1x3", "113")):
            setattr(official_module, name, keyed(getattr(official_module, name), tag))

    torch.manual_seed(0)
    model = Cylinder3D(width=0.5, legacy_spconv1_keys=legacy).double()
    official = official_module.Asymm_3d_spconv([480, 360, 32], num_input_features=16, init_size=16, nclasses=20).double()
    official.load_state_dict(model.cylinder_3d_spconv_seg.state_dict(), strict=True)
    captured = {}
    model.cylinder_3d_spconv_seg.register_forward_hook(lambda m, args, out: captured.update(x=args[0]))
    out = model(tiny_batch)
    x = captured["x"]
    theirs = official(x.feats.detach(), x.coords, 1)
    assert torch.equal(theirs.indices, tiny_batch.voxel_coords)
    scale = max(1.0, out.voxel_logits.abs().max().item())
    assert (theirs.features - out.voxel_logits).abs().max() <= 1e-10 * scale
    weights = torch.randn(out.voxel_logits.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (theirs.features * weights).sum().backward()
    (out.voxel_logits * weights).sum().backward()
    official_params = dict(official.named_parameters())
    for name, param in model.cylinder_3d_spconv_seg.named_parameters():
        ref = official_params[name].grad
        assert (param.grad - ref).abs().max() <= 1e-10 * max(1.0, ref.abs().max().item()), name
