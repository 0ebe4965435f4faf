"""nuScenes readers on the real files (their PROVENANCE.md)"""
import numpy as np
import pytest

from harness.data.labelmap import load_label_map
from harness.data.nuscenes import read_lidarseg, read_nuscenes_points
from harness.errors import InputError

pytestmark = pytest.mark.real_data
KEY_FRAME = "nuscenes/samples/LIDAR_TOP/n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"
PR2859 = "nuscenes_mmdet3d_subset/pr2859"


def test_real_key_frame_structure(real_data):
    pts = read_nuscenes_points(real_data / KEY_FRAME)
    assert pts.shape == (34688, 5)  # 32 rings x 1084 firings, every firing kept
    rings = pts[:, 4].astype(int)
    assert sorted(np.unique(rings).tolist()) == list(range(32))
    assert np.bincount(rings).tolist() == [1084] * 32
    assert np.array_equal(rings[:32], np.arange(32))  # firing order: rings 0..31 per azimuth
    intensity = pts[:, 3]
    assert intensity.min() >= 0 and intensity.max() <= 255 and np.all(intensity == np.round(intensity))
    rng = np.linalg.norm(pts[:, :3], axis=1)
    assert (rng < 1e-3).sum() == 8  # "at the origin": within 1 mm (float32 residue of the motion compensation)
    assert 0.20 < (rng < 1.0).mean() < 0.26  # ego-vehicle returns


def test_real_lidarseg_labels_map_to_coarse_classes(real_data):
    base = real_data / PR2859
    pts = read_nuscenes_points(next((base / "samples/LIDAR_TOP").glob("*.pcd.bin")))
    fine = read_lidarseg(base / "lidarseg/v1.0-trainval/5f6c1e0a0c3b444b97e78d2aa3fa34d2_lidarseg.bin", pts.shape[0])
    assert np.bincount(fine, minlength=32)[[17, 24, 27, 28, 30, 31]].tolist() == [2, 15, 1, 12, 1, 9]
    coarse = load_label_map("nuscenes").to_learning(fine)
    assert np.bincount(coarse, minlength=17)[[0, 4, 11, 14, 15, 16]].tolist() == [9, 2, 15, 1, 12, 1]
    ego = fine == 31
    assert np.linalg.norm(pts[ego, :3], axis=1).max() < 1.5  # ego returns lie within the car
    assert (np.linalg.norm(pts[:, :3], axis=1) < 1e-3).sum() == 4


def test_label_count_mismatch_is_named(real_data, tmp_path):
    base = real_data / PR2859
    with pytest.raises(InputError, match="has 40 labels but the scan has 41 points"):
        read_lidarseg(base / "lidarseg/v1.0-trainval/5f6c1e0a0c3b444b97e78d2aa3fa34d2_lidarseg.bin", 41)
    bad = tmp_path / "x.pcd.bin"
    bad.write_bytes(b"\0" * 24)
    with pytest.raises(InputError, match="not a multiple of 20"):
        read_nuscenes_points(bad)
