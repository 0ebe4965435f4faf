"""IFV (IFVD, Wang et al. ECCV 2020): per-scan class prototypes and cosine maps, by hand."""
from __future__ import annotations

import math

import pytest
import torch

from baselines.ifv import IFV, ifv_loss
from tests.baselines import context, leaf, line_grids, taps, voxel_batch

R2 = 1 / math.sqrt(2)


def run(f_s, f_t, counts, labels, **options):
    return IFV(context(), **options)(taps(voxel_features=f_s), taps(voxel_features=f_t),
                                    voxel_batch(line_grids(counts), labels))["ifv"]


def test_prototype_and_cosine_map_by_hand():
    # class 1: student (1,0), (0,1), (1,1) -> prototype (2/3, 2/3) -> cosines 1/sqrt2, 1/sqrt2, 1;
    # teacher (1,0) x 3 -> cosines 1. Class 2: one site -> cosine 1 on both sides.
    f_s = leaf([[1, 0], [0, 1], [1, 1], [5, -3]])
    f_t = leaf([[1, 0], [1, 0], [1, 0], [2, 2]], False)
    expected = (2 * (R2 - 1) ** 2 + 0 + 0) / 4
    got = run(f_s, f_t, [4], [[1, 1, 1, 2]])
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_ignored_sites_are_left_out_of_prototypes_and_of_the_mean():
    f_s = leaf([[1, 0], [0, 1], [1, 1], [-7, 3]])
    f_t = leaf([[1, 0], [1, 0], [1, 0], [0, 9]], False)
    got = run(f_s, f_t, [4], [[1, 1, 1, 0]])  # the last site is unlabelled
    assert got.item() == pytest.approx(2 * (R2 - 1) ** 2 / 3, rel=1e-6)
    nothing = run(f_s, f_t, [4], [[0, 0, 0, 0]])
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_prototypes_are_per_scan():
    # the same class in two scans: per-scan prototypes (1,0) and (0,1) give cosine 1 everywhere;
    # a batch-wide prototype (1/2, 1/2) would give 1/sqrt2 for the student.
    f_s = leaf([[1, 0], [1, 0], [0, 1], [0, 1]])
    f_t = leaf([[1, 0], [1, 0], [1, 0], [1, 0]], False)
    got = run(f_s, f_t, [2, 2], [[1, 1], [1, 1]])
    assert got.item() == pytest.approx(0.0, abs=1e-7)
    mixed = leaf([[1, 0], [0, 1], [1, 0], [1, 0]])  # scan 0 varies, scan 1 does not
    got = run(mixed, f_t, [2, 2], [[1, 1], [1, 1]])
    assert got.item() == pytest.approx(2 * (R2 - 1) ** 2 / 4, rel=1e-6)


def test_batch_of_two_is_the_mean_of_the_two_scans():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(9, 3), torch.randn(9, 4)
    labels = torch.tensor([1, 2, 1, 0, 2, 2, 1, 1, 1])
    scan = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])  # 3 and 5 labelled sites
    both = ifv_loss(f_s, f_t, labels, scan, 2)
    first = ifv_loss(f_s[:4], f_t[:4], labels[:4], scan[:4], 1)
    second = ifv_loss(f_s[4:], f_t[4:], labels[4:], scan[4:] * 0, 1)
    assert first.item() > 0 and second.item() > 0
    assert both.item() == pytest.approx((first.item() + second.item()) / 2, rel=1e-6)
    unlabelled_scan = ifv_loss(f_s, f_t, torch.cat([labels[:4], torch.zeros(5, dtype=torch.long)]), scan, 2)
    assert unlabelled_scan.item() == pytest.approx(first.item(), rel=1e-6)  # a scan without labels does not count


def test_zero_when_equal_gradients_and_permutation_invariance():
    torch.manual_seed(1)
    f = torch.randn(6, 3)
    labels = [[1, 2, 1, 2, 0, 1]]
    assert run(f, f, [6], labels).item() == pytest.approx(0.0, abs=1e-7)
    f_s, f_t = torch.randn(6, 3, requires_grad=True), torch.randn(6, 5, requires_grad=True)
    loss = run(f_s, f_t, [6], labels)
    loss.backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert f_t.grad is None
    assert f_s.grad[4].abs().sum() == 0  # the unlabelled site takes no part
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    shuffled = IFV(context())(taps(voxel_features=f_s.detach()[perm]), taps(voxel_features=f_t.detach()[perm]),
                              voxel_batch([[line_grids([6])[0][i] for i in perm.tolist()]],
                                          [[labels[0][i] for i in perm.tolist()]]))["ifv"]
    assert shuffled.item() == pytest.approx(loss.item(), rel=1e-6)


def test_needs_labels_at_its_level():
    f = torch.randn(2, 2)
    with pytest.raises(ValueError, match="labels"):
        IFV(context())(taps(voxel_features=f), taps(voxel_features=f), voxel_batch(line_grids([2])))
    point = IFV(context(), level="point")
    assert point.student_taps == ("point_features",)
    got = point(taps(point_features=f), taps(point_features=f), voxel_batch(line_grids([2]), [[1, 1]]))["ifv"]
    assert got.item() == pytest.approx(0.0, abs=1e-7)
