"""SPVCNN (spvnas's manually designed point-voxel net) on the harness's sparse-conv interface.

Follows mit-han-lab/spvnas ``core/models/semantic_kitti/spvcnn.py`` and its point<->voxel ops in
``core/models/utils.py``, in pure torch. The voxel branch is :class:`~harness.backbones.minkunet.MinkUNet`'s
(``ResidualBlock.downsample`` is ``nn.Identity()`` when in == out, as in spvnas). With p2v = ``point_to_voxel``
(mean of the point features per voxel of ``floor(coords / stride)``) and devox = :func:`devoxelize`::

    x0 = initial_voxelize(z);  z0 = devox(stem(x0));  x1..x4 = stages(p2v(x0, z0))
    z1 = devox(x4) + point_transforms[0](z0);  y2 = up2(up1(dropout(p2v(x4, z1))))   (skips x3, x2)
    z2 = devox(y2) + point_transforms[1](z1);  y4 = up4(up3(dropout(p2v(y2, z2))))   (skips x1, x0)
    z3 = devox(y4) + point_transforms[2](z2);  logits = classifier(z3)
    devox: trilinear from the 8 voxels floor(p) + {0,1}^3 of p = coords / stride, corner order 4 dx + 2 dy + dz,
           w = prod_i (dx_i ? p_i - floor_i : floor_i + 1 - p_i), missing corners 0, / (sum + 1e-8)

The "points" ``z`` are, as in spvnas, one per voxel (its representative features, integer voxel coordinate as
position) [docs/readings.md#spvcnn-points], so the point branch has M rows in ``voxel_coords`` order:
``voxel_logits`` (M, C) = the point-branch logits; ``point_logits`` (N, C) = ``voxel_logits[point_to_voxel]``
(zeros for voxels dropped by the training voxel cap); taps ``voxel_features`` (M, cs8) = ``z3``,
``point_features`` (N, cs8) its gather. Logit ``j`` is learning id ``j + label_offset``
[docs/readings.md#spvnas-label-offset].
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from harness.backbones.base import BackboneInput, BackboneOutput
from harness.backbones.minkunet import SpvnasUNet, input_spatial_shape
from harness.sparse import SparseTensor, query_coords, scatter_mean
from harness.sparse.hashing import coords_to_keys, keys_to_coords

__all__ = ["SPVCNN", "PointBranch", "devoxelize", "trilinear_corners", "trilinear_weights"]

#: corner offsets (dx, dy, dz) in torchsparse's even-kernel order: index = 4 dx + 2 dy + dz
CORNER_OFFSETS = tuple((dx, dy, dz) for dx in (0, 1) for dy in (0, 1) for dz in (0, 1))


def trilinear_weights(positions: torch.Tensor, corner_rows: torch.Tensor) -> torch.Tensor:
    """torchsparse ``calc_ti_weights(positions, corner_rows, scale=1)``: (P, 8) float32 weights.

    Args:
        positions: (P, 3) point positions in units of the target level's cells (``coords / stride``).
        corner_rows: (P, 8) row of each corner ``floor(p) + CORNER_OFFSETS[k]`` in the voxel table, -1 if absent.

    Returns:
        (P, 8) float32: trilinear weights, 0 for absent corners, renormalised by ``sum + 1e-8``.
    """
    with torch.no_grad():
        p = positions.float()
        low = torch.floor(p)
        frac_high = p - low  # weight factor of the +1 corner
        frac_low = (low + 1.0) - p  # weight factor of the floor corner
        columns = []
        for dx, dy, dz in CORNER_OFFSETS:
            wx = frac_high[:, 0] if dx else frac_low[:, 0]
            wy = frac_high[:, 1] if dy else frac_low[:, 1]
            wz = frac_high[:, 2] if dz else frac_low[:, 2]
            columns.append(wx * wy * wz)
        weights = torch.stack(columns, dim=1)
        weights[corner_rows == -1] = 0
        weights /= weights.sum(dim=1, keepdim=True) + 1e-8
    return weights


def trilinear_corners(x: SparseTensor, point_coords: torch.Tensor, point_batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Corner rows and weights of every point for devoxelising ``x`` (spvnas ``voxel_to_point``).

    Args:
        x: voxel tensor at stride ``s`` (isotropic).
        point_coords: (P, 3) float point positions in input-grid cells.
        point_batch: (P,) integer batch index.

    Returns:
        rows (P, 8) int64 (-1 where the corner voxel is absent) and weights (P, 8) float32.
    """
    stride = x.stride[0]
    positions = point_coords.float() / stride
    base = torch.floor(positions).long()
    offsets = torch.tensor(CORNER_OFFSETS, dtype=torch.long, device=base.device)
    corners = base.unsqueeze(1) + offsets.unsqueeze(0)  # (P, 8, 3)
    batch = point_batch.long().view(-1, 1, 1).expand(-1, 8, 1)
    query = torch.cat((batch, corners), dim=2).reshape(-1, 4)
    rows = query_coords(x.coords, query).view(-1, 8)
    return rows, trilinear_weights(positions, rows)


class _Devoxelize(torch.autograd.Function):
    """``out[p] = sum_k w[p, k] * feats[rows[p, k]]`` (rows -1 skipped); gradient w.r.t. feats only.

    The same function as torchsparse ``DevoxelizeFunction`` without materialising a (P, 8, C) tensor.
    """

    @staticmethod
    def forward(ctx: Any, feats: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        weights = weights.to(feats.dtype)
        ctx.save_for_backward(rows, weights)
        ctx.num_voxels = feats.shape[0]
        out = feats.new_zeros((rows.shape[0], feats.shape[1]))
        for k in range(rows.shape[1]):
            hit = (rows[:, k] >= 0).nonzero().squeeze(1)
            if hit.numel():
                out.index_add_(0, hit, feats.index_select(0, rows[hit, k]) * weights[hit, k : k + 1])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        rows, weights = ctx.saved_tensors
        grad_feats = grad_out.new_zeros((ctx.num_voxels, grad_out.shape[1]))
        for k in range(rows.shape[1]):
            hit = (rows[:, k] >= 0).nonzero().squeeze(1)
            if hit.numel():
                grad_feats.index_add_(0, rows[hit, k], grad_out.index_select(0, hit) * weights[hit, k : k + 1])
        return grad_feats, None, None


def devoxelize(feats: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(M, C) voxel features -> (P, C) point features with (P, 8) corner ``rows`` and ``weights``."""
    return _Devoxelize.apply(feats.contiguous(), rows, weights)


class PointBranch:
    """The spvnas ``PointTensor`` caches for one forward: points, and per-stride query results.

    Attributes:
        coords: (P, 3) float32 positions in cells of the (initially voxelised) input grid.
        batch: (P,) int64 batch index.
        voxel_rows: stride -> (P,) row of each point's voxel (``point_to_voxel`` cache, ``idx_query``).
        corners: stride -> (rows, weights) (``voxel_to_point`` cache, ``idx_query_devox``/``weights_devox``).
    """

    def __init__(self, coords: torch.Tensor, batch: torch.Tensor) -> None:
        self.coords = coords
        self.batch = batch
        self.voxel_rows: dict[tuple[int, int, int], torch.Tensor] = {}
        self.corners: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def initial_voxelize(cls, feats: torch.Tensor, coords: torch.Tensor, batch_size: int, pres: float, vres: float,
                         spatial_shape: tuple[int, int, int] | None = None) -> tuple["PointBranch", SparseTensor]:
        """spvnas ``initial_voxelize``: voxels of ``floor(coords * pres / vres)``, features = per-voxel mean.

        Args:
            feats: (P, F) point features.
            coords: (P, 4) ``[batch, d0, d1, d2]`` point positions (integer voxel coordinates in spvnas).
            batch_size: number of scans.
            pres, vres: point and voxel resolution [m] (both 0.05 for SemanticKITTI).
            spatial_shape: extent to cover at least (padded to a multiple of 16 anyway).

        Returns:
            the point branch (positions rescaled by ``pres / vres``) and the stride-1 voxel tensor with
            voxels sorted by ``[batch, d0, d1, d2]`` (torch.unique order, as in spvnas).
        """
        batch = coords[:, 0].long()
        positions = coords[:, 1:].float() * pres / vres
        cells = torch.floor(positions).long()
        int_coords = torch.cat((batch.unsqueeze(1), cells), dim=1)
        lower = cells.min(dim=0).values if cells.shape[0] else torch.zeros(3, dtype=torch.long, device=cells.device)
        if bool((lower < 0).any()):
            raise ValueError("point coordinates must be non-negative after scaling by pres / vres")
        extent = [int(v) + 1 for v in cells.max(dim=0).values.tolist()] if cells.shape[0] else [1, 1, 1]
        keys = coords_to_keys(int_coords, extent, batch_size)
        unique_keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        voxel_coords = keys_to_coords(unique_keys, extent)
        voxel_feats = scatter_mean(feats, inverse, int(unique_keys.shape[0]))
        shape = input_spatial_shape(voxel_coords, spatial_shape if pres == vres else None)
        branch = cls(positions, batch)
        branch.voxel_rows[(1, 1, 1)] = inverse
        return branch, SparseTensor.from_coords(voxel_feats, voxel_coords, shape, batch_size)

    def rows_in(self, x: SparseTensor) -> torch.Tensor:
        """(P,) row of ``x`` holding each point's ``floor(position / stride)`` (cached per stride)."""
        rows = self.voxel_rows.get(x.stride)
        if rows is None:
            cells = torch.floor(self.coords / x.stride[0]).long()
            rows = query_coords(x.coords, torch.cat((self.batch.unsqueeze(1), cells), dim=1))
            self.voxel_rows[x.stride] = rows
        return rows

    def to_voxels(self, x: SparseTensor, point_feats: torch.Tensor) -> SparseTensor:
        """spvnas ``point_to_voxel(x, z)``: ``x``'s voxels with the mean of their points' features."""
        rows = self.rows_in(x).clamp(min=0)  # spvnas: idx_query.clamp_(0)
        return x.replace_feature(scatter_mean(point_feats, rows, x.num_voxels))

    def from_voxels(self, x: SparseTensor) -> torch.Tensor:
        """spvnas ``voxel_to_point(x, z)``: trilinear devoxelisation of ``x.feats`` to the points."""
        cached = self.corners.get(x.stride)
        if cached is None:
            cached = trilinear_corners(x, self.coords, self.batch)
            self.corners[x.stride] = cached
        return devoxelize(x.feats, *cached)


class SPVCNN(SpvnasUNet):
    """spvnas SPVCNN: ``SPVCNN(width=1.0)`` teacher (cr 1.0), ``SPVCNN(width=0.5)`` student.

    Args:
        width: channel ratio ``cr``.
        num_classes: classifier outputs (19 = official SemanticKITTI head; logit j = learning id j + label_offset).
        in_channels: input features per point (4: x, y, z, remission).
        label_offset: learning id of logit 0.
        pres, vres: point / voxel resolution of ``initial_voxelize`` (spvnas passes the dataset's
            ``voxel_size`` 0.05 for both).

    See the module docstring for the forward and the output/tap definitions.
    """

    identity_block = nn.Identity
    family = "SPVNAS"

    def __init__(self, width: float = 1.0, num_classes: int = 19, in_channels: int = 4, label_offset: int = 1,
                 pres: float = 0.05, vres: float = 0.05) -> None:
        super().__init__(width, num_classes, in_channels, label_offset)
        self.pres = float(pres)
        self.vres = float(vres)

    def forward_parameter_count(self) -> int:
        """Parameters the forward uses: all of them."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, batch: BackboneInput) -> BackboneOutput:
        x_in = self._input_tensor(batch)
        z, x0 = PointBranch.initial_voxelize(x_in.feats, x_in.coords, batch.batch_size, self.pres, self.vres, x_in.spatial_shape)

        x0 = self.stem(x0)
        z0 = z.from_voxels(x0)

        x1 = self.stage1(z.to_voxels(x0, z0))
        x2 = self.stage2(x1)
        x3 = self.stage3(x2)
        x4 = self.stage4(x3)
        z1 = z.from_voxels(x4) + self.point_transforms[0](z0)

        y1 = z.to_voxels(x4, z1)
        y1 = y1.replace_feature(self.dropout(y1.feats))
        y1 = self._decode(self.up1, y1, x3)
        y2 = self._decode(self.up2, y1, x2)
        z2 = z.from_voxels(y2) + self.point_transforms[1](z1)

        y3 = z.to_voxels(y2, z2)
        y3 = y3.replace_feature(self.dropout(y3.feats))
        y3 = self._decode(self.up3, y3, x1)
        y4 = self._decode(self.up4, y3, x0)
        z3 = z.from_voxels(y4) + self.point_transforms[2](z2)
        return self._outputs(batch, z3)
