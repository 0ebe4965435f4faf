"""Per-layer MACs = kernel-map pairs x C_in x C_out, with pair counts from brute force."""

from __future__ import annotations

import torch
from torch import nn

from harness.sparse import SparseConv3d, SparseInverseConv3d, SparseTensor, SubMConv3d, count_sparse_macs
from tests.sparse.sparse_cases import brute_force_strided_pairs, brute_force_submanifold_pairs, random_voxels

GRID = (7, 6, 5)


class _Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = SubMConv3d(3, 4, (1, 3, 3), indice_key="stem")
        self.down = SparseConv3d(4, 6, 3, 2, 1, indice_key="down")
        self.up = SparseInverseConv3d(6, 5, 3, indice_key="down")

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.up(self.down(self.stem(x)))


def test_macs_per_layer_from_brute_force_pair_counts() -> None:
    coords = random_voxels(GRID, 2, 0.3, seed=12)
    model = _Chain()
    with count_sparse_macs(model) as counter:
        model(SparseTensor.from_coords(torch.randn(coords.shape[0], 3), coords, GRID, 2))
    subm_pairs = len(brute_force_submanifold_pairs(coords.numpy(), (1, 3, 3)))
    outputs, strided_pairs, _ = brute_force_strided_pairs(coords.numpy(), GRID, (3, 3, 3), (2, 2, 2), (1, 1, 1))
    expected = [
        ("stem", subm_pairs, 3, 4),
        ("down", len(strided_pairs), 4, 6),
        ("up", len(strided_pairs), 6, 5),  # the inverse conv reuses the same pairs
    ]
    assert [(layer.name, layer.pairs, layer.in_channels, layer.out_channels) for layer in counter.layers] == expected
    assert counter.total_macs == sum(p * ci * co for _, p, ci, co in expected)
    assert counter.layers[1].num_out == len(outputs)
    assert counter.as_rows()[0]["macs"] == subm_pairs * 12


def test_hooks_are_removed_after_the_block() -> None:
    model = _Chain()
    with count_sparse_macs(model):
        pass
    assert all(not m._forward_hooks for m in model.modules())
