"""Cubic voxeliser (spvnas sparse_quantize semantics) and the seeded augmentations."""
import numpy as np
import pytest

from harness.data.semantickitti import read_points
from harness.backbones.base import voxelize_for_backbone
from harness.voxelize.augment import cylinder3d_augment, spvnas_augment
from harness.voxelize.cubic import cubic_voxelize


def test_hand_computed_rounding_and_first_point_label():
    # 0.02/0.05 = 0.4 -> 0 (same voxel as the origin); 0.03/0.05 = 0.6 -> 1; min shift makes -0.05 the origin
    pts = np.array([[0.02, 0, 0, 0.1], [0.0, 0, 0, 0.2], [0.03, 0, 0, 0.3], [-0.05, 0, 0, 0.4]], dtype=np.float32)
    v = cubic_voxelize(pts, np.array([5, 6, 7, 8]))
    assert v.grid_index[:, 0].tolist() == [1, 1, 2, 0]
    assert v.voxel_coords[:, 0].tolist() == [0, 1, 2]
    assert v.voxel_point_index.tolist() == [3, 0, 2]  # first point of each voxel in scan order
    assert v.voxel_labels.tolist() == [8, 5, 7]      # spvnas: the representative point's label, no vote
    assert v.point_to_voxel.tolist() == [1, 1, 2, 0]


@pytest.mark.real_data
def test_equals_numpy_unique_semantics_on_real_scan(spvnas_scan):
    pts = read_points(spvnas_scan[0])
    v = cubic_voxelize(pts)
    coords = np.round(pts[:, :3] / 0.05).astype(np.int32)
    coords -= coords.min(0)
    uniq, first, inverse = np.unique(coords, axis=0, return_index=True, return_inverse=True)
    np.testing.assert_array_equal(v.voxel_coords, uniq)
    np.testing.assert_array_equal(v.voxel_point_index, first)
    np.testing.assert_array_equal(v.point_to_voxel, inverse.ravel())
    assert v.num_voxels == 94625


def test_training_subset_keeps_max_voxels_and_marks_dropped_points():
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-20, 20, (5000, 3)), rng.uniform(0, 1, 5000)].astype(np.float32)
    v = cubic_voxelize(pts, np.zeros(5000, dtype=np.int64), max_voxels=1000, rng=np.random.default_rng(1))
    assert v.num_voxels == 1000 and v.voxel_labels.shape == (1000,)
    kept = v.point_to_voxel >= 0
    np.testing.assert_array_equal(v.voxel_coords[v.point_to_voxel[kept]], v.grid_index[kept])
    again = cubic_voxelize(pts, None, max_voxels=1000, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(again.voxel_coords, v.voxel_coords)


def test_cylinder3d_augment_components():
    rng = np.random.default_rng(3)
    pts = np.c_[rng.uniform(-30, 30, (500, 3)), rng.uniform(0, 1, 500)].astype(np.float32)
    rot = cylinder3d_augment(pts, np.random.default_rng(0), flip=False, scale=False, translate_std=None)
    np.testing.assert_allclose(np.linalg.norm(rot[:, :2], axis=1), np.linalg.norm(pts[:, :2], axis=1), rtol=1e-5)
    np.testing.assert_array_equal(rot[:, 2:], pts[:, 2:])
    angle = np.arctan2(rot[0, 1], rot[0, 0]) - np.arctan2(pts[0, 1], pts[0, 0])
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    assert abs(angle) <= np.pi / 4 + 1e-6
    scaled = cylinder3d_augment(pts, np.random.default_rng(0), rotate=False, flip=False, translate_std=None)
    ratio = scaled[:, :2] / pts[:, :2]
    assert np.allclose(ratio, ratio[0, 0], rtol=1e-5) and 0.95 <= ratio[0, 0] <= 1.05
    a = cylinder3d_augment(pts, np.random.default_rng(7))
    b = cylinder3d_augment(pts, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_spvnas_augment_is_rotation_times_scale():
    rng = np.random.default_rng(5)
    pts = np.c_[rng.uniform(-30, 30, (300, 3)), rng.uniform(0, 1, 300)].astype(np.float32)
    out = spvnas_augment(pts, np.random.default_rng(11))
    factor = np.linalg.norm(out[:, :3], axis=1) / np.linalg.norm(pts[:, :3], axis=1)
    assert np.allclose(factor, factor[0], rtol=1e-5) and 0.95 <= factor[0] <= 1.05
    np.testing.assert_allclose(out[:, 2], pts[:, 2] * factor[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[:, 3], pts[:, 3])


def test_voxelize_for_backbone_dispatch():
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-30, 30, (2000, 2)), rng.uniform(-2, 1, 2000), rng.uniform(0, 1, 2000)].astype(np.float32)
    assert voxelize_for_backbone("cylinder3d", pts).point_features.shape == (2000, 9)
    assert voxelize_for_backbone("spvcnn", pts).point_features.shape == (2000, 4)
    with pytest.raises(KeyError, match="unknown backbone"):
        voxelize_for_backbone("pointnet", pts)
