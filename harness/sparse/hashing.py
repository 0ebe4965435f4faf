"""Voxel-coordinate hashing with sorted int64 keys and ``torch.searchsorted`` (pure torch).

A coordinate ``[b, d0, d1, d2]`` becomes the mixed-radix integer
``((b * S0 + d0 + m) * S1 + d1 + m) * S2 + d2 + m`` with ``S_i = shape_i + 2m``. The margin
``m`` makes a spatial offset ``(o0, o1, o2)`` with ``|o_i| <= m`` a constant key delta, and
keeps out-of-grid neighbours from aliasing onto another row (they land in the margin).
Lookups sort the table once and binary-search queries: O((N + M) log N), deterministic, no
hash-table extension, same on CPU and CUDA. This replaces torchsparse's CUDA-only
``GPUHashTable`` used by spvnas ``core/models/utils.py`` (mit-han-lab/spvnas).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_INT64_SAFE_LIMIT = 2**62


def grid_key_radices(spatial_shape: Sequence[int], margin: int = 0) -> tuple[int, int, int]:
    """Per-dimension radices ``S_i = spatial_shape[i] + 2 * margin``."""
    return tuple(int(s) + 2 * margin for s in spatial_shape)  # type: ignore[return-value]


def coords_to_keys(
    coords: torch.Tensor, spatial_shape: Sequence[int], batch_size: int, margin: int = 0
) -> torch.Tensor:
    """(N, 4) ``[b, d0, d1, d2]`` coordinates -> (N,) int64 keys (see module docstring).

    Coordinates must satisfy ``-margin <= d_i < spatial_shape[i] + margin`` for the keys to be
    injective; the caller guarantees it.
    """
    s0, s1, s2 = grid_key_radices(spatial_shape, margin)
    if batch_size * s0 * s1 * s2 >= _INT64_SAFE_LIMIT:
        raise OverflowError(f"grid {tuple(spatial_shape)} x batch {batch_size} too large for int64 keys")
    c = coords.long()
    return ((c[:, 0] * s0 + (c[:, 1] + margin)) * s1 + (c[:, 2] + margin)) * s2 + (c[:, 3] + margin)


def keys_to_coords(keys: torch.Tensor, spatial_shape: Sequence[int], margin: int = 0) -> torch.Tensor:
    """Inverse of :func:`coords_to_keys`: (N,) int64 -> (N, 4) int32 ``[b, d0, d1, d2]``."""
    s0, s1, s2 = grid_key_radices(spatial_shape, margin)
    d2 = keys % s2
    rest = keys // s2
    d1 = rest % s1
    rest = rest // s1
    d0 = rest % s0
    batch = rest // s0
    return torch.stack((batch, d0 - margin, d1 - margin, d2 - margin), dim=1).to(torch.int32)


def offset_to_key_delta(offset: Sequence[int], spatial_shape: Sequence[int], margin: int) -> int:
    """Key difference produced by moving a voxel by ``offset`` cells (``|offset_i| <= margin``)."""
    _, s1, s2 = grid_key_radices(spatial_shape, margin)
    return (int(offset[0]) * s1 + int(offset[1])) * s2 + int(offset[2])


class SortedKeyIndex:
    """Sorted copy of a key table answering "which row holds this key?" queries.

    Args:
        keys: (N,) int64 keys, unique.
    """

    def __init__(self, keys: torch.Tensor) -> None:
        self.sorted_keys, self.order = torch.sort(keys)
        self.num_keys = int(keys.shape[0])

    def lookup(self, query_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of ``query_keys`` in the table.

        Returns:
            found: (M,) bool, whether each query key is in the table.
            rows: (M,) int64 table row for each query (meaningless where ``found`` is False).
        """
        if self.num_keys == 0:
            empty = torch.zeros_like(query_keys, dtype=torch.bool)
            return empty, torch.zeros_like(query_keys)
        position = torch.searchsorted(self.sorted_keys, query_keys)
        position.clamp_(max=self.num_keys - 1)
        found = self.sorted_keys[position] == query_keys
        return found, self.order[position]


def query_coords(table_coords: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Row of each query coordinate in ``table_coords``, or -1 where absent.

    Args:
        table_coords: (N, 4) integer ``[b, d0, d1, d2]``, unique rows (e.g. a tensor's coords).
        query: (M, 4) integer coordinates, any values (negative or out-of-grid allowed).

    Returns:
        (M,) int64 row indices into ``table_coords``; -1 for coordinates not in the table.
    """
    if query.shape[0] == 0 or table_coords.shape[0] == 0:
        return torch.full((query.shape[0],), -1, dtype=torch.long, device=query.device)
    table = table_coords.long()
    lower = table.min(dim=0).values
    extent = table.max(dim=0).values - lower + 1  # cells per column of the table's bounding box
    q = query.long() - lower
    inside = ((q >= 0) & (q < extent)).all(dim=1)
    # keys over the bounding box [batch, d0, d1, d2]; columns hashed from the most significant
    extent_list = [int(e) for e in extent.tolist()]
    index = SortedKeyIndex(coords_to_keys(table - lower, extent_list[1:], extent_list[0]))
    q_in_box = torch.minimum(q.clamp(min=0), extent - 1)  # outside rows are masked below
    found, rows = index.lookup(coords_to_keys(q_in_box, extent_list[1:], extent_list[0]))
    hit = found & inside
    return torch.where(hit, rows, torch.full_like(rows, -1))
