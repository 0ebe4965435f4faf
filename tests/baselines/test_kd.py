"""KD (Hinton et al. 2015) on per-site logits: hand-computed values, masking, gradients, invariances."""
from __future__ import annotations

import math

import pytest
import torch

from baselines.kd import KD, soft_kl
from harness.backbones.base import BackboneInput
from tests.baselines import context, leaf, line_grids, taps, voxel_batch

LN = math.log


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * LN(pi / qi) for pi, qi in zip(p, q))


def test_two_sites_three_classes_by_hand():
    # site 0: teacher (.5, .25, .25), student uniform; site 1: teacher (.2, .3, .5), student (.5, .3, .2)
    z_t = leaf([[LN(.5), LN(.25), LN(.25)], [LN(.2), LN(.3), LN(.5)]], requires_grad=False)
    z_s = leaf([[0.0, 0.0, 0.0], [LN(.5), LN(.3), LN(.2)]])
    expected = (0.5 * LN(1.5) + 0.5 * LN(0.75) + 0.3 * LN(2.5)) / 2
    assert expected == pytest.approx((kl([.5, .25, .25], [1 / 3] * 3) + kl([.2, .3, .5], [.5, .3, .2])) / 2)
    out = KD(context())(taps(voxel_logits=z_s), taps(voxel_logits=z_t), voxel_batch(line_grids([2])))
    assert set(out) == {"kd"}
    assert out["kd"].dtype == torch.float32
    assert out["kd"].item() == pytest.approx(expected, rel=1e-6)


def test_temperature_softens_and_scales_by_t_squared():
    z_t = [[2.0, 0.0, -2.0]]
    z_s = [[0.0, 1.0, 0.0]]

    def softmax(row, t):
        e = [math.exp(v / t) for v in row]
        return [v / sum(e) for v in e]

    expected = 4.0 * kl(softmax(z_t[0], 2.0), softmax(z_s[0], 2.0))
    out = KD(context(), temperature=2.0)(taps(voxel_logits=leaf(z_s)), taps(voxel_logits=leaf(z_t, False)),
                                        voxel_batch(line_grids([1])))
    assert out["kd"].item() == pytest.approx(expected, rel=1e-6)


def test_zero_when_student_equals_teacher_and_grad_reaches_only_student():
    torch.manual_seed(0)
    z = torch.randn(5, 4)
    z_s, z_t = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out = KD(context())(taps(voxel_logits=z_s), taps(voxel_logits=z_t), voxel_batch(line_grids([5])))
    assert out["kd"].item() == pytest.approx(0.0, abs=1e-7)
    z_s2 = torch.randn(5, 4, requires_grad=True)
    KD(context())(taps(voxel_logits=z_s2), taps(voxel_logits=z_t), voxel_batch(line_grids([5])))["kd"].backward()
    assert z_s2.grad is not None and z_s2.grad.abs().sum() > 0
    assert z_t.grad is None


def test_batch_of_two_is_the_mean_of_the_two_scans_and_permutation_invariant():
    torch.manual_seed(1)
    z_s, z_t = torch.randn(4, 3), torch.randn(4, 3)
    kd = KD(context())
    both = kd(taps(voxel_logits=z_s), taps(voxel_logits=z_t), voxel_batch(line_grids([1, 3])))["kd"]
    first = kd(taps(voxel_logits=z_s[:1]), taps(voxel_logits=z_t[:1]), voxel_batch(line_grids([1])))["kd"]
    second = kd(taps(voxel_logits=z_s[1:]), taps(voxel_logits=z_t[1:]), voxel_batch(line_grids([3])))["kd"]
    assert both.item() == pytest.approx((first.item() + second.item()) / 2, rel=1e-6)  # not site-weighted
    perm = torch.tensor([0, 3, 1, 2])  # shuffle inside scan 1
    grids = line_grids([1, 3])
    shuffled = voxel_batch([grids[0], [grids[1][i - 1] for i in perm[1:].tolist()]])
    again = kd(taps(voxel_logits=z_s[perm]), taps(voxel_logits=z_t[perm]), shuffled)["kd"]
    assert again.item() == pytest.approx(both.item(), rel=1e-6)


def test_point_level_leaves_out_points_of_dropped_voxels():
    batch = voxel_batch(line_grids([3]))
    batch = BackboneInput(**{**batch.__dict__, "point_to_voxel": torch.tensor([0, -1, 2])})
    z_t = torch.tensor([[1.0, 0.0], [9.0, -9.0], [0.0, 1.0]])
    z_s = torch.tensor([[0.0, 0.0], [-9.0, 9.0], [0.0, 1.0]])  # the dropped point disagrees wildly
    kd = KD(context(), level="point")
    assert kd.student_taps == kd.teacher_taps == ("point_logits",)
    got = kd(taps(point_logits=z_s), taps(point_logits=z_t), batch)["kd"]
    p = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]
    assert got.item() == pytest.approx(kl(p, [0.5, 0.5]) / 2, rel=1e-6)


def test_ignore_logit_is_dropped_before_the_softmax():
    z_t = leaf([[50.0, LN(.25), LN(.75)]], False)  # the ignored class would dominate the softmax
    z_s = leaf([[-50.0, LN(.5), LN(.5)]])
    out = KD(context(), ignore_logit=0)(taps(voxel_logits=z_s), taps(voxel_logits=z_t), voxel_batch(line_grids([1])))
    assert out["kd"].item() == pytest.approx(kl([.25, .75], [.5, .5]), rel=1e-6)


def test_half_precision_inputs_give_a_float32_term():
    z = torch.randn(3, 4).to(torch.bfloat16)
    assert soft_kl(z, z).dtype == torch.float32


def test_bad_level_and_row_count_fail_loudly():
    with pytest.raises(ValueError, match="level"):
        KD(context(), level="supervoxel")
    with pytest.raises(ValueError, match="rows"):
        KD(context())(taps(voxel_logits=torch.zeros(2, 3)), taps(voxel_logits=torch.zeros(2, 3)),
                      voxel_batch(line_grids([3])))
