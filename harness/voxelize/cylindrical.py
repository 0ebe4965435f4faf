"""Cylindrical voxelisation as Cylinder3D's ``cylinder_dataset.__getitem__``, without any dense grid.

Semantics followed (xinge008/Cylinder3D ``dataloader/dataset_semantickitti.py``, ``cylinder_dataset``
with ``fixed_volume_space: True``; the PVKD fork is identical there):

* polar coordinates ``(rho, phi, z)`` with ``rho = sqrt(x^2 + y^2)`` [m], ``phi = atan2(y, x)`` [rad],
  computed in float32 as the original (its ``cart2polar`` runs on the float32 scan);
* fixed volume ``rho`` 0..50 m, ``phi`` -pi..pi, ``z`` -4..2 m (nuScenes: -5..3 m), grid 480 x 360 x 32;
* ``interval = (max - min) / (grid - 1)`` -- note the ``- 1`` -- and
  ``index = floor((clip(pol, min, max) - min) / interval)``: points outside the volume are clipped
  into the border voxels, not dropped;
* per-point features (9): ``[pol - voxel_centre (3), pol (3), x, y, remission]`` with
  ``voxel_centre = (index + 0.5) * interval + min``;
* voxel label = majority vote of its points' labels, ties to the smallest label id (the original's
  ``np.argmax`` over a per-voxel histogram in ``nb_process_label``); label 0 votes like any other.

Where the original builds a dense 480x360x32 label grid and a dense 4x480x360x32 voxel-position
array per scan (5.5 M cells), this returns only the occupied voxels, sorted in the original's
lexicographic ``(rho, phi, z)`` order -- the order ``torch.unique(..., dim=0)`` gives in the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.voxelize.sparse_grid import VoxelizedScan, majority_vote_or_unique


@dataclass(frozen=True)
class CylindricalGrid:
    """A fixed cylindrical volume and its resolution.

    Bounds are ``(rho [m], phi [rad], z [m])``; ``grid_size`` is voxels along each axis.
    """

    grid_size: tuple[int, int, int] = (480, 360, 32)
    min_bound: tuple[float, float, float] = (0.0, -np.pi, -4.0)
    max_bound: tuple[float, float, float] = (50.0, np.pi, 2.0)

    @classmethod
    def semantickitti(cls) -> "CylindricalGrid":
        return cls()

    @classmethod
    def nuscenes(cls) -> "CylindricalGrid":
        # Cylinder3D config/nuScenes.yaml: min_volume_space [0, -pi, -5], max_volume_space [50, pi, 3]
        return cls(min_bound=(0.0, -np.pi, -5.0), max_bound=(50.0, np.pi, 3.0))

    @property
    def intervals(self) -> np.ndarray:
        """Voxel size per axis: ``(max - min) / (grid - 1)`` (float64, as the original)."""
        return (np.asarray(self.max_bound) - np.asarray(self.min_bound)) / (np.asarray(self.grid_size) - 1)


def cart2polar(xyz: np.ndarray) -> np.ndarray:
    """(N, 3) Cartesian -> (N, 3) ``(rho, phi, z)`` in the input dtype (float32 for scans)."""
    rho = np.sqrt(xyz[:, 0] ** 2 + xyz[:, 1] ** 2)
    phi = np.arctan2(xyz[:, 1], xyz[:, 0])
    return np.stack((rho, phi, xyz[:, 2]), axis=1)


def cylindrical_voxelize(points: np.ndarray, labels: np.ndarray | None = None,
                         grid: CylindricalGrid = CylindricalGrid()) -> VoxelizedScan:
    """Voxelise one scan on the cylindrical grid.

    Args:
        points: (N, 4) float32 ``x, y, z`` [m] and remission (after any augmentation).
        labels: optional (N,) int learning ids.
        grid: the cylindrical volume.

    Returns:
        :class:`VoxelizedScan` with ``grid_index`` (N, 3) int32 ``(rho, phi, z)`` voxel per point,
        ``voxel_coords`` (M, 3) int32 sorted lexicographically, ``point_to_voxel`` (N,) int64,
        ``point_features`` (N, 9) float32 and ``voxel_labels`` (M,) int64 when labels are given.
    """
    xyz = points[:, :3]
    pol = cart2polar(xyz)
    min_bound = np.asarray(grid.min_bound)
    max_bound = np.asarray(grid.max_bound)
    intervals = grid.intervals
    grid_index = np.empty((points.shape[0], 3), dtype=np.int32)
    features = np.empty((points.shape[0], 9), dtype=np.float32)
    for axis in range(3):  # column-wise is ~4x faster than broadcasting clip over (N, 3)
        # float64 from here, as the original (float32 polar clipped against float64 bounds);
        # after the clip the value is >= 0, so truncation by astype equals floor
        scaled = pol[:, axis].astype(np.float64)
        np.maximum(scaled, min_bound[axis], out=scaled)
        np.minimum(scaled, max_bound[axis], out=scaled)
        scaled -= min_bound[axis]
        scaled /= intervals[axis]
        index = scaled.astype(np.int32)
        grid_index[:, axis] = index
        # (index + 0.5) in float32, then float64 -- the original's (float32 array) * (float64 array);
        # with a float64 *scalar* NumPy 1.x would keep float32, so promote explicitly
        voxel_centre = (index.astype(np.float32) + np.float32(0.5)).astype(np.float64) * intervals[axis] + min_bound[axis]
        features[:, axis] = pol[:, axis] - voxel_centre
    features[:, 3:6] = pol
    features[:, 6:8] = xyz[:, :2]
    features[:, 8] = points[:, 3]
    gs = grid.grid_size
    linear = (grid_index[:, 0].astype(np.int64) * gs[1] + grid_index[:, 1]) * gs[2] + grid_index[:, 2]
    voxel_linear, point_to_voxel, voxel_labels = majority_vote_or_unique(linear, labels)
    coords = np.stack(np.unravel_index(voxel_linear, gs), axis=1).astype(np.int32)
    return VoxelizedScan(grid_index=grid_index, voxel_coords=coords, point_to_voxel=point_to_voxel,
                         point_features=features, voxel_labels=voxel_labels, grid_size=gs,
                         point_xyz=np.ascontiguousarray(xyz, dtype=np.float32))
