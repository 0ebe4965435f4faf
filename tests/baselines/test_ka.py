"""KA (He et al. CVPR 2019): auto-encoder stage, adaptation and affinity terms."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from baselines.ka import KA, SiteConv, adaptation_distance, adaptation_loss, affinity_loss
from baselines.nodes import gather_sites
from harness.backbones.base import BackboneInput, TapPoint
from harness.sparse import SubMConv3d
from tests.baselines import context, leaf, line_grids, taps, voxel_batch


def ka(**options) -> KA:
    return KA(context(student=2, teacher=4), **{"kernel_size": 1, "cell_size": (1, 1, 1), **options})


class ToyTeacher(nn.Module):
    """A 'backbone' whose voxel features are a fixed linear map of the voxel coordinates."""

    tap_points = {"voxel_features": "tap"}

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(3, width)
        self.tap = TapPoint()

    def forward(self, batch: BackboneInput) -> torch.Tensor:
        return self.tap(torch.relu(self.proj(batch.voxel_coords[:, 1:].float() / 4)))


def test_adaptation_term_by_hand():
    adapted, latent = leaf([[3, 4]]), leaf([[2, 0]], False)
    # (0.6, 0.8) - (1, 0) = (-0.4, 0.8): L1 = 1.2, L2 = sqrt(0.8)
    assert adaptation_distance(adapted, latent, p=1).item() == pytest.approx(1.2, rel=1e-6)
    assert adaptation_distance(adapted, latent, p=2).item() == pytest.approx(math.sqrt(0.8), rel=1e-6)
    assert adaptation_distance(leaf([[1, 1], [0, 5]]), leaf([[3, 3], [0, 1]])).abs().max().item() < 1e-6
    # batch of two scans (1 and 2 sites): mean of the scans' means, not of the three sites
    both = adaptation_loss(leaf([[3, 4], [1, 0], [0, 1]]), leaf([[2, 0], [1, 0], [0, 1]], False),
                           torch.tensor([0, 1, 1]), 2)
    assert both.item() == pytest.approx((1.2 + 0.0) / 2, rel=1e-6)


def test_affinity_term_by_hand():
    # student nodes (1,0), (0,1): cos = I; teacher (1,0), (3,0): all ones. A = cos / 2.
    # row differences (0, -1/2), (-1/2, 0): L2 norms 1/2 -> mean 1/2. MSE of the cosines: 2/4.
    s, t = leaf([[1, 0], [0, 1]]), leaf([[1, 0], [3, 0]], False)
    assert affinity_loss([s], [t]).item() == pytest.approx(0.5, rel=1e-6)
    assert affinity_loss([s], [t], "mse").item() == pytest.approx(0.5, rel=1e-6)
    three_s, three_t = leaf([[1, 0], [0, 1], [0, 1]]), leaf([[1, 0], [1, 0], [1, 0]], False)
    # cos_s = [[1,0,0],[0,1,1],[0,1,1]], cos_t = ones: rows differ by (0,1,1), (1,0,0), (1,0,0), / 3
    expected = (math.sqrt(2) + 1 + 1) / 3 / 3
    assert affinity_loss([three_s], [three_t]).item() == pytest.approx(expected, rel=1e-6)
    both = affinity_loss([s, three_s], [t, three_t]).item()
    assert both == pytest.approx((0.5 + expected) / 2, rel=1e-6)  # batch of two: mean of the scans


def test_forward_needs_the_fitted_auto_encoder():
    f = torch.randn(3, 2)
    with pytest.raises(RuntimeError, match="pretrain"):
        ka()(taps(voxel_features=f), taps(voxel_features=torch.randn(3, 4)), voxel_batch(line_grids([3])))


def test_pretrain_fits_then_freezes_the_auto_encoder():
    torch.manual_seed(0)
    teacher = ToyTeacher()
    batches = [voxel_batch([[(i, j, (i * j) % 3) for i in range(4) for j in range(3)]]) for _ in range(2)]
    model = ka()
    losses = model.pretrain(teacher, batches, epochs=3)
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert bool(model.autoencoder_fitted)
    assert not any(p.requires_grad for p in model.autoencoder.parameters())
    assert all(p.requires_grad for p in teacher.parameters()) and teacher.training  # teacher left as it was
    model.train()
    assert not model.autoencoder.training and model.feature_adapter.training
    state = model.state_dict()
    assert bool(state["autoencoder_fitted"])
    reloaded = ka()
    reloaded.load_state_dict(state)
    assert bool(reloaded.autoencoder_fitted)
    reloaded.train()  # as the trainer does every step after a resume
    assert not reloaded.autoencoder.training
    assert not any(p.requires_grad for p in reloaded.autoencoder.parameters())


def test_gradients_reach_student_and_adapters_but_not_teacher_or_encoder():
    torch.manual_seed(1)
    model = ka()
    model.freeze_autoencoder()
    model.train()
    f_s = torch.randn(6, 2, requires_grad=True)
    f_t = torch.randn(6, 4, requires_grad=True)
    out = model(taps(voxel_features=f_s), taps(voxel_features=f_t), voxel_batch(line_grids([4, 2])))
    assert set(out) == {"adaptation", "affinity"}
    assert all(v.dtype == torch.float32 for v in out.values())
    (out["adaptation"] + out["affinity"]).backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.feature_adapter.parameters())
    assert all(p.grad is not None for p in model.affinity_adapter.parameters())
    assert all(p.grad is None for p in model.autoencoder.parameters())
    assert f_t.grad is None


def test_zero_when_adapted_student_matches_the_latent():
    model = ka()
    model.freeze_autoencoder()
    model.eval()
    f_t = torch.rand(5, 4) + 0.1
    batch = voxel_batch(line_grids([5]))
    latent = model.autoencoder.encode(f_t, None)
    out = model._affinity(latent * 3.0, latent, model_sites(model, batch))
    assert out.item() == pytest.approx(0.0, abs=1e-6)
    assert adaptation_distance(latent * 2.0, latent).abs().max().item() < 1e-6


def model_sites(model: KA, batch: BackboneInput):
    return gather_sites(model.level, batch, batch.voxel_coords.shape[0], torch.device("cpu"))


def test_submanifold_kernel_three_on_voxels_and_permutation_invariance():
    torch.manual_seed(2)
    model = KA(context(student=2, teacher=4), cell_size=(1, 1, 1))  # MinkowskiNet: SubMConv3d k=3
    assert model.kernel_size == 3 and isinstance(model.feature_adapter.conv.op, SubMConv3d)
    assert KA(context("spvcnn", student=2, teacher=4)).kernel_size == 1  # SPVCNN point-branch features
    assert isinstance(KA(context(student=2, teacher=4), level="point").feature_adapter.conv.op, nn.Linear)
    model.freeze_autoencoder()
    model.eval()
    grid = [(i % 3, i // 3, 0) for i in range(9)]
    f_s, f_t = torch.randn(9, 2), torch.randn(9, 4)
    out = model(taps(voxel_features=f_s), taps(voxel_features=f_t), voxel_batch([grid]))
    perm = torch.randperm(9)
    again = model(taps(voxel_features=f_s[perm]), taps(voxel_features=f_t[perm]),
                  voxel_batch([[grid[i] for i in perm.tolist()]]))
    for term in ("adaptation", "affinity"):
        assert again[term].item() == pytest.approx(out[term].item(), rel=1e-5)


def test_site_conv_kernel_three_mixes_neighbours_kernel_one_does_not():
    batch = voxel_batch([[(0, 0, 0), (1, 0, 0), (5, 5, 5)]])
    feats = torch.tensor([[1.0], [0.0], [0.0]])
    model = KA(context(student=2, teacher=4))
    conv = SiteConv(1, 1, 3, bias=False)
    with torch.no_grad():
        conv.op.weight.fill_(1.0)
    out = conv(feats, model.grid(batch, feats))
    assert out.squeeze(1).tolist() == [1.0, 1.0, 0.0]  # the isolated voxel sees nothing


def test_latent_width_and_affinity_nodes_are_bounded():
    model = KA(context(student=2, teacher=8), kernel_size=1, max_nodes=16)
    assert model.latent_channels == 4
    model.freeze_autoencoder()
    n = 2000
    batch = voxel_batch([[(i % 50, i // 50, 0) for i in range(n)]])
    out = model(taps(voxel_features=torch.randn(n, 2)), taps(voxel_features=torch.randn(n, 8)), batch)
    assert torch.isfinite(out["affinity"]) and torch.isfinite(out["adaptation"])
