"""Shared site and node machinery of the baselines (sites of a tap; bounded node sets for graphs).

Two things every baseline needs on a ragged LiDAR batch:

* :func:`gather_sites` -- which rows of a tap take part, and which scan, grid cell and label each
  row has. Rows of a ``voxel_*`` tap are the rows of ``batch.voxel_coords``; rows of a ``point_*``
  tap are the input points, of which those whose voxel was dropped by the cubic grid's training
  cap (``point_to_voxel == -1``; the backbones give them zero logits and features) are left out.
* :func:`build_nodes` -- the node sets of the structured terms (SKD pair-wise, KA affinity): a
  graph over all N ~ 1e5 sites of a scan would be an N x N matrix (1e10 entries, ~40 GB), so
  sites are pooled into coarse grid cells and at most ``max_nodes`` cells are kept per scan
  (docs/readings.md#baselines-nodes):

  1. node of a site = its grid cell ``(d0, d1, d2) // cell_size`` within its scan
     (the 3-D analogue of SKD's beta x beta patch); node feature = channel-wise **max** over the
     cell's sites (SKD's max-pooled nodes). Teacher and student share the assignment.
  2. a scan with more than ``max_nodes`` non-empty cells keeps ``max_nodes`` of them, drawn
     uniformly without replacement; the same draw serves teacher and student.

  Each scan's graph is then at most ``max_nodes x max_nodes`` whatever N is (default 4096:
  16.8 M entries, 67 MB fp32). **[D]** global coarse-cell graph, not PVD's supervoxel-local
  option B (docs/readings.md#baselines-nodes); **[D]** ``cell_size`` (4, 4, 2) on Cylinder3D's 480 x 360 x 32
  cylindrical grid and 8 voxels (0.4 m at 5 cm) on the cubic grids of SPVCNN / MinkUNet
  (docs/readings.md#baselines-nodes); **[D]** ``max_nodes = 4096``.

Node order is the sorted cell key, so pooling, sampling and the graphs do not depend on the
order of the sites inside a scan (same random draw -> same nodes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from harness.backbones.base import BACKBONES, BackboneInput
from harness.sparse.point_ops import scatter_max

Level = Literal["voxel", "point"]
LEVELS: tuple[str, ...] = ("voxel", "point")

#: [D] most nodes per scan and graph (docs/readings.md#baselines-nodes)
DEFAULT_MAX_NODES = 4096


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    return level


def default_cell_size(backbone: str) -> tuple[int, int, int]:
    """The [D] node cell of a registered backbone (its class attribute ``node_cell``, in grid cells)."""
    if backbone not in BACKBONES:
        raise KeyError(f"no default node cell for backbone {backbone!r}; pass cell_size=(s0, s1, s2)")
    return tuple(BACKBONES.get(backbone).node_cell)


@dataclass(frozen=True)
class Sites:
    """The rows of a tap that take part in a loss, already restricted to those rows.

    Attributes:
        rows: (R,) int64 row of each site in the tap's tensor, or None when every row takes part.
        scan: (R,) int64 scan (batch index) of each site.
        grid: (R, 3) int64 grid cell ``(d0, d1, d2)`` of each site (a point's cell is its voxel's).
        labels: (R,) int64 learning ids (0 = ignore), or None when the batch has none at this level.
        num_scans: scans in the batch (``batch.batch_size``).
    """

    rows: torch.Tensor | None
    scan: torch.Tensor
    grid: torch.Tensor
    labels: torch.Tensor | None
    num_scans: int

    @property
    def count(self) -> int:
        return int(self.scan.shape[0])

    def take(self, values: torch.Tensor) -> torch.Tensor:
        """The site rows of a tap tensor: (rows_of_tap, C) -> (R, C)."""
        return values if self.rows is None else values.index_select(0, self.rows)


def gather_sites(level: Level, batch: BackboneInput, num_rows: int, device: torch.device) -> Sites:
    """Sites of a ``{level}_*`` tap with ``num_rows`` rows (see module docstring).

    Raises:
        ValueError: the tap's row count is not the batch's number of voxels / points.
    """
    check_level(level)
    if level == "voxel":
        coords = batch.voxel_coords.to(device=device, dtype=torch.long)
        labels = batch.voxel_labels
        rows = None
        expected = coords.shape[0]
    else:
        coords = batch.point_coords.to(device=device, dtype=torch.long)
        labels = batch.point_labels
        expected = coords.shape[0]
        kept = batch.point_to_voxel.to(device) >= 0
        rows = None if bool(kept.all()) else kept.nonzero().squeeze(1)
    if num_rows != expected:
        raise ValueError(f"a {level}-level tap has {num_rows} rows but the batch has {expected} {level}s")
    if labels is not None:
        labels = labels.to(device=device, dtype=torch.long)
    if rows is not None:
        coords = coords.index_select(0, rows)
        labels = None if labels is None else labels.index_select(0, rows)
    return Sites(rows, coords[:, 0].contiguous(), coords[:, 1:].contiguous(), labels, int(batch.batch_size))


@dataclass(frozen=True)
class NodeSet:
    """Cell nodes of a batch's sites (:func:`build_nodes`).

    Attributes:
        site_index: (S,) int64 site (index into :class:`Sites`) of every site whose node was kept.
        node_of_site: (S,) int64 node of each such site, in ``[0, num_nodes)``.
        node_scan: (num_nodes,) int64 scan of each node; nodes are grouped by scan, in scan order.
        counts: nodes per scan (length ``num_scans``); each is at most ``max_nodes``.
    """

    site_index: torch.Tensor
    node_of_site: torch.Tensor
    node_scan: torch.Tensor
    counts: tuple[int, ...]

    @property
    def num_nodes(self) -> int:
        return int(self.node_scan.shape[0])

    def pool(self, site_feats: torch.Tensor) -> torch.Tensor:
        """Channel-wise max over each node's sites: (R, C) site features -> (num_nodes, C)."""
        return scatter_max(site_feats.index_select(0, self.site_index), self.node_of_site, self.num_nodes)

    def split(self, node_feats: torch.Tensor) -> list[torch.Tensor]:
        """(num_nodes, C) -> one (M_b, C) block per scan that has nodes."""
        return [block for block in torch.split(node_feats, list(self.counts)) if block.shape[0] > 0]


def build_nodes(sites: Sites, cell_size: Sequence[int], max_nodes: int = DEFAULT_MAX_NODES,
                generator: torch.Generator | None = None) -> NodeSet:
    """Pool sites into grid-cell nodes, at most ``max_nodes`` per scan (module docstring).

    Args:
        sites: the sites (their ``scan`` and ``grid``).
        cell_size: (s0, s1, s2) node cell in grid cells.
        max_nodes: most nodes kept per scan; extra cells are dropped uniformly at random.
        generator: random source of that draw (default: torch's global generator).
    """
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
    device = sites.scan.device
    cell = torch.as_tensor(tuple(cell_size), dtype=torch.long, device=device)
    if cell.shape != (3,) or bool((cell < 1).any()):
        raise ValueError(f"cell_size must be three positive integers, got {tuple(cell_size)}")
    if sites.count == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return NodeSet(empty, empty, empty, (0,) * sites.num_scans)
    cells = torch.div(sites.grid, cell, rounding_mode="floor")
    cells = cells - cells.min(0).values  # non-negative for the key
    extent = cells.max(0).values + 1
    key = ((sites.scan * extent[0] + cells[:, 0]) * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2]
    unique_keys, node = torch.unique(key, return_inverse=True)  # sorted: grouped by scan
    num_nodes = unique_keys.shape[0]
    node_scan = torch.div(unique_keys, extent[0] * extent[1] * extent[2], rounding_mode="floor")
    counts = torch.bincount(node_scan, minlength=sites.num_scans)
    site_index = torch.arange(sites.count, device=device)
    if int(counts.max()) > max_nodes:
        # uniform draw per scan: random priorities, rank inside the scan, keep the first max_nodes
        priority = torch.rand(num_nodes, generator=generator, device=device)
        order = torch.argsort(priority)
        order = order[torch.argsort(node_scan[order], stable=True)]
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(num_nodes, device=device) - starts[node_scan[order]]
        keep = torch.zeros(num_nodes, dtype=torch.bool, device=device)
        keep[order[rank < max_nodes]] = True
        new_id = torch.cumsum(keep, 0) - 1
        site_keep = keep[node]
        site_index = site_index[site_keep]
        node = new_id[node[site_keep]]
        node_scan = node_scan[keep]
        counts = torch.bincount(node_scan, minlength=sites.num_scans)
    return NodeSet(site_index, node, node_scan, tuple(int(c) for c in counts.tolist()))
