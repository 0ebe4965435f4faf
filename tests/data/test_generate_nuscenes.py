"""Synthetic nuScenes-lidarseg generator: the official devkit loads and evaluates it; scans look real.

Reference values from the real v1.0-mini LIDAR_TOP key frame in $PVKD_REAL_DATA/nuscenes:
34,688 = 32 rings x 1,084 points in firing order, ring 0 at
-30.6 deg and ring 31 at +10.7 deg, intensity integers 0-255 (median 12), ~23 % of points within
1 m of the sensor (no-returns / own vehicle, labelled 31 in the real lidarseg sample), max range 103 m.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nuscenes", reason="nuscenes-devkit is not installed (pip install 'pvkd-harness[nuscenes]')")

from nuscenes import NuScenes  # noqa: E402
from nuscenes.eval.lidarseg.evaluate import LidarSegEval  # noqa: E402
from nuscenes.eval.lidarseg.utils import LidarsegClassMapper, get_samples_in_eval_set  # noqa: E402

from harness.data.generate import generate_nuscenes  # noqa: E402
from harness.data.generate.nuscenes import MINI_TRAIN, MINI_VAL  # noqa: E402
from harness.data.labelmap import load_label_map  # noqa: E402
from harness.errors import InputError  # noqa: E402

N_RINGS, N_COLS = 32, 1084
SCANS = 10


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict, NuScenes]:
    root = tmp_path_factory.mktemp("nuscenes")
    summary = generate_nuscenes(root, SCANS, seed=0)
    return root, summary, NuScenes("v1.0-mini", dataroot=str(root), verbose=False)


def _key_frames(root: Path, nusc: NuScenes):
    """(sample, sd token, points (N, 5), fine labels (N,)) for every sample."""
    for sample in nusc.sample:
        sd = sample["data"]["LIDAR_TOP"]
        points = np.fromfile(root / nusc.get("sample_data", sd)["filename"], dtype=np.float32).reshape(-1, 5)
        labels = np.fromfile(root / nusc.get("lidarseg", sd)["filename"], dtype=np.uint8)
        yield sample, sd, points, labels


def test_devkit_loads_every_sample_with_lidar_and_lidarseg(dataset):
    root, summary, nusc = dataset
    assert len(nusc.sample) == SCANS == summary["samples"]
    assert len(nusc.scene) == 10 and {s["name"] for s in nusc.scene} == set(MINI_VAL + MINI_TRAIN)
    assert all("index" in c for c in nusc.category) and len(nusc.category) == 32
    for sample, sd, points, labels in _key_frames(root, nusc):
        rec = nusc.get("sample_data", sd)
        assert rec["is_key_frame"] and rec["channel"] == "LIDAR_TOP"
        assert nusc.get("lidarseg", sd)["token"] == sd          # lidarseg.token == key-frame sd token
        assert rec["filename"].startswith("samples/LIDAR_TOP/") and rec["filename"].endswith(".pcd.bin")
        assert labels.shape[0] == points.shape[0] == N_RINGS * N_COLS
        assert labels.max() <= 31
        assert (root / rec["filename"]).stat().st_size == N_RINGS * N_COLS * 5 * 4


def test_firing_order_rings_and_intensity(dataset):
    root, _, nusc = dataset
    for _, _, p, _ in _key_frames(root, nusc):
        ring = p[:, 4].reshape(N_COLS, N_RINGS)
        assert (ring == np.arange(N_RINGS)[None, :]).all(), "rings 0..31 per azimuth, then the next azimuth"
        r = np.linalg.norm(p[:, :3], axis=1)
        el = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
        far = r > 3
        assert abs(np.median(el[far & (p[:, 4] == 0)]) + 30.67) < 0.3
        assert abs(np.median(el[far & (p[:, 4] == 31)]) - 10.67) < 0.3
        inten = p[:, 3]
        assert inten.min() >= 0 and inten.max() <= 255 and np.all(inten == np.round(inten))
        assert 5 <= np.median(inten) <= 25                   # real: median 12
        assert 85 < r.max() <= 101
        # sensor frame x right, y forward: the first column fires backwards-left as in the real frame
        az = np.degrees(np.arctan2(p[:N_RINGS * 20, 1], p[:N_RINGS * 20, 0]))[far[:N_RINGS * 20]]
        assert np.all((az < -150) | (az > 170))


def test_ego_returns_and_no_returns(dataset):
    root, _, nusc = dataset
    shares, zeros = [], 0
    for _, _, p, labels in _key_frames(root, nusc):
        r = np.linalg.norm(p[:, :3], axis=1)
        ego = labels == 31
        shares.append(ego.mean())
        assert r[ego].max() < 3.0                             # own body within 1-3 m, no-returns near 0
        assert (r[~ego & (labels != 0)] > 1.3).all()
        zeros += int((np.abs(p[:, :3]).sum(1) == 0).sum())
    assert 0.19 <= np.mean(shares) <= 0.26, np.round(shares, 3)  # real key frame: 23 % within 1 m
    assert min(shares) > 0.12 and max(shares) < 0.32
    assert zeros >= 1, "some no-return points sit exactly at (0, 0, 0)"


def test_range_bins_near_real(dataset):
    root, _, nusc = dataset
    shares = []
    for _, _, p, _ in _key_frames(root, nusc):
        r = np.linalg.norm(p[:, :3], axis=1)
        shares.append(np.histogram(r, [0, 10, 20, 30, 40, 50, np.inf])[0] / r.size)
    s = np.mean(shares, axis=0) * 100
    # real key frame: 64 / 19 / 7.5 / 4.1 / 2.4 / 3.0 %
    assert np.all(s >= [55, 13, 4.5, 2.0, 0.8, 1.0]) and np.all(s <= [72, 26, 11, 6.5, 4.5, 5.0]), s.round(1)


def test_all_coarse_classes_and_ignore_fine_classes_covered(dataset):
    root, _, nusc = dataset
    lm = load_label_map("nuscenes")
    fine = np.zeros(32, np.int64)
    for _, _, _, labels in _key_frames(root, nusc):
        fine += np.bincount(labels, minlength=32)
    coarse = np.bincount(lm.to_learning(np.flatnonzero(fine)), minlength=17)
    assert (coarse[1:] > 0).all(), [lm.class_names[i] for i in range(1, 17) if coarse[i] == 0]
    for idx in (0, 1, 29, 31):                               # noise, animal, static.other, vehicle.ego
        assert fine[idx] > 0, lm.raw_names[idx]
    share = fine / fine.sum()
    assert share[24] > 0.15 and share[28] + share[30] > 0.15  # driveable surface, manmade + vegetation


def test_eval_sets_and_official_evaluator(dataset, tmp_path):
    root, _, nusc = dataset
    val = get_samples_in_eval_set(nusc, "mini_val")
    train = get_samples_in_eval_set(nusc, "mini_train")
    assert len(val) == 2 and len(train) == 8 and not set(val) & set(train)
    names = {nusc.get("scene", nusc.get("sample", t)["scene_token"])["name"] for t in val}
    assert names == set(MINI_VAL)
    # ground truth as prediction (ignore -> any class) must give mIoU 1 in the official evaluator
    mapper = LidarsegClassMapper(nusc)
    pred_dir = tmp_path / "lidarseg" / "mini_val"
    pred_dir.mkdir(parents=True)
    for token in val:
        sd = nusc.get("sample", token)["data"]["LIDAR_TOP"]
        gt = mapper.convert_label(np.fromfile(root / nusc.get("lidarseg", sd)["filename"], dtype=np.uint8))
        np.where(gt == 0, 11, gt).astype(np.uint8).tofile(pred_dir / f"{sd}_lidarseg.bin")
    result = LidarSegEval(nusc, str(tmp_path), "mini_val").evaluate()
    assert result["miou"] == pytest.approx(1.0)


def test_sweeps_chain_and_annotations(dataset):
    root, summary, nusc = dataset
    sweeps = [sd for sd in nusc.sample_data if not sd["is_key_frame"]]
    assert len(sweeps) == summary["sweeps"] == 2 * SCANS
    for sd in sweeps:
        assert sd["filename"].startswith("sweeps/LIDAR_TOP/") and (root / sd["filename"]).is_file()
    for scene in nusc.scene:
        first = nusc.get("sample", scene["first_sample_token"])
        sd = nusc.get("sample_data", first["data"]["LIDAR_TOP"])
        chain = 1
        while sd["next"]:
            nxt = nusc.get("sample_data", sd["next"])
            assert nxt["prev"] == sd["token"] and nxt["timestamp"] > sd["timestamp"]
            sd, chain = nxt, chain + 1
        assert chain == scene["nbr_samples"] * 3
    assert len(nusc.sample_annotation) > 50
    boxes = nusc.get_boxes(nusc.sample[0]["data"]["LIDAR_TOP"])
    assert boxes and all(b.wlh.min() > 0 for b in boxes)
    cats = {a["category_name"] for a in nusc.sample_annotation}
    assert {"vehicle.car", "vehicle.bus.rigid", "movable_object.barrier"} <= cats


def test_same_seed_same_bytes(tmp_path):
    a = generate_nuscenes(tmp_path / "a", 2, seed=3, sweeps_per_sample=0)
    generate_nuscenes(tmp_path / "b", 2, seed=3, sweeps_per_sample=0)
    generate_nuscenes(tmp_path / "c", 2, seed=4, sweeps_per_sample=0)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 + 2 + 14 + 2 and a["samples"] == 2   # scans, labels, tables, 2 map PNGs
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    scan = next((tmp_path / "a" / "samples" / "LIDAR_TOP").iterdir()).read_bytes()
    other = next((tmp_path / "c" / "samples" / "LIDAR_TOP").iterdir()).read_bytes()
    assert scan != other


def test_bad_arguments_raise_input_error(tmp_path):
    with pytest.raises(InputError):
        generate_nuscenes(tmp_path / "x", 0)
    with pytest.raises(InputError):
        generate_nuscenes(tmp_path / "x", 1, version="mini")
    generate_nuscenes(tmp_path / "y", 1, sweeps_per_sample=0)
    with pytest.raises(InputError, match="already holds"):
        generate_nuscenes(tmp_path / "y", 1)
