"""Synthetic SemanticKITTI generator: layout, loader round trip and realism against the real scans.

Reference values (real scans in $PVKD_REAL_DATA):
range-bin shares 49.5/32.5/10.5/3.4/2.4/1.7 % (seq 00/000000) and 44.3/31.8/10.8/5.9/3.7/3.5 %
(spvnas scan); 64 ring segments; 121-125k points; remission median ~0.30; median NN gap between
seq-00 frames 1 and 0 of ~0.07-0.08 m untransformed and ~0.05 m after ``inv(T1) @ T0``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from harness.data.generate import generate_semantickitti
from harness.data.generate.semantickitti import KITTI_SEQ00_CALIB
from harness.data.labelmap import load_label_map
from harness.data.semantickitti import SemanticKITTI, read_calib, read_label_file, read_points, split_label
from harness.errors import InputError

SMALL_SEQS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 11)
SMALL_SCANS = 3
SMALL_SCALE = 0.06          # 123 azimuth steps x 64 rings -> ~7k points per scan
RANGE_BINS = [0, 10, 20, 30, 40, 50, np.inf]
REAL = Path(os.environ.get("PVKD_REAL_DATA") or "/nonexistent: set PVKD_REAL_DATA")  # absent: the checks skip
LM = load_label_map("semantickitti")
RARE = [LM.class_names.index(n) for n in ("bicycle", "motorcycle", "person", "bicyclist", "motorcyclist")]
BIG = [LM.class_names.index(n) for n in ("vegetation", "road", "sidewalk", "building", "terrain", "fence", "car")]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("kitti_small")
    summary = generate_semantickitti(root, SMALL_SCANS, sequences=SMALL_SEQS, seed=0, points_scale=SMALL_SCALE)
    return root, summary


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, float]:
    """Two full-size scans of one sequence, with the generation time per scan."""
    root = tmp_path_factory.mktemp("kitti_full")
    t0 = time.perf_counter()
    generate_semantickitti(root, 2, sequences=(0,), seed=0)
    return root, (time.perf_counter() - t0) / 2


def _labelled(root: Path) -> SemanticKITTI:
    return SemanticKITTI(root, sequences=[s for s in SMALL_SEQS if s < 11])


def ring_segments(points: np.ndarray) -> list[np.ndarray]:
    """Split a KITTI scan into rings where the azimuth crosses from < 0 to >= 0 with x > 0."""
    az = np.arctan2(points[:, 1], points[:, 0])
    starts = np.flatnonzero((az[:-1] < 0) & (az[1:] >= 0) & (points[1:, 0] > 0)) + 1
    return np.split(np.arange(points.shape[0]), starts)


def range_shares(points: np.ndarray) -> np.ndarray:
    r = np.linalg.norm(points[:, :3], axis=1)
    return np.histogram(r, RANGE_BINS)[0] / r.size


def nn_median(query: np.ndarray, ref: np.ndarray, n: int = 4000, seed: int = 0, radius: float = 0.5) -> float:
    """Median distance [m] from (a random subset of) ``query`` to its nearest point in ``ref``.

    Exact for distances below ``radius`` (voxel hashing over the 27 neighbouring cells; larger
    distances count as ``radius``), which is enough for a median of a few centimetres.
    """
    rng = np.random.default_rng(seed)
    q = query[rng.choice(len(query), min(n, len(query)), replace=False), :3].astype(np.float64)
    r = ref[:, :3].astype(np.float64)
    cells_r = np.floor(r / radius).astype(np.int64)
    lo = cells_r.min(0) - 2
    dims = cells_r.max(0) - lo + 3
    key = lambda c: ((c[:, 0] - lo[0]) * dims[1] + (c[:, 1] - lo[1])) * dims[2] + (c[:, 2] - lo[2])
    order = np.argsort(key(cells_r), kind="stable")
    keys_r, r = key(cells_r)[order], r[order]
    cells_q = np.floor(q / radius).astype(np.int64)
    best = np.full(len(q), radius)
    for off in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1])).reshape(3, -1).T:
        c = cells_q + off
        inside = np.all((c - lo >= 0) & (c - lo < dims), axis=1)
        k = key(np.where(inside[:, None], c, lo))
        start, stop = np.searchsorted(keys_r, k, "left"), np.searchsorted(keys_r, k, "right")
        cnt = np.where(inside, stop - start, 0)
        qi = np.repeat(np.arange(len(q)), cnt)
        ri = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(start, cnt)
        np.minimum.at(best, qi, np.linalg.norm(q[qi] - r[ri], axis=1))
    return float(np.median(best))


def fusion_gap(p0: np.ndarray, p1: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> tuple[float, float]:
    """Median NN distance from frame 1 to frame 0, without and with frame 0 moved by inv(T1) @ T0."""
    rel = np.linalg.inv(t1) @ t0
    moved = p0[:, :3] @ rel[:3, :3].T + rel[:3, 3]
    return nn_median(p1, p0), nn_median(p1, moved)


# --------------------------------------------------------------------------- layout and formats
def test_official_layout_and_file_sizes(small):
    root, summary = small
    assert sorted(summary["sequences"]) == [f"{s:02d}" for s in SMALL_SEQS]
    for seq in SMALL_SEQS:
        d = root / "sequences" / f"{seq:02d}"
        scans = sorted((d / "velodyne").glob("*.bin"))
        assert [p.name for p in scans] == [f"{k:06d}.bin" for k in range(SMALL_SCANS)]
        assert (d / "calib.txt").read_text() == KITTI_SEQ00_CALIB
        assert len((d / "poses.txt").read_text().splitlines()) == SMALL_SCANS
        times = [float(v) for v in (d / "times.txt").read_text().split()]
        np.testing.assert_allclose(times, np.arange(SMALL_SCANS) * 0.1036, atol=1e-9)
        assert (d / "times.txt").read_text().splitlines()[1] == "1.036000e-01"
        if seq >= 11:
            assert not (d / "labels").exists(), "test sequences carry no labels"
            continue
        for scan in scans:
            label = d / "labels" / (scan.stem + ".label")
            n = scan.stat().st_size // 16
            assert scan.stat().st_size == 16 * n and label.stat().st_size == 4 * n
            assert 5000 < n < 8500


def test_calib_is_real_seq00(small):
    root, _ = small
    tr = read_calib(root / "sequences" / "00" / "calib.txt")["Tr"]
    assert not np.allclose(tr, np.eye(4)), "Tr must swap axes so the pose conjugation is exercised"
    real = REAL / "semantickitti" / "sequences" / "00" / "calib.txt"
    if real.is_file():
        assert (root / "sequences" / "00" / "calib.txt").read_text().split() == real.read_text().split()


def test_loads_through_semantickitti_with_official_label_map(small):
    root, summary = small
    ds = _labelled(root)
    assert len(ds) == SMALL_SCANS * 9
    for i in range(len(ds)):
        scan = ds[i]
        assert scan.points.dtype == np.float32 and scan.points.shape[1] == 4
        assert scan.labels.min() >= 0 and scan.labels.max() <= 19
        assert scan.points.shape[0] == scan.labels.shape[0]
    valid = SemanticKITTI(root, split="valid")
    assert len(valid) == SMALL_SCANS and all(f.sequence == "08" for f in valid.frames)
    test = SemanticKITTI(root, sequences=[11])
    assert test[0].labels is None
    assert summary["sequences"]["11"]["labelled"] is False


# --------------------------------------------------------------------------- sensor realism
def test_ring_order_points_and_remission_full_size(full):
    root, _ = full
    real_medians = (2.57, -23.74)  # top / bottom ring median elevation on real seq 00 [deg]
    for k in range(2):
        p = read_points(root / "sequences" / "00" / "velodyne" / f"{k:06d}.bin")
        assert 108_000 < p.shape[0] < 126_000            # real: 121-125k
        rings = ring_segments(p)
        assert len(rings) == 64                           # as on both real scans
        el = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
        assert abs(np.median(el[rings[0]]) - real_medians[0]) < 0.3
        assert abs(np.median(el[rings[-1]]) - real_medians[1]) < 0.3
        counts = np.array([len(r) for r in rings])
        assert counts.max() <= 2048 and counts[-1] < 0.7 * np.median(counts)  # own car thins the lowest ring
        r = np.linalg.norm(p[:, :3], axis=1)
        assert 1.3 <= r.min() < 5.0 and 75.0 < r.max() <= 80.5
        rem = p[:, 3]
        assert rem.min() >= 0.0 and rem.max() <= 0.99 + 1e-6
        np.testing.assert_allclose(rem * 100, np.round(rem * 100), atol=1e-3)  # 0.01 steps
        assert 0.22 <= np.median(rem) <= 0.36 and np.unique(rem).size > 60   # real: median 0.30, ~100 values


def test_small_scans_keep_ring_structure(small):
    root, _ = small
    for seq in SMALL_SEQS:
        p = read_points(root / "sequences" / f"{seq:02d}" / "velodyne" / "000001.bin")
        assert len(ring_segments(p)) == 64


def test_road_height_and_range_limits(small):
    root, _ = small
    road = []
    for scan in _labelled(root):
        road.append(scan.points[scan.raw_semantic == 40, 2])
    z = np.concatenate(road)
    assert abs(np.median(z) + 1.73) < 0.15    # sensor 1.73 m above the road


def test_range_bin_shares_near_real(small, full):
    ds = _labelled(small[0])
    shares = np.mean([range_shares(s.points) for s in ds], axis=0) * 100
    # real: 49.5/32.5/10.5/3.4/2.4/1.7 and 44.3/31.8/10.8/5.9/3.7/3.5 (%)
    lo = np.array([42, 24, 5.5, 2.0, 1.0, 1.0])
    hi = np.array([58, 40, 14.0, 7.5, 5.0, 5.5])
    assert np.all(shares >= lo) and np.all(shares <= hi), shares.round(1)
    for k in range(2):
        p = read_points(full[0] / "sequences" / "00" / "velodyne" / f"{k:06d}.bin")
        s = range_shares(p) * 100
        assert np.all(s >= lo - 5) and np.all(s <= hi + 5), s.round(1)


# --------------------------------------------------------------------------- labels
def test_class_shares_near_content(small):
    ds = _labelled(small[0])
    counts = np.zeros(20)
    for scan in ds:
        counts += np.bincount(scan.labels, minlength=20)
    share = counts / counts.sum()
    ratio = share[BIG] / LM.content[BIG]
    assert np.all((ratio > 0.4) & (ratio < 2.5)), dict(zip([LM.class_names[i] for i in BIG], ratio.round(2)))
    assert np.all(share[RARE] > 0), "every rare class appears somewhere in the set"
    assert np.all(share[RARE] < 0.01)
    assert 0.01 < share[0] < 0.06                         # unlabeled + outlier + other-structure/object


def test_some_scans_lack_classes_and_rare_only_far(small):
    ds = _labelled(small[0])
    present = []
    rare_far_scans = rare_near_scans = 0
    for scan in ds:
        present.append(np.bincount(scan.labels, minlength=20) > 0)
        r = np.linalg.norm(scan.points[:, :3], axis=1)
        rare = np.isin(scan.labels, RARE)
        if rare.any():
            if r[rare].min() > 20.0:
                rare_far_scans += 1
            else:
                rare_near_scans += 1
        if int(scan.ref.sequence) % 2 == 1:               # rare_far streets
            assert not rare.any() or r[rare].min() > 20.0
    present = np.array(present)
    assert (~present[:, 1:]).any(axis=1).mean() >= 0.5, "most scans lack some evaluated class"
    assert present[:, BIG].sum() > 0 and (~present[:, [10, 4, 5]]).any()  # parking/truck/other-vehicle absent somewhere
    assert rare_far_scans >= 1 and rare_near_scans >= 1


def test_outliers_below_ground_and_in_air(small):
    below = above = 0
    for scan in _labelled(small[0]):
        out = scan.raw_semantic == 1
        assert out.any()
        below += int((scan.points[out, 2] < -2.1).sum())
        above += int((scan.points[out, 2] > -1.0).sum())
    assert below > 0 and above > 0


def test_instance_ids_stable_and_moving_ids(small):
    root, _ = small
    thing = np.array([LM.class_names[i] in ("car", "bicycle", "motorcycle", "truck", "other-vehicle", "person",
                                             "bicyclist", "motorcyclist") for i in range(20)])
    moving_seen = set()
    for seq in (s for s in SMALL_SEQS if s < 11):
        frames = []
        for k in range(SMALL_SCANS):
            raw = read_label_file(root / "sequences" / f"{seq:02d}" / "labels" / f"{k:06d}.label")
            sem, inst = split_label(raw)
            learn = LM.to_learning(sem)
            assert np.all(inst[~thing[learn]] == 0), "stuff carries instance 0"
            frames.append(dict(zip(inst[inst > 0].tolist(), learn[inst > 0].tolist())))
            moving_seen.update(np.unique(sem[sem >= 252]).tolist())
            assert (inst[thing[learn] & (learn > 0)] > 0).all()
        ids = [set(f) for f in frames]
        assert ids[0] & ids[1] and ids[1] & ids[2], "instances persist between frames"
        for a, b in zip(frames[:-1], frames[1:]):
            assert all(a[i] == b[i] for i in set(a) & set(b)), "an instance keeps its class"
        assert min(min(f) for f in frames if f) >= 100     # arbitrary ids, not 1..n
    assert 252 in moving_seen and len(moving_seen) >= 3    # moving car + others (253-259)


# --------------------------------------------------------------------------- poses and fusion
def test_poses_recover_lidar_motion(small):
    root, _ = small
    ds = _labelled(root)
    for seq in (0, 1, 8):
        poses = ds.poses(seq)
        np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-9)     # T_lidar_0 = I
        steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
        assert np.all((steps > 0.55) & (steps < 1.25)), steps
        yaw = np.degrees(np.arctan2(poses[:, 1, 0], poses[:, 0, 0]))
        assert np.all(np.abs(np.diff(yaw)) < 1.0)
        fwd = np.linalg.inv(poses[0]) @ poses[-1]
        assert fwd[0, 3] > 1.0 and abs(fwd[1, 3]) < 0.5, "the LiDAR moves along its own +x"


def test_fusion_aligns_static_world(full):
    root, _ = full
    ds = SemanticKITTI(root, sequences=[0])
    poses = ds.poses(0)
    before, after = fusion_gap(ds[0].points, ds[1].points, poses[0], poses[1])
    # real seq 00 frames 0 -> 1: ~0.07-0.08 m -> ~0.05 m
    assert after < 0.8 * before and after < 0.07, (before, after)
    # off-ground static structure shows the misalignment best (real non-ground points: 0.19 -> 0.05 m)
    static = ~np.isin(ds[1].raw_semantic, [0, 1, 40, 44, 48, 49, 60, 72]) & (ds[1].raw_semantic < 252)
    b, a = fusion_gap(ds[0].points, ds[1].points[static], poses[0], poses[1])
    assert a < 0.65 * b, (b, a)


@pytest.mark.real_data
def test_fusion_gap_matches_real_scans(full):
    real = REAL / "semantickitti"
    if not (real / "sequences" / "00" / "labels" / "000001.label").is_file():
        pytest.skip(f"real SemanticKITTI frames not found under {real}")
    rds = SemanticKITTI(real, sequences=[0])
    rp = rds.poses(0)
    real_before, real_after = fusion_gap(rds[0].points, rds[1].points, rp[0], rp[1])
    ds = SemanticKITTI(full[0], sequences=[0])
    gp = ds.poses(0)
    gen_before, gen_after = fusion_gap(ds[0].points, ds[1].points, gp[0], gp[1])
    assert real_after < real_before and gen_after < gen_before
    assert 0.5 * real_after < gen_after < 1.5 * real_after, (real_after, gen_after)


# --------------------------------------------------------------------------- determinism, errors, speed
def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kwargs = dict(scans_per_sequence=2, sequences=(0, 11), points_scale=0.03)
    generate_semantickitti(tmp_path / "a", seed=5, **kwargs)
    generate_semantickitti(tmp_path / "b", seed=5, **kwargs)
    generate_semantickitti(tmp_path / "c", seed=6, **kwargs)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == (2 + 2 + 3) + (2 + 3)     # seq 00: scans, labels, 3 txt; seq 11: no labels
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    scan = Path("sequences/00/velodyne/000000.bin")
    assert (tmp_path / "a" / scan).read_bytes() != (tmp_path / "c" / scan).read_bytes()


def test_bad_arguments_raise_input_error(tmp_path):
    with pytest.raises(InputError):
        generate_semantickitti(tmp_path, 0)
    with pytest.raises(InputError):
        generate_semantickitti(tmp_path, 1, sequences=(0, 0))
    with pytest.raises(InputError):
        generate_semantickitti(tmp_path, 1, points_scale=0.0)
    generate_semantickitti(tmp_path, 1, sequences=(3,), points_scale=0.02)
    with pytest.raises(InputError, match="already holds scans"):
        generate_semantickitti(tmp_path, 1, sequences=(3,), points_scale=0.02)


def test_full_scan_generation_time(full):
    _, per_scan = full
    assert per_scan < 3.0, f"{per_scan:.2f} s per full scan (target well under 1.5 s on 2 cores)"
