"""Supervoxel partition and difficulty-aware sampling of PVD (Hou et al., CVPR 2022, Sec. 3.3).

* **Partition** [docs/readings.md#pvd-supervoxel-size]: the cylindrical grid (R x A x H = 480 x 360 x 32, Cylinder3D's
  fixed volume) is tiled into supervoxels of ``size`` voxels, default (120, 60, 8) -> ``divisions`` (4, 6, 4)
  -> S = 96 per scan (ragged last tiles allowed). A point's supervoxel is its cylindrical voxel index // size
  (backbones on another grid: Cylinder3D's rule from the Cartesian position); id
  ``(i_rho * A_s + i_phi) * H_s + i_z`` in ``[0, S)``, ``scan * S + id`` in a batch.
* **Difficulty weight** (PVKD supplementary material)::

      W_i = f_class(N_minor_i) * f_dist(D_i),   f_class(n) = alpha * exp(beta * n) + 1   (alpha 4, beta -2)
      rarity_c = (log p_c - log p_min) / (log p_max - log p_min),   N_minor_i = min_{c in i} rarity_c
      f_dist(D) = 1 + D / R_max     (D: radius [m] of the supervoxel's centre, R_max = 50 m)

  [docs/readings.md#pvd-n-minor, #pvd-f-dist, #pvd-alpha-beta]; ``n_minor="mean"`` and ``f_dist="linear"`` are the
  alternatives there.
* **Sampling** [docs/readings.md#pvd-sampling]: ``P_i = W_i / sum_j W_j`` over the occupied supervoxels of a
  scan; ``K`` drawn without replacement (``torch.multinomial``); strategies ``difficulty``, ``class_only``,
  ``distance_only``, ``random``.
* **Members** [docs/readings.md#pvd-members]: at most ``limit`` points (N_p) / voxels (N_v) per sampled supervoxel, a
  uniformly random subset when more (the same rows for both nets), returned as a padded index plus a mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.voxelize.cylindrical import CylindricalGrid

__all__ = [
    "SAMPLING_STRATEGIES",
    "SupervoxelPartition",
    "class_rarity",
    "f_class",
    "f_dist",
    "gather_members",
    "minority_score",
    "sample_supervoxels",
    "sampling_weights",
]

SAMPLING_STRATEGIES = ("difficulty", "random", "class_only", "distance_only")
F_DIST_FORMS = ("one_plus_linear", "linear")
N_MINOR_READINGS = ("rarest", "mean")


@dataclass(frozen=True)
class SupervoxelPartition:
    """Fixed tiling of a cylindrical grid into supervoxels of ``size`` voxels (default (120, 60, 8))."""

    grid: CylindricalGrid = CylindricalGrid()
    size: tuple[int, int, int] = (120, 60, 8)

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.size)
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"supervoxel size must be three positive voxel counts, got {self.size}")
        object.__setattr__(self, "size", size)

    @property
    def divisions(self) -> tuple[int, int, int]:
        """Supervoxels along (rho, phi, z): ``ceil(grid / size)``; (4, 6, 4) for the default."""
        return tuple(-(-g // s) for g, s in zip(self.grid.grid_size, self.size))  # type: ignore[return-value]

    @property
    def num_supervoxels(self) -> int:
        """S, supervoxels per scan (96 for the default)."""
        return math.prod(self.divisions)

    def from_grid_index(self, index: torch.Tensor) -> torch.Tensor:
        """(R, 3) integer cylindrical voxel indices ``(rho, phi, z)`` -> (R,) int64 supervoxel ids."""
        index = index.long()
        upper = torch.tensor(self.grid.grid_size, device=index.device) - 1
        index = torch.minimum(index.clamp(min=0), upper)
        size = torch.tensor(self.size, device=index.device)
        sv = torch.div(index, size, rounding_mode="floor")
        _, na, nh = self.divisions
        return (sv[:, 0] * na + sv[:, 1]) * nh + sv[:, 2]

    def cell_index_from_xyz(self, xyz: torch.Tensor) -> torch.Tensor:
        """(R, 3) Cartesian [m] -> (R, 3) int64 cylindrical voxel indices (Cylinder3D's clip-and-floor).

        Computed in float64 (the harness's numpy voxeliser works in float64 after the clip as well);
        used for backbones whose own grid is not cylindrical.
        """
        xyz = xyz.double()
        pol = torch.stack((torch.hypot(xyz[:, 0], xyz[:, 1]), torch.atan2(xyz[:, 1], xyz[:, 0]), xyz[:, 2]), dim=1)
        lo = torch.tensor(self.grid.min_bound, dtype=torch.float64, device=xyz.device)
        hi = torch.tensor(self.grid.max_bound, dtype=torch.float64, device=xyz.device)
        interval = torch.as_tensor(self.grid.intervals, dtype=torch.float64, device=xyz.device)
        return torch.floor((torch.minimum(torch.maximum(pol, lo), hi) - lo) / interval).long()

    def from_xyz(self, xyz: torch.Tensor) -> torch.Tensor:
        """(R, 3) Cartesian [m] -> (R,) supervoxel ids through :meth:`cell_index_from_xyz`."""
        return self.from_grid_index(self.cell_index_from_xyz(xyz))

    def centre_radius(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(S,) float32 radial distance [m] of each supervoxel's centre from the sensor.

        The middle of the supervoxel's ``rho`` range ``[i * s, min((i + 1) * s, R)]`` voxels, times the
        radial voxel size, plus the volume's inner bound.
        """
        nr, na, nh = self.divisions
        s, total = self.size[0], self.grid.grid_size[0]
        ring = torch.arange(nr, dtype=torch.float64)
        centre_voxels = (ring * s + torch.clamp((ring + 1) * s, max=total)) / 2
        radius = self.grid.min_bound[0] + centre_voxels * float(self.grid.intervals[0])
        return radius.repeat_interleave(na * nh).to(device=device, dtype=torch.float32)

    @property
    def max_radius(self) -> float:
        """R_max [m]: the volume's outer radius (50 m for SemanticKITTI and nuScenes)."""
        return float(self.grid.max_bound[0])


def class_rarity(class_frequency: torch.Tensor, ignore_index: int = 0) -> torch.Tensor:
    """(C,) float32 log-normalised frequency in [0, 1]: 0 = the rarest class, 1 = the most frequent.

    ``rarity_c = (log p_c - log p_min) / (log p_max - log p_min)`` over the classes other than
    ``ignore_index`` (which gets 1: it never makes a supervoxel rare). Classes with frequency 0 count
    as the rarest observed one. When every class is equally frequent (a uniform
    placeholder) all rarities are 1: no class is rarer than another.
    """
    freq = torch.as_tensor(class_frequency, dtype=torch.float64).flatten()
    keep = torch.ones_like(freq, dtype=torch.bool)
    if 0 <= ignore_index < freq.numel():
        keep[ignore_index] = False
    rarity = torch.ones_like(freq)
    values = freq[keep]
    positive = values[values > 0]
    if positive.numel() == 0:
        return rarity.float()
    logf = values.clamp(min=float(positive.min())).log()
    lo, hi = float(logf.min()), float(logf.max())
    if hi - lo > 1e-12:
        rarity[keep] = (logf - lo) / (hi - lo)
    return rarity.float()


def minority_score(labels: torch.Tensor, supervoxel: torch.Tensor, num_supervoxels: int, rarity: torch.Tensor,
                   reduce: str = "rarest", ignore_index: int = 0) -> torch.Tensor:
    """N_minor per supervoxel: (num_supervoxels,) float32 in [0, 1], small where rare classes are.

    Args:
        labels: (R,) learning ids of points (or voxels); ``ignore_index`` rows are skipped.
        supervoxel: (R,) supervoxel id of each row in ``[0, num_supervoxels)``.
        rarity: (C,) from :func:`class_rarity`.
        reduce: ``"rarest"`` -- rarity of the rarest class present; ``"mean"`` -- mean rarity of the
            labelled rows. Supervoxels without labelled rows get 1.
    """
    if reduce not in N_MINOR_READINGS:
        raise ValueError(f"n_minor must be one of {N_MINOR_READINGS}, got {reduce!r}")
    keep = labels != ignore_index
    sv = supervoxel[keep].long()
    r = rarity.to(labels.device)[labels[keep].long()]
    out = torch.ones(num_supervoxels, dtype=torch.float32, device=labels.device)
    if reduce == "rarest":
        return out.scatter_reduce(0, sv, r, reduce="amin", include_self=True)
    sums = torch.zeros_like(out).index_add_(0, sv, r)
    counts = torch.zeros_like(out).index_add_(0, sv, torch.ones_like(r))
    return torch.where(counts > 0, sums / counts.clamp(min=1.0), out)


def f_class(n_minor: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Supplement's ``f_class = alpha * exp(beta * N_minor) + 1``."""
    return alpha * torch.exp(beta * n_minor) + 1.0


def f_dist(distance: torch.Tensor, r_max: float, form: str = "one_plus_linear") -> torch.Tensor:
    """Increasing in the distance [m]: ``1 + D / R_max`` (default) or ``D / R_max``."""
    if form == "one_plus_linear":
        return 1.0 + distance / r_max
    if form == "linear":
        return distance / r_max
    raise ValueError(f"f_dist must be one of {F_DIST_FORMS}, got {form!r}")


def sampling_weights(strategy: str, occupied: torch.Tensor, distance: torch.Tensor, n_minor: torch.Tensor | None,
                     alpha: float, beta: float, r_max: float, dist_form: str = "one_plus_linear") -> torch.Tensor:
    """Unnormalised sampling weights W, 0 for unoccupied supervoxels.

    Args:
        strategy: one of :data:`SAMPLING_STRATEGIES`.
        occupied: (..., S) bool supervoxels holding at least one point.
        distance: (S,) or (..., S) centre radius [m].
        n_minor: (..., S) N_minor, or None (no labels: the class factor is the constant 1).
    """
    if strategy not in SAMPLING_STRATEGIES:
        raise ValueError(f"sampling must be one of {SAMPLING_STRATEGIES}, got {strategy!r}")
    weight = torch.ones(occupied.shape, dtype=torch.float32, device=occupied.device)
    if strategy in ("difficulty", "class_only") and n_minor is not None:
        weight = weight * f_class(n_minor, alpha, beta)
    if strategy in ("difficulty", "distance_only"):
        weight = weight * f_dist(distance.to(weight.device), r_max, dist_form)
    return weight * occupied.to(weight.dtype)


def sample_supervoxels(weights: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``k`` supervoxels per scan without replacement, with probability proportional to ``weights``.

    Args:
        weights: (B, S) non-negative; zero = never drawn.
        k: draws per scan (all positive-weight supervoxels when fewer).
        generator: torch generator on ``weights``' device (None: the global RNG).

    Returns:
        (B, k) int64 local supervoxel ids, ``-1`` where a scan had fewer than ``k`` candidates.
    """
    out = torch.full((weights.shape[0], k), -1, dtype=torch.long, device=weights.device)
    for b in range(weights.shape[0]):  # one multinomial per scan (ragged candidate counts)
        w = weights[b]
        n = int((w > 0).sum())
        if n:
            take = min(k, n)
            out[b, :take] = torch.multinomial(w, take, replacement=False, generator=generator)
    return out


def gather_members(group: torch.Tensor, num_groups: int, limit: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded member lists of groups: at most ``limit`` rows per group, uniformly random when more.

    Vectorised (one sort); rows keep their original order when no group exceeds ``limit``.

    Args:
        group: (R,) int64 group of each row, ``-1`` for rows in no group.
        num_groups: G.
        limit: maximal members per group (``N_p`` or ``N_v``).
        generator: for the random subset (same device as ``group``).

    Returns:
        ``(index, mask)``: (G, limit) int64 row indices (0 at padding) and (G, limit) bool validity.
    """
    rows = (group >= 0).nonzero().squeeze(1)
    g = group[rows]
    counts = torch.bincount(g, minlength=num_groups)
    if rows.numel() and int(counts.max()) > limit:
        priority = torch.rand(g.shape, generator=generator, dtype=torch.float64, device=g.device)
        order = torch.argsort(g.double() + priority)
    else:
        order = torch.sort(g, stable=True).indices
    g_sorted, rows_sorted = g[order], rows[order]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(g_sorted.numel(), device=g.device) - starts[g_sorted]
    take = rank < limit
    index = torch.zeros((num_groups, limit), dtype=torch.long, device=g.device)
    mask = torch.zeros((num_groups, limit), dtype=torch.bool, device=g.device)
    index[g_sorted[take], rank[take]] = rows_sorted[take]
    mask[g_sorted[take], rank[take]] = True
    return index, mask
