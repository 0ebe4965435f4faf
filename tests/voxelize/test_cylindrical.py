"""Cylindrical voxeliser: hand-computed cases and equivalence with the original algorithm."""
import numpy as np
import pytest

from harness.data.labelmap import load_label_map
from harness.data.semantickitti import read_label_file, read_points, split_label
from harness.voxelize.cylindrical import CylindricalGrid, cylindrical_voxelize
from harness.voxelize.sparse_grid import majority_vote
from tests.voxelize.reference_cylinder3d import original_cylinder_getitem


def test_intervals_use_grid_minus_one():
    iv = CylindricalGrid().intervals
    assert iv[0] == pytest.approx(50 / 479) and iv[1] == pytest.approx(2 * np.pi / 359) and iv[2] == pytest.approx(6 / 31)
    assert CylindricalGrid.nuscenes().intervals[2] == pytest.approx(8 / 31)


def test_hand_computed_point():
    # x=10, y=0, z=0: rho=10 -> floor(10 / (50/479)) = floor(95.8) = 95; phi=0 -> floor(pi / (2pi/359)) = 179;
    # z=0 -> floor(4 / (6/31)) = floor(20.67) = 20
    pts = np.array([[10.0, 0.0, 0.0, 0.25]], dtype=np.float32)
    v = cylindrical_voxelize(pts, np.array([3]))
    assert v.grid_index.tolist() == [[95, 179, 20]]
    centre = [(95.5) * 50 / 479, -np.pi + 179.5 * 2 * np.pi / 359, -4 + 20.5 * 6 / 31]
    np.testing.assert_allclose(v.point_features[0, :3], [10 - centre[0], 0 - centre[1], 0 - centre[2]], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(v.point_features[0, 3:], [10, 0, 0, 10, 0, 0.25], rtol=1e-6)
    assert v.voxel_coords.tolist() == [[95, 179, 20]] and v.voxel_labels.tolist() == [3]


def test_points_outside_the_volume_are_clipped_into_border_voxels():
    pts = np.array([[70.0, 0, 0, 0], [50.0, 0, 0, 0], [5.0, 0, -10.0, 0], [5.0, 0, 9.0, 0]], dtype=np.float32)
    v = cylindrical_voxelize(pts)
    assert v.grid_index[:, 0].tolist()[:2] == [479, 479]  # rho = 50 m exactly maps to the last bin (grid - 1 rule)
    assert v.grid_index[2, 2] == 0 and v.grid_index[3, 2] == 31
    assert v.voxel_labels is None and v.num_voxels == 3  # first two share a voxel


@pytest.mark.parametrize("labels, expected", [([5, 5, 3, 3], 3), ([0, 0, 1], 0), ([7, 2, 7, 2, 2], 2), ([4], 4)])
def test_majority_vote_ties_go_to_the_smallest_label(labels, expected):
    keys, p2v, voxel_labels = majority_vote(np.zeros(len(labels), dtype=np.int64), np.array(labels))
    assert keys.tolist() == [0] and p2v.tolist() == [0] * len(labels) and voxel_labels.tolist() == [expected]


def test_several_voxels_sorted_and_inverse_map():
    linear = np.array([9, 2, 9, 5, 2, 2])
    labels = np.array([1, 4, 1, 0, 3, 3])
    keys, p2v, vl = majority_vote(linear, labels)
    assert keys.tolist() == [2, 5, 9] and p2v.tolist() == [2, 0, 2, 1, 0, 0] and vl.tolist() == [3, 0, 1]


@pytest.mark.real_data
def test_equals_original_cylinder3d_on_real_scan(spvnas_scan):
    scan_path, label_path = spvnas_scan
    pts = read_points(scan_path)
    sem, _ = split_label(read_label_file(label_path, pts.shape[0]))
    labels = load_label_map("semantickitti").to_learning(sem)
    ref_index, ref_grid, ref_fea = original_cylinder_getitem(pts[:, :3], labels, pts[:, 3])
    v = cylindrical_voxelize(pts, labels)
    np.testing.assert_array_equal(v.grid_index, ref_index)
    np.testing.assert_array_equal(v.point_features, ref_fea.astype(np.float32))
    # sparse voxels = the occupied cells of the original dense grid, same labels
    occupied = np.unique(ref_index, axis=0)
    np.testing.assert_array_equal(v.voxel_coords, occupied)
    np.testing.assert_array_equal(v.voxel_labels, ref_grid[tuple(occupied.T)])
    np.testing.assert_array_equal(v.voxel_coords[v.point_to_voxel], v.grid_index)
    assert v.num_points == 123389 and v.num_voxels == 46952
    # label histogram of the voxels (regression value computed once from this real scan)
    assert np.bincount(v.voxel_labels, minlength=20).tolist() == [
        2674, 745, 19, 0, 0, 0, 96, 0, 0, 5728, 47, 7347, 0, 1504, 351, 14698, 1093, 12240, 175, 235]


@pytest.mark.real_data
def test_real_kitti_frame_voxel_count(kitti_root):
    pts = read_points(kitti_root / "sequences/00/velodyne/000000.bin")
    v = cylindrical_voxelize(pts)
    assert v.num_voxels == np.unique(v.grid_index, axis=0).shape[0]
    assert v.point_features.dtype == np.float32 and v.point_features.shape == (124668, 9)
