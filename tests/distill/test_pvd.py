"""PVD (``harness.distill.pvd``) and its supervoxel sampling on tiny deterministic CPU batches."""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.backbones.base import BackboneInput, collate_scans
from harness.data.labelmap import load_label_map
from harness.distill.base import DISTILLERS, DistillContext, paper_coefficients
from harness.distill.pvd import PVD, TABLE2_ROWS, TABLE3_ROWS, table2_coefficients
from harness.distill.recorder import TapValue
from harness.distill.supervoxel import (SupervoxelPartition, class_rarity, f_class, gather_members, minority_score,
                                        sample_supervoxels)
from harness.sparse import scatter_mean
from harness.voxelize.cubic import cubic_voxelize
from harness.voxelize.cylindrical import CylindricalGrid, cylindrical_voxelize

GOLDEN = Path(__file__).parent / "golden" / "pvd.json"
SUPPLEMENT = Path(os.environ.get("PVKD_PAPER_TEXTS") or "/nonexistent: set PVKD_PAPER_TEXTS") / "pvkd-supplement.txt"
KITTI = load_label_map("semantickitti")
FREQ = torch.tensor(KITTI.content, dtype=torch.float32)
MOTORCYCLIST, VEGETATION, ROAD, CAR = (KITTI.class_names.index(n)
                                      for n in ("motorcyclist", "vegetation", "road", "car"))
GRID = CylindricalGrid()
SV_RHO = 120 * GRID.intervals[0]   # 12.53 m
SV_PHI = 60 * GRID.intervals[1]    # 1.05 rad
SV_Z = 8 * GRID.intervals[2]       # 1.55 m


# ---------------------------------------------------------------------------------------------- helpers
def points_in(rng, ring: int, sector: int, layer: int, count: int) -> np.ndarray:
    """(count, 4) points strictly inside supervoxel (ring, sector, layer) of the default partition."""
    rho = rng.uniform(ring * SV_RHO + 0.5, (ring + 1) * SV_RHO - 0.5, count)
    phi = rng.uniform(-math.pi + sector * SV_PHI + 0.02, min(-math.pi + (sector + 1) * SV_PHI, math.pi) - 0.02, count)
    z = rng.uniform(-4 + layer * SV_Z + 0.05, -4 + (layer + 1) * SV_Z - 0.05, count)
    return np.c_[rho * np.cos(phi), rho * np.sin(phi), z, rng.random(count)].astype(np.float32)


def cell_points(rng, cells) -> tuple[np.ndarray, np.ndarray]:
    """cells: (ring, sector, layer, count, label or labels cycled over the points) -> points, labels."""
    pts = [points_in(rng, ring, sector, layer, count) for ring, sector, layer, count, _ in cells]
    labs = [np.resize(np.asarray(label, dtype=np.int64), count) for _, _, _, count, label in cells]
    return np.concatenate(pts), np.concatenate(labs)


def random_points(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    rho, phi, z = rng.uniform(1.0, 49.0, n), rng.uniform(-math.pi, math.pi, n), rng.uniform(-3.9, 1.9, n)
    return np.c_[rho * np.cos(phi), rho * np.sin(phi), z, rng.random(n)].astype(np.float32), rng.integers(0, 20, n)


def voxelized(points: np.ndarray, labels: np.ndarray, cubic: bool = False):
    return (cubic_voxelize(points, labels) if cubic else cylindrical_voxelize(points, labels)), labels


def scan_from(rng, cells, cubic: bool = False):
    """A scan whose points lie in the given supervoxels; returns (VoxelizedScan, labels)."""
    return voxelized(*cell_points(rng, cells), cubic)


def random_scan(rng, n: int = 300, cubic: bool = False):
    return voxelized(*random_points(rng, n), cubic)


def batch_of(scans) -> BackboneInput:
    return collate_scans([s for s, _ in scans], [l for _, l in scans])


def make_taps(batch: BackboneInput, seed: int, point_width: int = 8, voxel_width: int = 8, classes: int = 20,
              grad: bool = True) -> dict[str, TapValue]:
    g = torch.Generator().manual_seed(seed)
    n, m = batch.point_features.shape[0], batch.voxel_coords.shape[0]
    shapes = {"point_logits": (n, classes), "voxel_logits": (m, classes),
              "point_features": (n, point_width), "voxel_features": (m, voxel_width)}
    return {k: TapValue(torch.randn(*s, generator=g).requires_grad_(grad)) for k, s in shapes.items()}


def clone_taps(taps, grad: bool = True):
    return {k: TapValue(v.feats.detach().clone().requires_grad_(grad)) for k, v in taps.items()}


def pvd(backbone: str = "cylinder3d", **options) -> PVD:
    return PVD(DistillContext(backbone, 20, class_frequency=FREQ), **options)


def values(terms) -> dict[str, float]:
    return {k: v.detach().item() for k, v in terms.items()}


def permute_points(batch: BackboneInput, perm: torch.Tensor) -> BackboneInput:
    fields = {k: getattr(batch, k) for k in batch.__dataclass_fields__}
    for k in ("point_features", "point_coords", "point_to_voxel", "point_batch", "point_labels", "point_xyz"):
        fields[k] = fields[k][perm]
    return BackboneInput(**fields)


# ---------------------------------------------------------------------------------------------- contract
def test_registered_with_the_paper_coefficients():
    assert DISTILLERS.get("pvd") is PVD
    d = pvd()
    assert d.terms == ("out_point", "out_voxel", "aff_point", "aff_voxel")
    assert d.coefficients == {"out_point": 0.1, "out_voxel": 0.15, "aff_point": 0.15, "aff_voxel": 0.25}
    assert pvd("spvcnn").coefficients == paper_coefficients("pvd", "spvcnn")
    assert d.partition.num_supervoxels == 96 and d.partition.divisions == (4, 6, 4)
    assert d.config["K"] == 5 and d.config["N_p"] == d.config["N_v"] == 256


@pytest.mark.parametrize("backbone", ["cylinder3d", "spvcnn"])
def test_zero_loss_when_teacher_equals_student(backbone):
    rng = np.random.default_rng(0)
    batch = batch_of([random_scan(rng, cubic=backbone != "cylinder3d") for _ in range(2)])
    taps = make_taps(batch, 0)
    terms = pvd(backbone, K=4, N_p=16, N_v=16)(taps, clone_taps(taps, grad=False), batch)
    assert set(terms) == {"out_point", "out_voxel", "aff_point", "aff_voxel"}
    for name, value in terms.items():
        assert value.dtype == torch.float32 and value.dim() == 0
        assert abs(value.item()) < 1e-6, name


@pytest.mark.parametrize("backbone", ["cylinder3d", "minkunet"])
def test_gradients_reach_only_the_student(backbone):
    rng = np.random.default_rng(1)
    batch = batch_of([random_scan(rng, cubic=backbone != "cylinder3d") for _ in range(2)])
    student, teacher = make_taps(batch, 1), make_taps(batch, 2, voxel_width=16)  # teacher wider, like 4c vs 2c
    terms = pvd(backbone, K=4, N_p=16, N_v=16)(student, teacher, batch)
    assert all(v.item() > 0 for v in terms.values())
    sum(terms.values()).backward()
    # cubic backbones: out_voxel averages the *point* logits over cylindrical cells (voxel_logits_source)
    used = set(student) - ({"voxel_logits"} if backbone != "cylinder3d" else set())
    for name in used:
        grad = student[name].feats.grad
        assert grad is not None and torch.count_nonzero(grad) > 0, name
    assert all(student[name].feats.grad is None for name in set(student) - used)
    for tap in teacher.values():
        assert tap.feats.grad is None


def test_each_term_moves_only_its_own_student_tap():
    rng = np.random.default_rng(2)
    batch = batch_of([random_scan(rng)])
    student, teacher = make_taps(batch, 3), make_taps(batch, 4, grad=False)
    tap_of = {"out_point": "point_logits", "out_voxel": "voxel_logits", "aff_point": "point_features",
              "aff_voxel": "voxel_features"}
    for term, tap in tap_of.items():
        s = clone_taps(student)
        out = pvd(components=[term], K=3, N_p=8, N_v=8)(s, teacher, batch)
        assert list(out) == [term]
        out[term].backward()
        assert [k for k, v in s.items() if v.feats.grad is not None] == [tap]


def test_out_point_is_the_hand_computed_kl_summed_over_classes():
    rng = np.random.default_rng(3)
    batch = batch_of([scan_from(rng, [(0, 0, 0, 2, VEGETATION)])])
    student = make_taps(batch, 0, classes=2)
    teacher = clone_taps(student, grad=False)
    student["point_logits"] = TapValue(torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]]))
    teacher["point_logits"] = TapValue(torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]]))
    kl = [0.5 * math.log(4 / 3), 0.8 * math.log(1.6) + 0.2 * math.log(0.4)]
    d = PVD(DistillContext("cylinder3d", 2), components=["out_point"])  # the harness's KL convention: 1/N
    assert d(student, teacher, batch)["out_point"].item() == pytest.approx(sum(kl) / 2, rel=1e-6)
    d = PVD(DistillContext("cylinder3d", 2), components=["out_point"], kl_class_reduction="mean")
    assert d(student, teacher, batch)["out_point"].item() == pytest.approx(sum(kl) / 2 / 2, rel=1e-6)  # 1/(N C)


def test_aff_point_is_the_hand_computed_three_point_affinity():
    rng = np.random.default_rng(4)
    batch = batch_of([scan_from(rng, [(1, 2, 1, 3, CAR)])])
    student, teacher = make_taps(batch, 0), make_taps(batch, 1, grad=False)
    student["point_features"] = TapValue(torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0]]))   # all parallel
    teacher["point_features"] = TapValue(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [2.0, 2.0, 0.0]]))
    h = 1 / math.sqrt(2)
    expected = (2 * 1.0 + 4 * (1 - h) ** 2) / 9
    for n_p in (3, 64):  # unpadded and padded
        out = pvd(components=["aff_point"], K=5, N_p=n_p)(student, teacher, batch)["aff_point"]
        assert out.item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------- invariances
def test_invariant_to_permuting_points():
    rng = np.random.default_rng(5)
    batch = batch_of([scan_from(rng, [(0, 0, 1, 20, VEGETATION), (1, 3, 2, 15, [CAR, ROAD, MOTORCYCLIST] * 5),
                                      (3, 5, 3, 12, ROAD), (2, 1, 0, 9, 0)]) for _ in range(2)])
    student, teacher = make_taps(batch, 6), make_taps(batch, 7, grad=False)
    reference = values(pvd(K=3, N_p=32, N_v=32)(student, teacher, batch))  # K < occupied: sampling is exercised
    perm = torch.from_numpy(np.random.default_rng(0).permutation(batch.point_features.shape[0]))
    permuted = {k: TapValue(v.feats[perm] if k.startswith("point") else v.feats) for k, v in student.items()}
    permuted_t = {k: TapValue(v.feats[perm] if k.startswith("point") else v.feats) for k, v in teacher.items()}
    got = values(pvd(K=3, N_p=32, N_v=32)(permuted, permuted_t, permute_points(batch, perm)))
    assert got == pytest.approx(reference, rel=1e-5)


def test_batch_of_two_is_the_mean_of_the_single_scans():
    rng = np.random.default_rng(8)
    scan_a = scan_from(rng, [(0, 1, 1, 25, VEGETATION), (2, 2, 2, 10, [CAR, MOTORCYCLIST])])
    scan_b = scan_from(rng, [(1, 4, 0, 7, ROAD), (3, 0, 3, 30, VEGETATION), (0, 5, 2, 5, CAR)])
    single = []
    taps = {}
    for i, scan in enumerate((scan_a, scan_b)):
        b = batch_of([scan])
        taps[i] = (make_taps(b, 10 + i), make_taps(b, 20 + i, voxel_width=12, grad=False))
        single.append(values(pvd(K=8, N_p=64, N_v=64)(*taps[i], b)))
    both = batch_of([scan_a, scan_b])
    cat = [{k: TapValue(torch.cat([taps[0][side][k].feats, taps[1][side][k].feats])) for k in taps[0][side]}
           for side in (0, 1)]
    got = values(pvd(K=8, N_p=64, N_v=64)(cat[0], cat[1], both))
    assert got == pytest.approx({k: (single[0][k] + single[1][k]) / 2 for k in got}, rel=1e-5)


def test_padding_gives_the_unpadded_value():
    rng = np.random.default_rng(9)
    batch = batch_of([scan_from(rng, [(2, 3, 2, 10, CAR)])])
    student, teacher = make_taps(batch, 30), make_taps(batch, 31, voxel_width=12, grad=False)
    n, m = batch.point_features.shape[0], batch.voxel_coords.shape[0]

    def reference(fs, ft):
        a = lambda f: torch.nn.functional.normalize(f, dim=1) @ torch.nn.functional.normalize(f, dim=1).T  # noqa: E731
        return ((a(fs) - a(ft)) ** 2).mean().item()

    exact = pvd(components=["aff_point", "aff_voxel"], K=1, N_p=n, N_v=m)(student, teacher, batch)
    padded = pvd(components=["aff_point", "aff_voxel"], K=1, N_p=4 * n, N_v=4 * m)(student, teacher, batch)
    assert exact["aff_point"].item() == pytest.approx(reference(student["point_features"].feats.detach(),
                                                                teacher["point_features"].feats), rel=1e-5)
    assert exact["aff_voxel"].item() == pytest.approx(reference(student["voxel_features"].feats.detach(),
                                                                teacher["voxel_features"].feats), rel=1e-5)
    assert values(padded) == pytest.approx(values(exact), rel=1e-6)


def test_points_without_a_voxel_are_ignored():
    rng = np.random.default_rng(10)
    batch = batch_of([random_scan(rng, n=200, cubic=True)])
    student, teacher = make_taps(batch, 40), make_taps(batch, 41, grad=False)
    reference = values(pvd("spvcnn", K=4, N_p=16, N_v=16)(student, teacher, batch))
    dropped = torch.zeros(batch.point_features.shape[0], dtype=torch.bool)
    dropped[::7] = True  # extra points whose voxel was "capped away": their logits are placeholders
    fields = {k: getattr(batch, k) for k in batch.__dataclass_fields__}
    extra = {k: torch.cat([fields[k], fields[k][dropped]]) for k in
             ("point_features", "point_coords", "point_batch", "point_labels", "point_xyz")}
    extra["point_to_voxel"] = torch.cat([batch.point_to_voxel, torch.full((int(dropped.sum()),), -1)])
    big = BackboneInput(**{**fields, **extra})
    widen = lambda taps: {k: TapValue(torch.cat([v.feats, 100 * torch.randn_like(v.feats[dropped])])  # noqa: E731
                                      if k.startswith("point") else v.feats) for k, v in taps.items()}
    got = values(pvd("spvcnn", K=4, N_p=16, N_v=16)(widen(student), widen(teacher), big))
    assert got == pytest.approx(reference, rel=1e-5)


def test_amp_inputs_give_float32_terms():
    rng = np.random.default_rng(11)
    batch = batch_of([random_scan(rng, n=150)])
    student, teacher = make_taps(batch, 50), make_taps(batch, 51, grad=False)
    half = lambda taps: {k: TapValue(v.feats.to(torch.bfloat16)) for k, v in taps.items()}  # noqa: E731
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = pvd(K=3, N_p=16, N_v=16)(half(student), half(teacher), batch)
    assert all(v.dtype == torch.float32 for v in terms.values())


def test_native_and_cylindrical_voxel_logits_agree_when_voxels_average_their_points():
    rng = np.random.default_rng(12)
    batch = batch_of([random_scan(rng, n=400) for _ in range(2)])
    student, teacher = make_taps(batch, 60), make_taps(batch, 61, grad=False)
    m = batch.voxel_coords.shape[0]
    for taps in (student, teacher):
        taps["voxel_logits"] = TapValue(scatter_mean(taps["point_logits"].feats.detach(), batch.point_to_voxel, m))
    native = pvd(components=["out_voxel"])(student, teacher, batch)["out_voxel"]
    cylindrical = pvd(components=["out_voxel"], voxel_logits_source="cylindrical")(student, teacher, batch)["out_voxel"]
    assert cylindrical.item() == pytest.approx(native.item(), rel=1e-5)


def test_xyz_partition_matches_the_cylindrical_voxel_index():
    rng = np.random.default_rng(13)
    batch = batch_of([random_scan(rng, n=2000)])
    part = SupervoxelPartition()
    assert torch.equal(part.cell_index_from_xyz(batch.point_xyz), batch.point_coords[:, 1:].long())
    assert torch.equal(pvd(partition_from="xyz").point_supervoxels(batch), pvd().point_supervoxels(batch))


# ---------------------------------------------------------------------------------------------- sampling
def test_rare_class_supervoxel_outweighs_a_common_only_one():
    rng = np.random.default_rng(14)
    batch = batch_of([scan_from(rng, [(1, 0, 2, 30, [VEGETATION] * 29 + [MOTORCYCLIST]),
                                      (1, 1, 2, 30, [VEGETATION, ROAD] * 15),
                                      (1, 2, 2, 30, 0)])])  # same ring and layer: same distance
    part = SupervoxelPartition()
    ids = [(1 * 6 + s) * 4 + 2 for s in range(3)]
    for strategy in ("difficulty", "class_only"):
        w = pvd(sampling=strategy).sampling_weights(batch)[0]
        assert w[ids[0]] > 2 * w[ids[1]], strategy
        assert w[ids[1]] > w[ids[2]] > 0  # unlabelled: N_minor = 1, below vegetation+road's ~0.97
    fields = {k: getattr(batch, k) for k in batch.__dataclass_fields__}
    voxel_only = BackboneInput(**{**fields, "point_labels": None})  # falls back to the voxels' majority labels
    w = pvd().sampling_weights(voxel_only)[0]
    assert w[ids[0]] > 2 * w[ids[1]]
    unlabelled = BackboneInput(**{**fields, "point_labels": None, "voxel_labels": None})  # class factor 1
    assert torch.equal(pvd().sampling_weights(unlabelled), pvd(sampling="distance_only").sampling_weights(batch))
    rarity = class_rarity(FREQ)
    assert rarity[MOTORCYCLIST] == 0 and rarity[VEGETATION] == 1 and rarity[0] == 1
    d = part.centre_radius()[ids[0]].item()
    expected = (4 * math.exp(-2 * 0.0) + 1) * (1 + d / 50.0)
    assert pvd().sampling_weights(batch)[0, ids[0]].item() == pytest.approx(expected, rel=1e-6)


def test_minority_score_readings():
    rarity = torch.tensor([1.0, 0.2, 0.6, 1.0])
    labels = torch.tensor([1, 3, 2, 2, 0, 0])
    sv = torch.tensor([0, 0, 1, 1, 1, 2])
    assert minority_score(labels, sv, 4, rarity, "rarest").tolist() == pytest.approx([0.2, 0.6, 1.0, 1.0])
    assert minority_score(labels, sv, 4, rarity, "mean").tolist() == pytest.approx([0.6, 0.6, 1.0, 1.0])
    assert f_class(torch.tensor([0.0, 1.0]), 4.0, -2.0).tolist() == pytest.approx([5.0, 4 * math.exp(-2) + 1])
    assert class_rarity(torch.full((17,), 1 / 17)).tolist() == [1.0] * 17  # a uniform placeholder


def test_distance_and_random_strategies():
    rng = np.random.default_rng(15)
    batch = batch_of([scan_from(rng, [(0, 0, 1, 10, MOTORCYCLIST), (3, 0, 1, 10, VEGETATION), (2, 4, 0, 3, ROAD)])])
    ids = [(0 * 6 + 0) * 4 + 1, (3 * 6 + 0) * 4 + 1, (2 * 6 + 4) * 4 + 0]
    w = pvd(sampling="distance_only").sampling_weights(batch)[0]
    assert w[ids[1]] > w[ids[2]] > w[ids[0]] > 0 and torch.count_nonzero(w) == 3
    w = pvd(sampling="random").sampling_weights(batch)[0]
    assert w[ids].tolist() == [1.0, 1.0, 1.0] and torch.count_nonzero(w) == 3
    assert pvd(sampling="random", f_dist="linear").partition.max_radius == 50.0


def test_sampling_frequencies_follow_the_weights():
    rng = np.random.default_rng(16)
    batch = batch_of([scan_from(rng, [(0, 0, 1, 10, MOTORCYCLIST), (3, 2, 1, 10, VEGETATION),
                                      (1, 4, 0, 3, ROAD), (2, 5, 3, 4, [CAR, VEGETATION])])])
    w = pvd().sampling_weights(batch)[0]
    p = (w / w.sum()).double()
    draws = 3000
    picks = sample_supervoxels(w.expand(draws, -1).contiguous(), 1, torch.Generator().manual_seed(0))
    freq = torch.bincount(picks[:, 0], minlength=w.numel()).double() / draws
    assert torch.all(freq[w == 0] == 0)
    assert torch.all((freq - p).abs() <= 4 * torch.sqrt(p * (1 - p) / draws) + 1e-9)


def test_sampling_is_without_replacement_among_occupied_supervoxels():
    w = torch.tensor([[0.0, 1.0, 5.0, 0.0, 2.0], [0.0, 0.0, 0.0, 3.0, 0.0]])
    out = sample_supervoxels(w, 4, torch.Generator().manual_seed(0))
    assert sorted(out[0, :3].tolist()) == [1, 2, 4] and out[0, 3] == -1
    assert out[1].tolist() == [3, -1, -1, -1]
    d = pvd(K=2, seed=7)
    rng = np.random.default_rng(17)
    batch = batch_of([scan_from(rng, [(0, 0, 0, 5, ROAD), (1, 1, 1, 5, ROAD), (2, 2, 2, 5, ROAD)])])
    for _ in range(5):
        sampled = d.sample(batch).sampled[0]
        assert sampled.unique().numel() == 2 and torch.all(d.sampling_weights(batch)[0, sampled] > 0)


def test_members_are_capped_random_subsets_shared_by_both_networks():
    group = torch.tensor([0, 1, 0, 0, -1, 0, 1, 0, 2])
    index, mask = gather_members(group, 4, 3, torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [3, 2, 1, 0]
    chosen = index[0][mask[0]].tolist()
    assert len(set(chosen)) == 3 and set(chosen) <= {0, 2, 3, 5, 7}
    assert sorted(index[1][mask[1]].tolist()) == [1, 6] and index[2][mask[2]].tolist() == [8]
    seen = set()
    for seed in range(20):  # every member of an over-full group can be drawn
        idx, msk = gather_members(group, 4, 3, torch.Generator().manual_seed(seed))
        seen |= set(idx[0][msk[0]].tolist())
    assert seen == {0, 2, 3, 5, 7}


# ---------------------------------------------------------------------------------------------- options
def test_components_and_coefficient_rows():
    d = pvd(components=["aff_voxel", "out_point"])
    assert d.active_terms == ("out_point", "aff_voxel")
    assert pvd(coefficient_row=1).coefficients == dict.fromkeys(d.terms, 0.1)
    row = pvd(coefficient_row=5, coefficients={"aff_voxel": 0.3})
    assert row.coefficients == {"out_point": 0.15, "out_voxel": 0.1, "aff_point": 0.25, "aff_voxel": 0.3}
    assert row.coefficient_overrides == ["aff_point", "aff_voxel", "out_point", "out_voxel"]
    assert table2_coefficients(6) == paper_coefficients("pvd", "cylinder3d")  # Table 2 row 6 == Table 4
    with pytest.raises(ValueError):
        pvd(coefficient_row=7)
    with pytest.raises(ValueError):
        pvd(components=["out_points"])
    with pytest.raises(TypeError):
        pvd(k=3)
    with pytest.raises(ValueError, match="class frequencies"):
        PVD(DistillContext("cylinder3d", 20))
    PVD(DistillContext("cylinder3d", 20), sampling="random")  # no labels needed
    # uniform frequencies (a placeholder) are an error, never a silent distance-only sampling
    with pytest.raises(ValueError, match="uniform"):
        PVD(DistillContext("cylinder3d", 17, class_frequency=torch.full((17,), 1 / 16)))
    with pytest.raises(ValueError, match="ships no class frequencies"):  # nuScenes' yaml has no content
        PVD(DistillContext("cylinder3d", 17, dataset="nuscenes"), class_frequency="labelmap")
    PVD(DistillContext("cylinder3d", 17, class_frequency=torch.full((17,), 1 / 16)), sampling="distance_only")
    with pytest.raises(ValueError, match="17 entries"):
        PVD(DistillContext("cylinder3d", 20, class_frequency=torch.full((17,), 1 / 16)))
    kitti = PVD(DistillContext("cylinder3d", 20), class_frequency="labelmap")
    assert kitti.class_frequency == pytest.approx(KITTI.content.tolist())


def test_tables_match_the_supplement_text():
    if not SUPPLEMENT.exists():
        pytest.skip(f"supplement text not found at {SUPPLEMENT}")
    text = SUPPLEMENT.read_text()
    block = text.split("Table 2. Performance of using different loss coefficients for PVD.")[1].split("Table 3.")[0]
    numeric = [line for line in block.splitlines() if re.fullmatch(r"[\d.\s]+", line.strip() or "x")]
    rows = [tuple(float(x) for x in line.split()) for line in numeric]
    assert tuple(rows) == TABLE2_ROWS
    block3 = text.split("Table 3. Influence of each component on the final performance.")[1].split("ficients")[0]
    miou = [float(line.split()[-1]) for line in block3.splitlines() if re.search(r"\d\d\.\d\s*$", line)]
    assert miou == [m for _, m in TABLE3_ROWS]
    assert [c for c, _ in TABLE3_ROWS] == [(), ("out_point",), ("out_voxel",), ("aff_point",), ("aff_voxel",)]
    for line in text.split("Table 4.")[1].splitlines():
        parts = line.split()
        if parts and parts[0] in ("Cylinder3D", "SPVNAS", "MinkowskiNet"):
            backbone = {"Cylinder3D": "cylinder3d", "SPVNAS": "spvcnn", "MinkowskiNet": "minkunet"}[parts[0]]
            assert list(paper_coefficients("pvd", backbone).values()) == [float(x) for x in parts[-4:]]


# ---------------------------------------------------------------------------------------------- golden
def _golden_cases() -> dict[str, dict[str, float]]:
    cases = {}
    for name, backbone, cubic, options in (
        ("cylinder3d_default_readings", "cylinder3d", False, {"K": 3, "N_p": 8, "N_v": 8}),
        ("cylinder3d_tau2_sum_random", "cylinder3d", False,
         {"K": 2, "N_p": 6, "N_v": 6, "temperature": 2.0, "kl_class_reduction": "sum", "sampling": "random"}),
        ("spvcnn_xyz_partition", "spvcnn", True, {"K": 3, "N_p": 8, "N_v": 8}),
    ):
        rng = np.random.default_rng(2022)
        scans = []
        for _ in range(2):  # dense supervoxels (more members than N_p) plus scattered points
            dense = cell_points(rng, [(0, 0, 1, 20, [VEGETATION, CAR, MOTORCYCLIST]), (1, 2, 2, 14, [ROAD, VEGETATION]),
                                      (3, 4, 3, 9, CAR), (2, 5, 0, 6, 0)])
            scattered = random_points(rng, 60)
            points, labels = (np.concatenate([dense[i], scattered[i]]) for i in (0, 1))
            scans.append(voxelized(points, labels, cubic))
        batch = batch_of(scans)
        student, teacher = make_taps(batch, 1, 8, 8), make_taps(batch, 2, 8, 16, grad=False)
        cases[name] = {k: round(v, 9) for k, v in values(pvd(backbone, **options)(student, teacher, batch)).items()}
    return cases


def test_golden_values():
    got = _golden_cases()
    if os.environ.get("PVKD_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        note = ("PVD terms on tests/distill/test_pvd.py::_golden_cases; regenerate with "
                "PVKD_REGEN_GOLDEN=1 only after an intended change")
        GOLDEN.write_text(json.dumps({"_note": note, **got}, indent=2) + "\n")
        warnings.warn(f"PVKD_REGEN_GOLDEN=1: rewrote {GOLDEN}", stacklevel=1)
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN} is missing; generate it deliberately with PVKD_REGEN_GOLDEN=1")
    expected = {k: v for k, v in json.loads(GOLDEN.read_text()).items() if not k.startswith("_")}
    assert expected.keys() == got.keys()
    for case, terms in expected.items():
        assert got[case] == pytest.approx(terms, rel=1e-5, abs=1e-8), case


def test_sampling_generator_state_travels_in_the_state_dict():
    """A resumed run draws the same supervoxels: the generator state is part of the checkpoint."""
    import torch as _torch

    from harness.distill.base import SeededSampling

    class Sampler(SeededSampling, _torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seed, self._generators = 7, {}

    a = Sampler()
    a._generator(_torch.device("cpu"))
    _torch.rand(5, generator=a._generator(_torch.device("cpu")))  # advance
    b = Sampler()
    b.load_state_dict(a.state_dict())
    nxt_a = _torch.rand(3, generator=a._generator(_torch.device("cpu")))
    nxt_b = _torch.rand(3, generator=b._generator(_torch.device("cpu")))
    assert _torch.equal(nxt_a, nxt_b)
    assert not _torch.equal(nxt_b, _torch.rand(3, generator=Sampler()._generator(_torch.device("cpu"))))
