"""Per-distance evaluation bins.

Two modes:

* ``harness`` (default): half-open 3-D range bins ``[0,10), [10,20), [20,30), [30,40), [40,50), [50, inf)``
  metres, so every point lands in exactly one bin.
* ``official``: identical to semantic-kitti-api ``evaluate_semantics_by_distance.py``:
  ``DISTANCES = [(1e-8, 10), (10, 20), (20, 30), (30, 40), (40, 50)]`` with *strict* inequalities on both
  ends (``depth > lo and depth < hi``): points at exactly 10.0, 20.0, ... m and every point at >= 50 m
  fall in no bin and are not evaluated (docs/readings.md#distance-bins).

The range is measured on the evaluated (target) scan's points, in its own LiDAR frame; ``3d`` is
``||(x, y, z)||`` (the api's ``depth``), ``bev`` is ``||(x, y)||`` (Cylinder3D's grid radius).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HARNESS_EDGES = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, float("inf"))
OFFICIAL_BINS = ((1e-8, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 40.0), (40.0, 50.0))


@dataclass(frozen=True)
class DistanceBins:
    """A list of (lo, hi) bins in metres and whether they are open (official) or half-open."""

    bins: tuple[tuple[float, float], ...]
    open_intervals: bool
    range_kind: str = "3d"

    @classmethod
    def make(cls, mode: str = "harness", range_kind: str = "3d") -> "DistanceBins":
        if mode == "harness":
            edges = HARNESS_EDGES
            return cls(tuple(zip(edges[:-1], edges[1:])), False, range_kind)
        if mode == "official":
            return cls(OFFICIAL_BINS, True, range_kind)
        raise ValueError(f"unknown distance mode {mode!r}; use 'harness' or 'official'")

    @property
    def labels(self) -> list[str]:
        return [f"{lo:g}-{hi:g}m" if np.isfinite(hi) else f">={lo:g}m" for lo, hi in self.bins]

    def point_range(self, xyz: np.ndarray) -> np.ndarray:
        xyz = np.asarray(xyz, dtype=np.float64)
        if self.range_kind == "3d":
            return np.linalg.norm(xyz[:, :3], axis=1)
        if self.range_kind == "bev":
            return np.linalg.norm(xyz[:, :2], axis=1)
        raise ValueError(f"unknown range kind {self.range_kind!r}; use '3d' or 'bev'")

    def assign(self, xyz: np.ndarray) -> np.ndarray:
        """(N,) bin index per point, -1 for points in no bin."""
        rng = self.point_range(xyz)
        out = np.full(rng.shape[0], -1, dtype=np.int64)
        for i, (lo, hi) in enumerate(self.bins):
            if self.open_intervals:
                mask = (rng > lo) & (rng < hi)
            else:
                mask = (rng >= lo) & (rng < hi)
            out[mask] = i
        return out
