"""SemanticKITTI reader on the real scans (values from the files' documented statistics,
their PROVENANCE.md)."""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from harness.data.semantickitti import SemanticKITTI, read_calib, read_label_file, read_points, read_poses, split_label

pytestmark = pytest.mark.real_data


def test_point_counts_and_value_ranges(kitti_root):
    ds = SemanticKITTI(kitti_root, sequences=[0])
    assert [f.frame for f in ds.frames] == ["000000", "000001"]
    s0, s1 = ds[0], ds[1]
    assert s0.points.shape == (124668, 4) and s1.points.shape == (124605, 4)
    assert s0.points.dtype == np.float32
    rng = np.linalg.norm(s0.points[:, :3], axis=1)
    assert 79.0 < rng.max() < 81.0 and 1.0 < rng.min() < 2.0
    assert 0.0 <= s0.points[:, 3].min() and s0.points[:, 3].max() <= 1.0


def test_label_histogram_and_instances(kitti_root):
    scan = SemanticKITTI(kitti_root, sequences=[0])[0]
    raw_classes = np.unique(scan.raw_semantic)
    assert raw_classes.tolist() == [0, 1, 10, 40, 44, 48, 50, 51, 52, 60, 70, 71, 72, 80, 81, 99, 255]
    counts = np.bincount(scan.labels, minlength=20)
    assert counts[8] == 88  # 88 moving-motorcyclist points -> motorcyclist
    # cars: 2,840 points within 20 m and 1,394 beyond (measured on this scan)
    cars = scan.labels == 1
    rng = np.linalg.norm(scan.points[:, :3], axis=1)
    assert (cars & (rng <= 20)).sum() == 2840 and (cars & (rng > 20)).sum() == 1394
    things = np.unique(scan.instance[scan.instance > 0])
    assert len(things) == 14
    # instance ids are temporally consistent: the car instances 208-219 and 504 appear in both frames
    next_scan = SemanticKITTI(kitti_root, sequences=[0])[1]
    car_ids = set(np.unique(scan.instance[cars]).tolist()) & set(np.unique(next_scan.instance[next_scan.labels == 1]).tolist())
    assert set(range(208, 220)) | {504} <= car_ids


def test_spvnas_scan_cars_all_beyond_20m(spvnas_scan):
    scan_path, label_path = spvnas_scan
    points = read_points(scan_path)
    sem, _ = split_label(read_label_file(label_path, points.shape[0]))
    assert points.shape[0] == 123389
    rng = np.linalg.norm(points[:, :3], axis=1)
    cars = np.isin(sem, [10, 252])
    assert (cars & (rng <= 20)).sum() == 0 and (cars & (rng > 20)).sum() == 1534


def test_poses_are_lidar_frame_and_align_consecutive_scans(kitti_root):
    seq = kitti_root / "sequences" / "00"
    calib = read_calib(seq / "calib.txt")
    assert calib["Tr"][0, 1] == pytest.approx(-9.999672484946e-01)
    poses = read_poses(seq / "poses.txt", calib["Tr"])
    assert poses.shape == (4541, 4, 4)
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-6)
    step = np.linalg.norm(poses[1][:3, 3] - poses[0][:3, 3])
    assert 0.6 < step < 0.85  # the ego car moves 0.67-0.81 m per frame
    ds = SemanticKITTI(kitti_root, sequences=[0])
    p0, p1 = ds[0].points[:, :3].astype(np.float64), ds[1].points[:, :3].astype(np.float64)
    rel = np.linalg.inv(poses[1]) @ poses[0]
    p0_in_1 = p0 @ rel[:3, :3].T + rel[:3, 3]
    tree = cKDTree(p1)
    before = np.median(tree.query(p0)[0])
    after = np.median(tree.query(p0_in_1)[0])
    # measured on these two files (a quoted 0.068 -> 0.048 m has an unstated protocol):
    # the pose transform cuts the median nearest-neighbour gap by ~30 %
    assert before == pytest.approx(0.0829, abs=0.002) and after == pytest.approx(0.0577, abs=0.002)


def test_poses_align_frame_0_into_frame_9(kitti_root, real_data):
    seq = kitti_root / "sequences" / "00"
    poses = read_poses(seq / "poses.txt", read_calib(seq / "calib.txt")["Tr"])
    p0 = read_points(seq / "velodyne" / "000000.bin")[:, :3].astype(np.float64)
    p9 = read_points(real_data / "semantickitti_unlabelled/sequences/00/velodyne/000009.bin")[:, :3].astype(np.float64)
    rel = np.linalg.inv(poses[9]) @ poses[0]
    tree = cKDTree(p9)
    before = np.median(tree.query(p0)[0])
    after = np.median(tree.query(p0 @ rel[:3, :3].T + rel[:3, 3])[0])
    assert before == pytest.approx(0.2245, abs=0.003) and after == pytest.approx(0.1082, abs=0.003)


def test_test_split_sequences_have_no_labels(kitti_root, tmp_path):
    # the real root has calib/poses for 11-21 but no scans; a test sequence with scans only loads label-free
    seq = tmp_path / "sequences" / "11" / "velodyne"
    seq.mkdir(parents=True)
    read_points(kitti_root / "sequences/00/velodyne/000000.bin")[:100].tofile(seq / "000000.bin")
    ds = SemanticKITTI(tmp_path, sequences=[11])
    scan = ds[0]
    assert scan.labels is None and scan.points.shape == (100, 4)
