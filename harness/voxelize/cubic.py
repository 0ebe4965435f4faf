"""Cubic voxelisation with spvnas / torchsparse ``sparse_quantize`` semantics (MinkUNet, SPVCNN).

Followed (mit-han-lab/spvnas ``core/datasets/semantic_kitti.py`` ``SemanticKITTIInternal.__getitem__``;
torchsparse ``utils/quantize.py`` ``sparse_quantize`` / ``ravel_hash``):

* ``coords = round(xyz / voxel_size)`` (0.05 m), shifted so that the minimum is 0 on every axis;
* voxels = unique coordinates ordered by the x-major ravel hash; ``np.unique(..., return_index=True)``
  picks the *first* point (in scan order) of each voxel as its representative, and that point's
  features ``(x, y, z, remission)`` and label become the voxel's -- spvnas does not vote;
* the inverse map sends every point to its voxel, used to map voxel predictions back to points;
* in training spvnas keeps at most ``num_points`` = 80 000 voxels, drawn at random without replacement.
"""
from __future__ import annotations

import numpy as np

from harness.voxelize.sparse_grid import VoxelizedScan, sorted_unique

SPVNAS_VOXEL_SIZE = 0.05  # metres; configs/semantic_kitti/default.yaml
SPVNAS_MAX_TRAIN_VOXELS = 80_000


def cubic_voxelize(points: np.ndarray, labels: np.ndarray | None = None, voxel_size: float = SPVNAS_VOXEL_SIZE,
                   max_voxels: int | None = None, rng: np.random.Generator | None = None) -> VoxelizedScan:
    """Voxelise one scan on a cubic grid.

    Args:
        points: (N, 4) float32 ``x, y, z`` [m] and remission, after augmentation.
        labels: optional (N,) learning ids.
        voxel_size: edge length [m].
        max_voxels: keep at most this many voxels (random subset, training only), needs ``rng``.

    Returns:
        :class:`VoxelizedScan`; ``point_features`` are the (N, 4) point features, ``voxel_point_index``
        (M,) the representative point per voxel (so voxel features = ``points[voxel_point_index]``),
        ``voxel_labels`` its label. With ``max_voxels`` the dropped voxels' points map to -1.
    """
    coords = np.round(points[:, :3] / voxel_size).astype(np.int32)
    coords -= coords.min(axis=0, keepdims=True) if coords.shape[0] else 0
    extent = coords.max(axis=0).astype(np.int64) + 1 if coords.shape[0] else np.ones(3, np.int64)
    linear = (coords[:, 0].astype(np.int64) * extent[1] + coords[:, 1]) * extent[2] + coords[:, 2]
    # first = first occurrence of each voxel in scan order (np.unique's return_index semantics)
    _, first, inverse, _ = sorted_unique(linear)
    point_to_voxel = inverse
    if max_voxels is not None and first.shape[0] > max_voxels:
        if rng is None:
            raise ValueError("max_voxels needs an rng (training-time random subset)")
        keep = np.sort(rng.choice(first.shape[0], max_voxels, replace=False))
        remap = np.full(first.shape[0], -1, dtype=np.int64)
        remap[keep] = np.arange(keep.shape[0])
        first = first[keep]
        point_to_voxel = remap[inverse]
    voxel_coords = coords[first]
    return VoxelizedScan(grid_index=coords, voxel_coords=voxel_coords, point_to_voxel=point_to_voxel,
                         point_features=np.ascontiguousarray(points[:, :4], dtype=np.float32),
                         voxel_labels=None if labels is None else np.asarray(labels, dtype=np.int64)[first],
                         grid_size=None, voxel_point_index=first,
                         point_xyz=np.ascontiguousarray(points[:, :3], dtype=np.float32))
