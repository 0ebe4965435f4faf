"""CD (channel-wise distillation, Shu et al. ICCV 2021): segment softmax over a scan's sites, by hand."""
from __future__ import annotations

import math

import pytest
import torch

from baselines.cd import CD, channel_wise_kl, cwd_loss, segment_log_softmax
from harness.backbones.base import BackboneInput
from tests.baselines import context, leaf, line_grids, taps, voxel_batch

LN = math.log


def kl(p, q):
    return sum(pi * LN(pi / qi) for pi, qi in zip(p, q))


def identity_cd(width: int = 2, **options) -> CD:
    cd = CD(context(student=width, teacher=width), adapter="linear", **options)
    with torch.no_grad():
        cd.adapter.weight.copy_(torch.eye(width))
    return cd


def test_segment_softmax_over_sites_by_hand():
    values = torch.tensor([[0.0, 1.0], [LN(3.0), 1.0], [5.0, -2.0]])
    scan = torch.tensor([0, 0, 1])
    probs = segment_log_softmax(values, scan, 2).exp()
    # scan 0: channel 0 -> (1/4, 3/4), channel 1 -> (1/2, 1/2); scan 1 has one site -> 1
    assert torch.allclose(probs, torch.tensor([[0.25, 0.5], [0.75, 0.5], [1.0, 1.0]]), atol=1e-6)


def test_segment_softmax_equals_a_loop_over_scans():
    torch.manual_seed(0)
    values, scan = torch.randn(40, 5) * 30, torch.randint(0, 3, (40,))
    got = segment_log_softmax(values, scan, 3)
    for b in range(3):
        rows = scan == b
        assert torch.allclose(got[rows], torch.log_softmax(values[rows], dim=0), atol=1e-5)


def test_score_term_by_hand_with_tau_four():
    # one scan, two sites, two channels. tau = 4: teacher channel 0 = (0, 4 ln 3) -> (1/4, 3/4);
    # channel 1 = (0, 0) -> (1/2, 1/2). Student: channel 0 uniform, channel 1 = (4 ln 4, 0) -> (4/5, 1/5).
    z_t = leaf([[0.0, 0.0], [4 * LN(3), 0.0]], False)
    z_s = leaf([[0.0, 4 * LN(4)], [0.0, 0.0]])
    expected = 16.0 * (kl([.25, .75], [.5, .5]) + kl([.5, .5], [.8, .2])) / 2
    cd = identity_cd()
    out = cd(taps(voxel_logits=z_s, voxel_features=torch.zeros(2, 2)),
             taps(voxel_logits=z_t, voxel_features=torch.zeros(2, 2)), voxel_batch(line_grids([2])))
    assert set(out) == {"feature", "score"}
    assert out["score"].item() == pytest.approx(expected, rel=1e-5)
    assert out["feature"].item() == pytest.approx(0.0, abs=1e-7)


def test_zero_when_equal_feature_term_needs_the_identity_adapter():
    torch.manual_seed(2)
    z, f = torch.randn(6, 3), torch.randn(6, 2)
    batch = voxel_batch(line_grids([4, 2]))
    out = identity_cd()(taps(voxel_logits=z, voxel_features=f), taps(voxel_logits=z, voxel_features=f), batch)
    assert out["score"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["feature"].item() == pytest.approx(0.0, abs=1e-6)
    default = CD(context())  # Linear + BN + ReLU adapter: equal features are not a fixed point
    assert isinstance(default.adapter, torch.nn.Sequential)
    out = default(taps(voxel_logits=z, voxel_features=f), taps(voxel_logits=z, voxel_features=f), batch)
    assert out["score"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["feature"].item() > 0


def test_adapter_maps_student_width_to_teacher_width_and_gradients():
    torch.manual_seed(3)
    cd = CD(context(student=3, teacher=5))
    assert cd.adapter[0].in_features == 3 and cd.adapter[0].out_features == 5
    f_s, z_s = torch.randn(6, 3, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    f_t, z_t = torch.randn(6, 5, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    out = cd(taps(voxel_logits=z_s, voxel_features=f_s), taps(voxel_logits=z_t, voxel_features=f_t),
             voxel_batch(line_grids([3, 3])))
    (out["feature"] + out["score"]).backward()
    assert f_s.grad is not None and z_s.grad is not None
    assert all(p.grad is not None for p in cd.adapter.parameters())
    assert f_t.grad is None and z_t.grad is None


def test_batch_of_two_is_the_plain_mean_of_the_scans_and_permutation_invariant():
    torch.manual_seed(4)
    z_s, z_t = torch.randn(5, 3), torch.randn(5, 3)
    scan = torch.tensor([0, 0, 1, 1, 1])
    both = cwd_loss(z_s, z_t, scan, 2, 4.0)
    first = cwd_loss(z_s[:2], z_t[:2], scan[:2], 1, 4.0)
    second = cwd_loss(z_s[2:], z_t[2:], scan[2:] - 1, 1, 4.0)
    assert both.item() == pytest.approx((first.item() + second.item()) / 2, rel=1e-6)
    perm = torch.tensor([1, 0, 4, 2, 3])
    assert cwd_loss(z_s[perm], z_t[perm], scan[perm], 2, 4.0).item() == pytest.approx(both.item(), rel=1e-6)
    assert channel_wise_kl(z_s, z_t, scan, 2, 4.0).shape == (2, 3)  # one KL per (scan, channel)


def test_a_scan_without_sites_does_not_count():
    z_s, z_t = torch.randn(3, 2), torch.randn(3, 2)
    scan = torch.tensor([0, 0, 2])  # scan 1 has no sites
    got = cwd_loss(z_s, z_t, scan, 3, 1.0)
    only = [cwd_loss(z_s[:2], z_t[:2], scan[:2], 1, 1.0).item(), 0.0]  # a single site: KL = 0
    assert got.item() == pytest.approx(sum(only) / 2, rel=1e-6)


def test_point_level_masks_points_of_dropped_voxels():
    batch = voxel_batch(line_grids([3]))
    batch = BackboneInput(**{**batch.__dict__, "point_to_voxel": torch.tensor([0, 1, -1])})
    cd = identity_cd(level="point")
    assert cd.student_taps == ("point_features", "point_logits")
    z_t = torch.tensor([[0.0], [4 * LN(3)], [100.0]])
    z_s = torch.tensor([[0.0], [0.0], [-100.0]])
    out = cd(taps(point_logits=z_s, point_features=torch.zeros(3, 2)),
             taps(point_logits=z_t, point_features=torch.zeros(3, 2)), batch)
    assert out["score"].item() == pytest.approx(16 * kl([.25, .75], [.5, .5]), rel=1e-5)


def test_temperatures_are_configurable_per_term():
    cd = CD(context(), tau_feature=2.0, tau_score=1.0)
    assert (cd.tau_feature, cd.tau_score) == (2.0, 1.0)
    with pytest.raises(ValueError):
        CD(context(), tau_score=0.0)
    with pytest.raises(ValueError, match="adapter"):
        CD(context(), adapter="mlp")
