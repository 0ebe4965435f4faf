"""Kernel maps, output-size rule and coordinate hashing against brute-force enumeration."""

from __future__ import annotations

import pytest
import torch

from harness.sparse.hashing import coords_to_keys, keys_to_coords, query_coords
from harness.sparse.kernel_map import build_strided_map, build_submanifold_map, conv_output_size, kernel_offsets
from tests.sparse.sparse_cases import (
    brute_force_strided_pairs,
    brute_force_submanifold_pairs,
    kernel_map_as_coord_triples,
    random_voxels,
)

GRID = (9, 8, 7)


def test_output_size_rule_matches_spconv_formula_by_hand() -> None:
    # floor((in + 2p - k) / s) + 1; Cylinder3D level shapes 480x360x32 -> 240x180x16 -> ... -> 30x23x8
    assert conv_output_size((480, 360, 32), (3, 3, 3), (2, 2, 2), (1, 1, 1)) == (240, 180, 16)
    assert conv_output_size((120, 90, 8), (3, 3, 3), (2, 2, 1), (1, 1, 1)) == (60, 45, 8)
    assert conv_output_size((60, 45, 8), (3, 3, 3), (2, 2, 1), (1, 1, 1)) == (30, 23, 8)
    assert conv_output_size((7, 5, 4), (2, 2, 2), (2, 2, 2), (0, 0, 0)) == (3, 2, 2)
    with pytest.raises(ValueError):
        conv_output_size((1, 1, 1), (3, 3, 3), (1, 1, 1), (0, 0, 0))


def test_kernel_offsets_are_row_major_last_axis_fastest() -> None:
    assert kernel_offsets((1, 2, 3))[:4] == [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0)]


def test_keys_round_trip_with_margin() -> None:
    coords = random_voxels(GRID, 3, 0.3, seed=1)
    keys = coords_to_keys(coords, GRID, batch_size=3, margin=2)
    assert torch.equal(keys_to_coords(keys, GRID, margin=2), coords)
    assert keys.unique().numel() == keys.numel()


@pytest.mark.parametrize("kernel_size", [(1, 3, 3), (3, 1, 3), (3, 3, 3), (3, 1, 1), (1, 1, 1), (5, 3, 1)])
def test_submanifold_pairs_equal_brute_force(kernel_size: tuple[int, int, int]) -> None:
    coords = random_voxels(GRID, 2, 0.35, seed=2)
    kernel_map = build_submanifold_map(coords, GRID, 2, kernel_size)
    expected = brute_force_submanifold_pairs(coords.numpy(), kernel_size)
    assert kernel_map_as_coord_triples(kernel_map, coords, coords) == expected
    assert kernel_map.num_pairs == len(expected)
    assert sum(kernel_map.pairs_per_offset()) == len(expected)


def test_submanifold_rejects_even_kernels() -> None:
    with pytest.raises(ValueError, match="odd"):
        build_submanifold_map(random_voxels(GRID, 1, 0.3, seed=0), GRID, 1, (2, 3, 3))


@pytest.mark.parametrize(
    "kernel_size, stride, padding",
    [
        ((3, 3, 3), (2, 2, 2), (1, 1, 1)),
        ((3, 3, 3), (2, 2, 1), (1, 1, 1)),
        ((2, 2, 2), (2, 2, 2), (0, 0, 0)),
        ((3, 1, 3), (1, 1, 1), (1, 0, 1)),  # regular (dilating) stride-1 conv
        ((3, 3, 2), (3, 2, 2), (0, 1, 0)),
    ],
)
def test_strided_coords_and_pairs_equal_brute_force(kernel_size, stride, padding) -> None:
    coords = random_voxels(GRID, 2, 0.25, seed=3)
    kernel_map, out_coords, out_shape = build_strided_map(coords, GRID, 2, kernel_size, stride, padding)
    expected_outputs, expected_pairs, expected_shape = brute_force_strided_pairs(
        coords.numpy(), GRID, kernel_size, stride, padding
    )
    assert out_shape == expected_shape
    assert {tuple(row) for row in out_coords.tolist()} == expected_outputs
    assert out_coords.shape[0] == len(expected_outputs)  # no duplicates
    assert kernel_map_as_coord_triples(kernel_map, coords, out_coords) == expected_pairs
    assert kernel_map.num_pairs == len(expected_pairs)
    # outputs come sorted by [batch, d0, d1, d2]
    keys = coords_to_keys(out_coords, out_shape, 2)
    assert torch.all(keys[1:] > keys[:-1])


def test_transposed_map_swaps_sides() -> None:
    coords = random_voxels(GRID, 1, 0.3, seed=4)
    kernel_map, out_coords, _ = build_strided_map(coords, GRID, 1, (3, 3, 3), (2, 2, 2), (1, 1, 1))
    inverse = kernel_map.transposed()
    assert (inverse.num_in, inverse.num_out) == (out_coords.shape[0], coords.shape[0])
    assert torch.equal(inverse.in_rows, kernel_map.out_rows) and torch.equal(inverse.out_rows, kernel_map.in_rows)


def test_query_coords_finds_rows_and_misses() -> None:
    table = torch.tensor([[0, 5, 1, 2], [1, 0, 0, 0], [0, 2, 3, 4], [1, 7, 7, 7]], dtype=torch.int32)
    query = torch.tensor(
        [[0, 2, 3, 4], [1, 7, 7, 7], [0, 5, 1, 2], [0, 5, 1, 3], [2, 0, 0, 0], [0, -1, 3, 4], [1, 0, 0, 0], [0, 99, 1, 2]],
        dtype=torch.int32,
    )
    assert query_coords(table, query).tolist() == [2, 3, 0, -1, -1, -1, 1, -1]
    assert query_coords(table[:0], query).tolist() == [-1] * 8
