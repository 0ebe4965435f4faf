"""Scale and form of every distillation term against values computed independently in NumPy (float64).

Each test below fails under one plausible wrong implementation (named in its docstring): a KL over
classes that is averaged instead of summed in one method only, a reversed KL direction, a lost
tau^2, a doubled affinity, a KA adaptation term at the wrong scale. The convention these pin down
(the harness's one KL convention; KA eq. 3; M2SKD's class-summed affinity) is explained in the
docstrings of harness.distill.losses.site_kl, baselines.ka and harness.distill.m2skd.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.cd import CD
from baselines.ka import adaptation_loss
from baselines.kd import KD
from baselines.skd import SKD
from harness.distill.base import DistillContext
from harness.distill.losses import KL_CLASS_REDUCTION, site_kl
from harness.distill.m2skd import M2SKD
from harness.distill.pvd import PVD
from harness.distill.recorder import TapValue
from tests.baselines import context, line_grids, taps, voxel_batch
from tests.distill.test_pvd import FREQ, VEGETATION, batch_of, make_taps, scan_from
from tests.m2skd.test_m2skd import CTX, PERSON, ROAD, make_input
from tests.m2skd.test_m2skd import taps as m2skd_taps

BICYCLE = 2  # SemanticKITTI learning id 2, a hard class of M2SKD


# ---------------------------------------------------------------------------------------------- numpy references
def np_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_kl_rows(zs: np.ndarray, zt: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Per-row tau^2 * KL(softmax(zt/tau) || softmax(zs/tau)), summed over classes."""
    ps, pt = np_softmax(zs / tau, 1), np_softmax(zt / tau, 1)
    return tau * tau * (pt * (np.log(pt) - np.log(ps))).sum(axis=1)


def np_per_scan_mean(values: np.ndarray, scan: np.ndarray) -> float:
    return float(np.mean([values[scan == b].mean() for b in np.unique(scan)]))


def np_cosine(f: np.ndarray) -> np.ndarray:
    u = f / np.linalg.norm(f, axis=1, keepdims=True)
    return u @ u.T


def logits(rows: int, classes: int, seed: int, scale: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, (rows, classes))


def t32(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32, requires_grad=grad)


# ---------------------------------------------------------------------------------------------- one KL convention
def test_the_convention_is_kl_summed_over_classes():
    assert KL_CLASS_REDUCTION == "sum"
    zs, zt = logits(7, 5, 0), logits(7, 5, 1)
    scan = np.array([0, 0, 0, 1, 1, 1, 1])
    expected = np_per_scan_mean(np_kl_rows(zs, zt), scan)
    got = site_kl(t32(zs), t32(zt), torch.tensor(scan), 2)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert site_kl(t32(zs), t32(zt), torch.tensor(scan), 2, class_reduction="mean").item() == \
        pytest.approx(expected / 5, rel=1e-5)


@pytest.mark.parametrize("reduction, divisor", [(None, 1), ("sum", 1), ("mean", 4)])
def test_kd_and_skd_pixel_follow_the_convention(reduction, divisor):
    """Fails when KD or SKD's pixel term averages over classes by default (or ignores the option)."""
    zs, zt = logits(5, 4, 2), logits(5, 4, 3)
    expected = np_kl_rows(zs, zt).mean() / divisor
    batch = voxel_batch(line_grids([5]))
    options = {} if reduction is None else {"kl_class_reduction": reduction}
    kd = KD(context(num_classes=4), **options)
    assert kd(taps(voxel_logits=t32(zs, True)), taps(voxel_logits=t32(zt)), batch)["kd"].item() == \
        pytest.approx(expected, rel=1e-5)
    skd = SKD(context(num_classes=4), **options)
    feats = torch.randn(5, 2)
    out = skd(taps(voxel_logits=t32(zs, True), voxel_features=feats), taps(voxel_logits=t32(zt), voxel_features=feats),
              batch)
    assert out["pixel"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("reduction, divisor", [(None, 1), ("sum", 1), ("mean", 20)])
def test_pvd_output_terms_follow_the_convention(reduction, divisor):
    """Fails when PVD's out_point / out_voxel go back to 1/(N C) (20x smaller than KD at equal logits)."""
    rng = np.random.default_rng(4)
    batch = batch_of([scan_from(rng, [(0, 0, 1, 9, VEGETATION), (2, 3, 2, 7, VEGETATION)])])
    student, teacher = make_taps(batch, 0), make_taps(batch, 1, grad=False)
    n, m = batch.point_features.shape[0], batch.voxel_coords.shape[0]
    zs_p, zt_p, zs_v, zt_v = logits(n, 20, 5), logits(n, 20, 6), logits(m, 20, 7), logits(m, 20, 8)
    student["point_logits"], teacher["point_logits"] = TapValue(t32(zs_p, True)), TapValue(t32(zt_p))
    student["voxel_logits"], teacher["voxel_logits"] = TapValue(t32(zs_v, True)), TapValue(t32(zt_v))
    options = {} if reduction is None else {"kl_class_reduction": reduction}
    d = PVD(DistillContext("cylinder3d", 20, class_frequency=FREQ), components=["out_point", "out_voxel"], **options)
    out = d(student, teacher, batch)
    assert out["out_point"].item() == pytest.approx(np_kl_rows(zs_p, zt_p).mean() / divisor, rel=1e-5)
    assert out["out_voxel"].item() == pytest.approx(np_kl_rows(zs_v, zt_v).mean() / divisor, rel=1e-5)


def test_pvd_kl_direction_is_teacher_to_student():
    """Fails when PVD computes KL(student || teacher): the case is asymmetric by construction."""
    rng = np.random.default_rng(9)
    batch = batch_of([scan_from(rng, [(1, 1, 1, 6, VEGETATION)])])
    student, teacher = make_taps(batch, 0), make_taps(batch, 1, grad=False)
    n = batch.point_features.shape[0]
    zs = np.zeros((n, 20))
    zs[:, 3] = -2.0                            # student: avoids class 3
    zt = np.zeros((n, 20))
    zt[:, 3] = 4.0                             # teacher: peaked on class 3 (KL(T||S) 3.10, KL(S||T) 1.30)
    forward, reverse = np_kl_rows(zs, zt).mean(), np_kl_rows(zt, zs).mean()
    assert abs(forward - reverse) > 0.3 * forward  # the two directions are far apart here
    student["point_logits"], teacher["point_logits"] = TapValue(t32(zs, True)), TapValue(t32(zt))
    d = PVD(DistillContext("cylinder3d", 20, class_frequency=FREQ), components=["out_point"])
    assert d(student, teacher, batch)["out_point"].item() == pytest.approx(forward, rel=1e-5)


@pytest.mark.parametrize("form, reduction, divisor", [("kl", None, 1), ("kl", "mean", 20)])
def test_m2skd_kl_logit_term_follows_the_convention(form, reduction, divisor):
    zs, zt = logits(4, 20, 10), logits(4, 20, 11)
    batch = make_input([[0, i, 0, 0] for i in range(4)], list(range(4)))
    options = {} if reduction is None else {"kl_class_reduction": reduction}
    d = M2SKD(CTX, components=["logit"], logit_form=form, **options)
    got = d(m2skd_taps(t32(zs, True)), m2skd_taps(t32(zt)), batch)["logit"]
    assert got.item() == pytest.approx(np_kl_rows(zs, zt).mean() / divisor, rel=1e-5)


def test_m2skd_code_form_keeps_the_authors_mean_over_classes():
    """The authors' form (their weight 5.0 was set on it) keeps 1/C unless asked otherwise."""
    zs, zt = logits(3, 20, 12), logits(3, 20, 13)
    ps, pt = np_softmax(0.3 * zs, 1), np_softmax(0.3 * zt, 1)
    per_class = pt * np.abs(np.log(pt + 1e-6) - np.log(ps + 1e-6))
    batch = make_input([[0, i, 0, 0] for i in range(3)], list(range(3)))
    mean_form = M2SKD(CTX, components=["logit"], logit_threshold=0.0)
    assert mean_form.kl_class_reduction == "mean"
    got = mean_form(m2skd_taps(t32(zs, True)), m2skd_taps(t32(zt)), batch)["logit"]
    assert got.item() == pytest.approx(per_class.mean(axis=1).mean(), rel=1e-5)
    summed = M2SKD(CTX, components=["logit"], logit_threshold=0.0, kl_class_reduction="sum")
    got = summed(m2skd_taps(t32(zs, True)), m2skd_taps(t32(zt)), batch)["logit"]
    assert got.item() == pytest.approx(per_class.sum(axis=1).mean(), rel=1e-5)


@pytest.mark.parametrize("make", [
    lambda r: KD(context(), kl_class_reduction=r), lambda r: SKD(context(), kl_class_reduction=r),
    lambda r: PVD(DistillContext("cylinder3d", 20, class_frequency=FREQ), kl_class_reduction=r),
    lambda r: M2SKD(CTX, kl_class_reduction=r)])
def test_an_unknown_class_reduction_is_refused(make):
    with pytest.raises(ValueError, match="kl_class_reduction"):
        make("avg")


# ---------------------------------------------------------------------------------------------- CD: tau^2
def test_cd_channel_wise_terms_carry_tau_squared():
    """Fails when CD drops its tau^2 (or takes the softmax over channels instead of sites)."""
    zs, zt = logits(6, 3, 14), logits(6, 3, 15)
    fs, ft = logits(6, 2, 16), logits(6, 2, 17)
    scan = np.array([0, 0, 0, 0, 1, 1])

    def np_cwd(ys: np.ndarray, yt: np.ndarray, tau: float) -> float:
        per_scan_channel = []
        for b in (0, 1):
            ps, pt = np_softmax(ys[scan == b] / tau, 0), np_softmax(yt[scan == b] / tau, 0)  # over the scan's sites
            per_scan_channel.extend((pt * (np.log(pt) - np.log(ps))).sum(axis=0))
        return tau * tau * float(np.mean(per_scan_channel))

    cd = CD(context(student=2, teacher=2), adapter="linear", tau_feature=2.0, tau_score=4.0)
    with torch.no_grad():
        cd.adapter.weight.copy_(torch.eye(2))
    batch = voxel_batch(line_grids([4, 2]))
    out = cd(taps(voxel_logits=t32(zs, True), voxel_features=t32(fs, True)),
             taps(voxel_logits=t32(zt), voxel_features=t32(ft)), batch)
    assert out["score"].item() == pytest.approx(np_cwd(zs, zt, 4.0), rel=1e-5)
    assert out["feature"].item() == pytest.approx(np_cwd(fs, ft, 2.0), rel=1e-5)


# ---------------------------------------------------------------------------------------------- KA: eq. 3 scale
def test_ka_adaptation_is_the_per_site_norm_of_eq3_or_its_channel_mean():
    """Fails when the per-site L1 norm becomes an element-wise mean by default (or the option is ignored)."""
    u, z = logits(5, 8, 18), logits(5, 8, 19)
    scan = np.array([0, 0, 1, 1, 1])
    d = np.abs(u / np.linalg.norm(u, axis=1, keepdims=True) - z / np.linalg.norm(z, axis=1, keepdims=True)).sum(axis=1)
    norm = adaptation_loss(t32(u, True), t32(z), torch.tensor(scan), 2)
    assert norm.item() == pytest.approx(np_per_scan_mean(d, scan), rel=1e-5)
    mean = adaptation_loss(t32(u, True), t32(z), torch.tensor(scan), 2, reduction="channel_mean")
    assert mean.item() == pytest.approx(np_per_scan_mean(d, scan) / 8, rel=1e-5)
    d2 = np.linalg.norm(u / np.linalg.norm(u, axis=1, keepdims=True) - z / np.linalg.norm(z, axis=1, keepdims=True),
                        axis=1)
    rms = adaptation_loss(t32(u, True), t32(z), torch.tensor(scan), 2, p=2.0, reduction="channel_mean")
    assert rms.item() == pytest.approx(np_per_scan_mean(d2, scan) / np.sqrt(8), rel=1e-5)
    with pytest.raises(ValueError, match="adaptation_reduction"):
        adaptation_loss(t32(u), t32(z), torch.tensor(scan), 2, reduction="sum")


# ---------------------------------------------------------------------------------------------- M2SKD affinity scale
def _affinity_case():
    """One scan: person instance 1 (3 voxels), person instance 2 (3), bicycle instance 1 (2), one road voxel."""
    labels = [PERSON] * 6 + [BICYCLE] * 2 + [ROAD]
    inst = [1, 1, 1, 2, 2, 2, 1, 1, 0]
    batch = make_input([[0, i, 0, 0] for i in range(9)], list(range(9)), labels, inst)
    zs, zt = logits(9, 20, 20), logits(9, 20, 21)
    groups = {"person1": [0, 1, 2], "person2": [3, 4, 5], "bicycle1": [6, 7], "person": [0, 1, 2, 3, 4, 5]}
    d = {name: float(np.abs(np_cosine(zs[rows]) - np_cosine(zt[rows])).mean()) for name, rows in groups.items()}
    return batch, zs, zt, d


def test_m2skd_instance_affinity_is_summed_over_classes_like_the_authors():
    """Default: per hard class the mean over its instance groups, summed over classes. Fails when the
    affinity is doubled, or falls back to the plain mean over groups (about 1/classes of the authors' scale)."""
    batch, zs, zt, d = _affinity_case()

    def run(**options) -> float:
        distiller = M2SKD(CTX, components=["affinity"], **options)
        return distiller(m2skd_taps(t32(zs, True)), m2skd_taps(t32(zt)), batch)["affinity"].item()

    assert run() == pytest.approx((d["person1"] + d["person2"]) / 2 + d["bicycle1"], rel=1e-5)
    assert run(affinity_reduction="group_mean") == pytest.approx((d["person1"] + d["person2"] + d["bicycle1"]) / 3,
                                                                 rel=1e-5)
    # the authors' class grouping: one group per hard class, summed
    assert run(affinity_grouping="class") == pytest.approx(d["person"] + d["bicycle1"], rel=1e-5)
    assert run(affinity_grouping="class", affinity_reduction="group_mean") == \
        pytest.approx((d["person"] + d["bicycle1"]) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="affinity_reduction"):
        M2SKD(CTX, affinity_reduction="sum")
