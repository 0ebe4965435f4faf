"""Synthetic LiDAR-like voxel sets with realistic neighbour density, for tests and benchmarks.

A 64-beam, 2048-azimuth spinning LiDAR at 1.73 m above a flat ground, with box-shaped
obstacles, is ray-cast analytically; the hits are voxelised on Cylinder3D's cylindrical grid
(rho in [0, 50] m, phi in [-pi, pi], z in [-4, 2] m, 480 x 360 x 32 cells; xinge008/Cylinder3D
``config/semantickitti.yaml``) and a contiguous azimuth sector is kept until the requested
number of voxels is reached. Surfaces (ground rings, obstacle faces) give the 2-D-manifold
neighbourhoods of real scans, unlike uniformly random voxels, which have almost no neighbours.
"""

from __future__ import annotations

import math

import numpy as np
import torch

CYLINDER3D_GRID = (480, 360, 32)  # (rho, phi, z) cells
_RHO_RANGE_M = (0.0, 50.0)
_Z_RANGE_M = (-4.0, 2.0)
_SENSOR_HEIGHT_M = 1.73
_RANGE_NOISE_M = 0.03  # 1-sigma range noise, roughly an HDL-64E's


def lidar_scan_points(seed: int = 0, num_beams: int = 64, num_azimuths: int = 2048, num_obstacles: int = 80) -> np.ndarray:
    """(M, 3) float64 xyz points (metres) of one synthetic scan, sensor at the origin.

    Scene: flat ground, two building facades along a street (|y| = 9..12 m, 4..10 m high)
    and ``num_obstacles`` random boxes (cars, poles, vegetation blocks).
    """
    rng = np.random.default_rng(seed)
    elevation = np.deg2rad(np.linspace(-24.9, 2.0, num_beams))  # HDL-64E-like vertical field of view
    azimuth = np.linspace(-math.pi, math.pi, num_azimuths, endpoint=False)
    elev, azim = np.meshgrid(elevation, azimuth, indexing="ij")
    direction = np.stack((np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)), axis=-1)
    # ground plane z = -h: hit distance along the ray, for downward rays only
    ray_range = np.full(elev.shape, np.inf)
    down = direction[..., 2] < 0
    ray_range[down] = _SENSOR_HEIGHT_M / -direction[..., 2][down]
    # axis-aligned boxes standing on the ground (slab method)
    centre_range = rng.uniform(4.0, 45.0, num_obstacles)
    centre_angle = rng.uniform(-math.pi, math.pi, num_obstacles)
    centres = np.stack((centre_range * np.cos(centre_angle), centre_range * np.sin(centre_angle)), axis=1)
    half_sizes = rng.uniform(0.3, 2.0, (num_obstacles, 2))
    heights = rng.uniform(0.8, 4.0, num_obstacles)
    facade_offset = rng.uniform(9.0, 12.0, 2)
    facade_height = rng.uniform(4.0, 10.0, 2)
    centres = np.concatenate((centres, [[-20.0, facade_offset[0] + 0.5], [20.0, -facade_offset[1] - 0.5]]))
    half_sizes = np.concatenate((half_sizes, [[15.0, 0.5], [15.0, 0.5]]))
    heights = np.concatenate((heights, facade_height))
    for centre, half_size, height in zip(centres, half_sizes, heights):
        lower = np.array([*(centre - half_size), -_SENSOR_HEIGHT_M])
        upper = np.array([*(centre + half_size), -_SENSOR_HEIGHT_M + height])
        with np.errstate(divide="ignore", invalid="ignore"):
            t_low = lower / direction
            t_high = upper / direction
        t_near = np.nanmax(np.minimum(t_low, t_high), axis=-1)
        t_far = np.nanmin(np.maximum(t_low, t_high), axis=-1)
        hit = (t_near <= t_far) & (t_near > 0)
        ray_range = np.where(hit & (t_near < ray_range), t_near, ray_range)
    ray_range = ray_range + rng.normal(0.0, _RANGE_NOISE_M, ray_range.shape)
    valid = np.isfinite(ray_range) & (ray_range < _RHO_RANGE_M[1])
    return direction[valid] * ray_range[valid][:, None]


def cylindrical_voxel_coords(points: np.ndarray, grid: tuple[int, int, int] = CYLINDER3D_GRID) -> np.ndarray:
    """(M, 3) xyz metres -> unique (V, 3) int64 cylindrical cells (rho, phi, z), Cylinder3D binning.

    Bin width = range / (cells - 1) as in xinge008/Cylinder3D ``dataloader/dataset_semantickitti.py``.
    """
    rho = np.hypot(points[:, 0], points[:, 1])
    phi = np.arctan2(points[:, 1], points[:, 0])
    polar = np.stack((rho, phi, points[:, 2]), axis=1)
    lower = np.array([_RHO_RANGE_M[0], -math.pi, _Z_RANGE_M[0]])
    upper = np.array([_RHO_RANGE_M[1], math.pi, _Z_RANGE_M[1]])
    interval = (upper - lower) / (np.array(grid) - 1)
    cells = np.floor((np.clip(polar, lower, upper) - lower) / interval).astype(np.int64)
    return np.unique(cells, axis=0)


def lidar_sector_coords(num_voxels: int, batch_size: int = 1, seed: int = 0) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """About ``num_voxels`` voxels per sample from a contiguous azimuth sector of a synthetic scan.

    Returns:
        coords: (N, 4) int32 ``[batch, rho, phi, z]`` on the Cylinder3D grid, rows shuffled
            (so no backend can profit from a pre-sorted input).
        spatial_shape: (480, 360, 32).
    """
    samples = [cylindrical_voxel_coords(lidar_scan_points(seed + sample)) for sample in range(batch_size)]
    return azimuth_sector_coords(samples, num_voxels, seed)


def azimuth_sector_coords(samples: list[np.ndarray], num_voxels: int,
                          seed: int = 0) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The first ``num_voxels`` cells by azimuth of each sample's (M, 3) ``[rho, phi, z]`` Cylinder3D cells (a
    contiguous sector), as (N, 4) int32 ``[batch, rho, phi, z]`` rows shuffled with ``seed``, and the grid."""
    rows = []
    for sample, cells in enumerate(samples):
        sector = cells[np.argsort(cells[:, 1], kind="stable")[:num_voxels]]   # by azimuth cell
        rows.append(np.concatenate((np.full((sector.shape[0], 1), sample), sector), axis=1))
    coords = np.concatenate(rows)
    coords = coords[np.random.default_rng(seed).permutation(coords.shape[0])]
    return torch.from_numpy(coords.astype(np.int32)), CYLINDER3D_GRID
