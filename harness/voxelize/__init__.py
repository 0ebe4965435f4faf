"""Preprocessing every backbone consumes: augmentation + voxelisation, sparse only."""
from __future__ import annotations

import numpy as np

from harness.data.datasets import dataset_spec
from harness.voxelize.augment import cylinder3d_augment, spvnas_augment
from harness.voxelize.cubic import SPVNAS_MAX_TRAIN_VOXELS, cubic_voxelize
from harness.voxelize.cylindrical import CylindricalGrid, cylindrical_voxelize
from harness.voxelize.sparse_grid import VoxelizedScan

GRIDS = ("cylindrical", "cubic")


def voxelize_for_grid(grid: str, points: np.ndarray, labels: np.ndarray | None = None,
                      augment_rng: np.random.Generator | None = None, dataset: str = "semantickitti") -> VoxelizedScan:
    """The original recipes' preprocessing for a grid kind (a backbone's ``grid``, e.g.
    :func:`harness.backbones.base.voxelize_for_backbone`); augmentation only when ``augment_rng`` is given.

    cylindrical (Cylinder3D): Cylinder3D augmentations + the dataset's cylindrical grid (``DatasetSpec.cylindrical_grid``).
    cubic (MinkUNet, SPVCNN): spvnas augmentations + 0.05 m cubic grid, at most 80k voxels in training.
    """
    if grid not in GRIDS:
        raise KeyError(f"unknown grid {grid!r}; known: {list(GRIDS)}")
    if grid == "cylindrical":
        if augment_rng is not None:
            points = cylinder3d_augment(points, augment_rng)
        grid = getattr(CylindricalGrid, dataset_spec(dataset).cylindrical_grid)()
        return cylindrical_voxelize(points, labels, grid)
    if augment_rng is not None:
        points = spvnas_augment(points, augment_rng)
        return cubic_voxelize(points, labels, max_voxels=SPVNAS_MAX_TRAIN_VOXELS, rng=augment_rng)
    return cubic_voxelize(points, labels)


__all__ = ["GRIDS", "CylindricalGrid", "VoxelizedScan", "cubic_voxelize", "cylindrical_voxelize", "voxelize_for_grid"]
