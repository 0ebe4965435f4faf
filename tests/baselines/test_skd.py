"""SKD (Liu et al. CVPR 2019): pixel-wise KL and pair-wise node graphs; bounded node sets."""
from __future__ import annotations

import math

import pytest
import torch

from baselines.kd import KD
from baselines.nodes import build_nodes, default_cell_size, gather_sites
from harness.backbones.base import BACKBONES
from baselines.skd import SKD, pairwise_loss
from tests.baselines import context, leaf, line_grids, taps, voxel_batch


def skd(**options) -> SKD:
    return SKD(context(), **{"cell_size": (1, 1, 1), **options})


def test_pair_term_by_hand():
    # cell 1: every site is a node. Student nodes (1,0), (0,1): graph I; teacher (1,0), (2,0): all ones.
    f_s, f_t = leaf([[1, 0], [0, 1]]), leaf([[1, 0], [2, 0]], False)
    z = torch.zeros(2, 3)
    out = skd()(taps(voxel_logits=z, voxel_features=f_s), taps(voxel_logits=z, voxel_features=f_t),
                voxel_batch(line_grids([2])))
    assert set(out) == {"pixel", "pair"}
    assert out["pair"].item() == pytest.approx((0 + 1 + 1 + 0) / 4, rel=1e-6)
    assert out["pixel"].item() == pytest.approx(0.0, abs=1e-7)


def test_pixel_term_is_kd_at_temperature_one():
    torch.manual_seed(0)
    z_s, z_t, f = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 2)
    batch = voxel_batch(line_grids([4]))
    pixel = skd()(taps(voxel_logits=z_s, voxel_features=f), taps(voxel_logits=z_t, voxel_features=f), batch)["pixel"]
    kd = KD(context(), temperature=1.0)(taps(voxel_logits=z_s), taps(voxel_logits=z_t), batch)["kd"]
    assert pixel.item() == pytest.approx(kd.item(), rel=1e-6)
    p_t, p_s = torch.softmax(z_t, 1), torch.softmax(z_s, 1)
    by_hand = sum(float(p_t[i, k]) * math.log(float(p_t[i, k] / p_s[i, k])) for i in range(4) for k in range(3)) / 4
    assert pixel.item() == pytest.approx(by_hand, rel=1e-5)


def test_nodes_max_pool_their_cells():
    batch = voxel_batch([[(0, 0, 0), (1, 0, 0), (2, 0, 0)]])
    sites = gather_sites("voxel", batch, 3, torch.device("cpu"))
    nodes = build_nodes(sites, (2, 1, 1))  # cells {0, 1} and {2}
    assert nodes.counts == (2,)
    pooled = nodes.pool(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]))
    assert torch.equal(pooled, torch.tensor([[1.0, 2.0], [-1.0, -1.0]]))


def test_zero_when_equal_and_gradients_reach_only_the_student():
    torch.manual_seed(1)
    z, f = torch.randn(6, 3), torch.randn(6, 2)
    out = skd()(taps(voxel_logits=z, voxel_features=f), taps(voxel_logits=z, voxel_features=f),
                voxel_batch(line_grids([4, 2])))
    assert out["pixel"].item() == pytest.approx(0.0, abs=1e-7)
    assert out["pair"].item() == pytest.approx(0.0, abs=1e-7)
    f_s, z_s = torch.randn(6, 2, requires_grad=True), torch.randn(6, 3, requires_grad=True)
    f_t, z_t = torch.randn(6, 4, requires_grad=True), torch.randn(6, 3, requires_grad=True)
    out = skd()(taps(voxel_logits=z_s, voxel_features=f_s), taps(voxel_logits=z_t, voxel_features=f_t),
                voxel_batch(line_grids([4, 2])))
    (out["pixel"] + out["pair"]).backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0 and z_s.grad is not None
    assert f_t.grad is None and z_t.grad is None


def test_pair_term_batch_of_two_is_the_mean_of_the_scans():
    torch.manual_seed(2)
    blocks_s = [torch.randn(3, 2), torch.randn(5, 2)]
    blocks_t = [torch.randn(3, 4), torch.randn(5, 4)]
    both = pairwise_loss(blocks_s, blocks_t).item()
    each = [pairwise_loss([s], [t]).item() for s, t in zip(blocks_s, blocks_t)]
    assert both == pytest.approx(sum(each) / 2, rel=1e-6)


def test_invariant_to_permuting_points_within_a_scan_even_when_sampling():
    torch.manual_seed(3)
    grid = [(i % 7, i // 7, 0) for i in range(40)]
    f_s, f_t, z = torch.randn(40, 2), torch.randn(40, 3), torch.zeros(40, 3)
    perm = torch.randperm(40)

    def pair(order, seed):
        model = skd(max_nodes=10, generator=torch.Generator().manual_seed(seed))
        batch = voxel_batch([[grid[i] for i in order.tolist()]])
        return model(taps(voxel_logits=z, voxel_features=f_s[order]), taps(voxel_logits=z, voxel_features=f_t[order]),
                     batch)["pair"].item()

    assert pair(perm, 5) == pytest.approx(pair(torch.arange(40), 5), rel=1e-6)


@pytest.mark.parametrize("num_sites", [1_000, 100_000])
def test_graph_size_is_bounded_independently_of_the_number_of_sites(num_sites):
    flat = torch.arange(num_sites) * 7919 % 256 ** 3  # distinct cells spread over a 256^3 grid
    grid = torch.stack([flat // 256 ** 2, (flat // 256) % 256, flat % 256], 1)
    coords = torch.cat([torch.zeros(num_sites, 1, dtype=torch.long), grid], 1).int()
    batch = voxel_batch([[]])
    batch.voxel_coords, batch.point_coords, batch.point_to_voxel = coords, coords, torch.arange(num_sites)
    batch.point_batch = torch.zeros(num_sites, dtype=torch.long)
    model = SKD(context(), max_nodes=64)  # default MinkowskiNet cells of 8 voxels
    nodes, sites = model.nodes(batch, num_sites, torch.device("cpu"))
    assert nodes.counts == (64,)  # far more than 64 non-empty cells either way
    blocks = nodes.split(nodes.pool(torch.randn(num_sites, 2)))
    assert [tuple(b.shape) for b in blocks] == [(64, 2)]
    out = model(taps(voxel_logits=torch.zeros(num_sites, 3), voxel_features=torch.randn(num_sites, 2)),
                taps(voxel_logits=torch.zeros(num_sites, 3), voxel_features=torch.randn(num_sites, 4)), batch)
    assert torch.isfinite(out["pair"])


def test_sampling_keeps_the_same_nodes_for_both_networks_and_all_cells_when_few():
    sites = gather_sites("voxel", voxel_batch(line_grids([12, 3])), 15, torch.device("cpu"))
    nodes = build_nodes(sites, (1, 1, 1), max_nodes=5, generator=torch.Generator().manual_seed(0))
    assert nodes.counts == (5, 3)
    assert torch.equal(nodes.node_scan, torch.tensor([0] * 5 + [1] * 3))
    all_nodes = build_nodes(sites, (1, 1, 1), max_nodes=100)
    assert all_nodes.counts == (12, 3) and all_nodes.site_index.shape == (15,)


def test_default_cells_per_backbone():
    assert default_cell_size("cylinder3d") == BACKBONES.get("cylinder3d").node_cell == (4, 4, 2)
    assert default_cell_size("minkunet") == default_cell_size("spvcnn") == (8, 8, 8)
    assert SKD(context("cylinder3d")).cell_size == (4, 4, 2)
