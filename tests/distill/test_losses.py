"""Shared distillation loss primitives (``harness.distill.losses``) on hand-computed cases."""
import math

import pytest
import torch

from harness.distill.losses import (affinity_distance, cosine_affinity, has_direction, kl_divergence, masked_mean,
                                    per_scan_mean, segment_sum_count)


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_kl_two_points_by_hand():
    # point 0: teacher (0.5, 0.5), student (0.75, 0.25); point 1: teacher (0.8, 0.2), student (0.5, 0.5)
    teacher = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]], dtype=torch.float64)
    student = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], dtype=torch.float64)
    expected = [0.5 * math.log(4 / 3), 0.8 * math.log(1.6) + 0.2 * math.log(0.4)]
    assert kl_divergence(student, teacher).tolist() == pytest.approx(expected, rel=1e-12)
    assert kl_divergence(student, teacher, class_reduction="mean").tolist() == pytest.approx([e / 2 for e in expected])


def test_kl_temperature_scales_by_tau_squared():
    teacher = torch.tensor([[math.log(4.0), 0.0]], dtype=torch.float64)
    student = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    # tau = 2: teacher softmax(ln2, 0) = (2/3, 1/3); student softmax(ln3 / 2, 0) = (r3/(1+r3), 1/(1+r3))
    r3 = math.sqrt(3.0)
    expected = 4.0 * _kl((2 / 3, 1 / 3), (r3 / (1 + r3), 1 / (1 + r3)))
    assert kl_divergence(student, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-12)


def test_kl_zero_for_equal_logits_and_finite_when_saturated():
    z = torch.tensor([[1000.0, -1000.0, 0.0], [0.1, 0.2, 0.3]])
    assert torch.equal(kl_divergence(z, z.clone()), torch.zeros(2))
    assert torch.isfinite(kl_divergence(z, z.flip(1))).all()


def test_kl_rejects_bad_input():
    with pytest.raises(ValueError):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)


def test_cosine_affinity_three_points_by_hand():
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    h = 1 / math.sqrt(2)
    expected = torch.tensor([[1, 0, h], [0, 1, h], [h, h, 1]], dtype=torch.float64)
    a, valid = cosine_affinity(f)
    assert torch.allclose(a, expected, atol=1e-15)
    assert valid.all()


def test_cosine_affinity_masks_padding_without_nan_gradients():
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [0.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    mask = torch.tensor([[True, True, True, False, False]])
    a, valid = cosine_affinity(f, mask)
    assert torch.allclose(a[0, :3, :3], cosine_affinity(f[0, :3].detach())[0])
    assert torch.count_nonzero(a[0, 3:]) == 0 and torch.count_nonzero(a[0, :, 3:]) == 0
    assert valid.tolist() == mask.tolist()
    a.sum().backward()
    assert torch.isfinite(f.grad).all() and torch.count_nonzero(f.grad[0, 3:]) == 0


def test_zero_feature_rows_are_treated_as_padding():
    f = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 3.0]], requires_grad=True)
    assert has_direction(f).tolist() == [True, False, True]
    a, valid = cosine_affinity(f)
    assert valid.tolist() == [True, False, True] and a[1].abs().sum() == 0
    a.sum().backward()
    assert torch.isfinite(f.grad).all()


def test_affinity_distance_by_hand():
    h = 1 / math.sqrt(2)
    teacher = torch.tensor([[[1, 0, h], [0, 1, h], [h, h, 1]]], dtype=torch.float64)
    student = torch.ones(1, 3, 3, dtype=torch.float64)  # three parallel features
    expected = (2 * 1.0 + 4 * (1 - h) ** 2) / 9
    d, has = affinity_distance(student, teacher, torch.ones(1, 3, dtype=torch.bool))
    assert d.item() == pytest.approx(expected, rel=1e-12) and has.item()
    # padding: the same 3x3 block inside a 5x5 matrix with two masked rows gives the same value
    pad_s = torch.zeros(1, 5, 5, dtype=torch.float64)
    pad_t = torch.full((1, 5, 5), 7.0, dtype=torch.float64)
    pad_s[:, :3, :3], pad_t[:, :3, :3] = student, teacher
    mask = torch.tensor([[True, True, True, False, False]])
    assert affinity_distance(pad_s, pad_t, mask)[0].item() == pytest.approx(expected, rel=1e-12)
    empty_d, empty_has = affinity_distance(pad_s, pad_t, torch.zeros(1, 5, dtype=torch.bool))
    assert empty_d.item() == 0 and not empty_has.item()


def test_masked_mean_and_empty_mask_keeps_a_graph():
    v = torch.tensor([1.0, 2.0, 6.0], requires_grad=True)
    assert masked_mean(v, torch.tensor([True, False, True])).item() == 3.5
    out = masked_mean(v, torch.zeros(3, dtype=torch.bool))
    out.backward()
    assert out.item() == 0 and torch.equal(v.grad, torch.zeros(3))


def test_per_scan_mean_is_the_mean_of_scan_means():
    values = torch.tensor([1.0, 3.0, 10.0, 5.0, 5.0, 5.0])
    scan = torch.tensor([0, 0, 0, 2, 2, 2])  # scan 1 is empty and does not count
    assert per_scan_mean(values, scan, 3).item() == pytest.approx((14 / 3 + 5) / 2)
    keep = torch.tensor([True, True, False, True, False, True])
    assert per_scan_mean(values, scan, 3, keep).item() == pytest.approx((2 + 5) / 2)
    sums, counts = segment_sum_count(values, scan, 3, keep)
    assert sums.tolist() == [4.0, 0.0, 10.0] and counts.tolist() == [2.0, 0.0, 2.0]
