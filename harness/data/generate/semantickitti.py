"""Synthetic SemanticKITTI sequences in the official on-disk layout (docs/readings.md#synthetic-data).

``generate_semantickitti(out, scans_per_sequence, sequences, seed)`` writes::

    out/sequences/NN/velodyne/%06d.bin   float32 little-endian (N, 4): x, y, z [m], remission
    out/sequences/NN/labels/%06d.label   uint32 (inst << 16) | raw semantic id   (not for NN >= 11)
    out/sequences/NN/calib.txt           the real seq-00 P0..P3 and Tr lines
    out/sequences/NN/poses.txt           cam0-frame poses, P_i = Tr @ T_lidar_i @ inv(Tr), T_lidar_0 = I
    out/sequences/NN/times.txt           k * 0.1036 s, %e

The scans come from the shared scene model and ray caster: an HDL-64E (64 lasers at the per-ring
median elevations measured on real seq 00, 2048 azimuth steps) mounted 1.73 m above the road,
ring-major from the top laser down, each ring starting at azimuth 0 (+x) and turning
counter-clockwise. Rays without a return (sky, beyond 80 m, a 2.5 % random dropout, the own car
body) are dropped, as in KITTI; returns get 2 cm range noise, class-dependent remission quantised to
0.01, a few outliers (raw 1) behind surfaces / in the air, and raw 0 on some points beyond 50 m.
Things that move in a frame carry the moving raw ids 252-259 there; instance ids (> 100, not
contiguous) stay the same over a sequence. Odd sequence numbers keep their rare objects (person,
bicyclist, motorcyclist, bicycle, motorcycle) beyond 20 m of the sensor, like the real spvnas scan.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from harness.data.generate.classes import KITTI_RAW, KITTI_RAW_MOVING, KITTI_THING, cid, sample_reflectivity
from harness.data.generate.raycast import SOURCE_EGO, SOURCE_NONE, SensorModel, cast
from harness.data.generate.scene import Scene, build_scene
from harness.errors import InputError
from harness.io import write_array_atomic, write_text_atomic

# KITTI odometry calibration of sequence 00 (calib.txt of the KITTI odometry benchmark, as shipped
# with SemanticKITTI; copied from its sequences/00/calib.txt). These are
# measured calibration numbers: Tr (Velodyne -> cam0) swaps axes, so the pose conjugation is tested.
KITTI_SEQ00_CALIB = (
    "P0: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 0.000000000000e+00 0.000000000000e+00 "
    "7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 "
    "1.000000000000e+00 0.000000000000e+00\n"
    "P1: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.861448000000e+02 0.000000000000e+00 "
    "7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 "
    "1.000000000000e+00 0.000000000000e+00\n"
    "P2: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 4.538225000000e+01 0.000000000000e+00 "
    "7.188560000000e+02 1.852157000000e+02 -1.130887000000e-01 0.000000000000e+00 0.000000000000e+00 "
    "1.000000000000e+00 3.779761000000e-03\n"
    "P3: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.372877000000e+02 0.000000000000e+00 "
    "7.188560000000e+02 1.852157000000e+02 2.369057000000e+00 0.000000000000e+00 0.000000000000e+00 "
    "1.000000000000e+00 4.915215000000e-03\n"
    "Tr: 4.276802385584e-04 -9.999672484946e-01 -8.084491683471e-03 -1.198459927713e-02 -7.210626507497e-03 "
    "8.081198471645e-03 -9.999413164504e-01 -5.403984729748e-02 9.999738645903e-01 4.859485810390e-04 "
    "-7.206933692422e-03 -2.921968648686e-01\n"
)

# Per-ring median elevation [deg] of the real seq 00 frame 0 scan, top laser first (measured on
# sequences/00/velodyne/000000.bin of the real-data fixtures, $PVKD_REAL_DATA)
HDL64_ELEVATIONS_DEG = np.array([
    2.57, 2.20, 1.93, 1.50, 1.21, 0.80, 0.53, 0.16, -0.19, -0.61, -0.89, -1.22, -1.59, -1.91, -2.19, -2.54,
    -2.85, -3.26, -3.51, -3.96, -4.22, -4.60, -4.91, -5.18, -5.54, -5.85, -6.14, -6.40, -6.76, -7.12, -7.37, -7.76,
    -8.40, -8.91, -9.38, -9.77, -10.23, -10.84, -11.35, -11.77, -12.22, -12.64, -13.17, -13.69, -14.26, -14.69,
    -15.19, -15.56, -16.18, -16.70, -17.27, -17.73, -18.22, -18.64, -19.08, -19.64, -20.14, -20.80, -21.27,
    -21.69, -22.10, -22.76, -23.21, -23.74])

SENSOR_HEIGHT = 1.73       # m above the road (KITTI setup)
FRAME_PERIOD = 0.1036      # s between scans (real times.txt: ~0.1036-0.1037 s)
MAX_RANGE = 80.0           # m: KITTI scans end near 80 m
MIN_RANGE = 1.3            # m: closest real returns (1.32-1.35 m)
RANGE_SIGMA = 0.02         # m: range noise
DROPOUT = 0.025            # random no-return share
# The own car (VW Passat) below the roof-mounted scanner, boxes in the LiDAR frame [m]: rays that
# hit it return nothing usable, which thins the lowest rings (real ring 63 keeps ~55 % of its rays).
KITTI_EGO_BOXES = (
    ((-1.2, -0.7, -1.45), (0.7, 0.7, -0.40)),      # roof and cabin
    ((-1.8, -0.9, -1.45), (2.4, 0.9, -0.95)),      # bonnet, boot and sides
)
# (fitted so that the share of kept rays per ring matches real seq 00 frame 0 within ~0.05 for the
# lowest 24 rings: 0.52 of the bottom ring, 0.78 at -20.1 deg, 0.94 at -16.7 deg, 1.0 above)


def hdl64(points_scale: float = 1.0) -> SensorModel:
    """The KITTI HDL-64E model; ``points_scale`` < 1 keeps 64 rings but fewer azimuth steps."""
    n_cols = max(16, int(round(2048 * points_scale)))
    step = 2 * np.pi / n_cols
    return SensorModel("HDL-64E (KITTI)", np.radians(HDL64_ELEVATIONS_DEG), n_cols, az0=step / 2,
                       az_jitter=min(np.radians(0.02), 0.1 * step), el_jitter=np.radians(0.1),
                       max_range=MAX_RANGE, ego_boxes=KITTI_EGO_BOXES)


def remission(rng: np.random.Generator, cls: np.ndarray, refl: np.ndarray) -> np.ndarray:
    """KITTI remission: class-dependent reflectivity in [0, 0.99] quantised to 0.01 (measured on the real scans)."""
    return (np.round(sample_reflectivity(rng, cls, refl) * 100) / 100).astype(np.float32)


def render_scan(scene: Scene, frame: int, sensor: SensorModel, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One KITTI scan: (N, 4) float32 points, (N,) uint32 labels, (N,) int64 neutral classes."""
    pose = scene.ego_base_pose(frame)
    lidar = pose.copy()
    lidar[:3, 3] = pose[:3, 3] + pose[:3, :3] @ np.array([0.0, 0.0, SENSOR_HEIGHT])
    _, _, dirs = sensor.ray_grid(rng)
    s_ego = float(scene.ego.s[frame])
    prims = scene.primitives_at(frame, s_ego, 1.4 * MAX_RANGE + 30)
    hits = cast(prims, scene.road, lidar, sensor, dirs, s_ego, rng)
    keep = (hits.source != SOURCE_NONE) & (hits.source != SOURCE_EGO) & (hits.t >= MIN_RANGE) \
        & (hits.t <= MAX_RANGE) & (rng.random(hits.t.shape) >= DROPOUT)
    idx = np.flatnonzero(keep)           # canonical order = KITTI order (ring-major, top ring first)
    t = hits.t[idx] + rng.normal(0, RANGE_SIGMA, idx.size)
    cls = hits.cls[idx].copy()
    inst = np.where(KITTI_THING[cls], hits.inst[idx], 0)
    moving = hits.moving[idx]
    refl = hits.refl[idx]
    # a few outliers (raw 1): multipath returns behind the surface (below ground for downward rays)
    # or early returns in the air
    n_out = min(idx.size, 3 + int(rng.poisson(6 * sensor.n_cols / 2048)))
    out = rng.choice(idx.size, n_out, replace=False)
    d = dirs[idx[out]]
    t[out] = np.where(d[:, 2] < -0.05, t[out] * rng.uniform(1.1, 1.6, n_out),
                      np.maximum(t[out] * rng.uniform(0.15, 0.6, n_out), 1.5))
    cls[out], inst[out], moving[out], refl[out] = cid("outlier"), 0, False, 0.05
    # annotators leave some far, sparse points unlabeled (raw 0)
    far = (t > 50.0) & (rng.random(t.shape) < 0.35) & (cls != cid("outlier"))
    xyz = (dirs[idx] * t[:, None]).astype(np.float32)
    rem = remission(rng, cls, refl)
    raw = np.where(moving, KITTI_RAW_MOVING[cls], KITTI_RAW[cls])
    raw[far] = 0
    inst[far] = 0
    labels = ((inst.astype(np.uint32) << np.uint32(16)) | raw.astype(np.uint32)).astype(np.uint32)
    points = np.concatenate([xyz, rem[:, None]], axis=1).astype("<f4")
    return points, labels.astype("<u4"), cls


def _format_rows(mats: np.ndarray) -> str:
    return "".join(" ".join(f"{v:.12e}" for v in m[:3, :4].reshape(-1)) + "\n" for m in mats)


def generate_semantickitti(out_dir: str | Path, scans_per_sequence: int, sequences: Sequence[int] = (0, 8),
                           seed: int = 0, points_scale: float = 1.0, coverage: bool = False) -> dict:
    """Write synthetic SemanticKITTI sequences under ``out_dir/sequences/NN`` and return a summary.

    Args:
        out_dir: dataset root (created if missing); the sequences asked for must not hold scans yet.
        scans_per_sequence: scans per sequence (>= 1); frames are 0.1036 s apart.
        sequences: sequence numbers 0-99; numbers >= 11 are test sequences and get no labels/.
        seed: one seed -> byte-identical files; different seeds -> different scenes.
        points_scale: 1.0 gives full-size scans (~110-120k points, 2048 azimuth steps); smaller values
            keep the 64 rings but use fewer azimuth steps (0.03 -> ~3-4k points) for fast tests.
        coverage: build class-coverage streets (``scene.build_scene(coverage=True)``): all 19 classes
            within ~15 m of the sensor in every scan, for short demo/benchmark schedules that crop scans
            to their nearest points. Off by default (realistic streets).

    Returns:
        ``{"format", "root", "seed", "points_scale", "sequences": {"NN": {"scans", "points",
        "labelled", "style", "rare_far"}}}`` (deterministic: no timings).
    """
    out = Path(out_dir)
    if scans_per_sequence < 1:
        raise InputError(out, f"scans_per_sequence={scans_per_sequence}", "ask for at least 1 scan per sequence")
    if not 0 < points_scale <= 4:
        raise InputError(out, f"points_scale={points_scale} out of range", "use a value in (0, 4]; 1.0 is full size")
    seqs = [int(s) for s in sequences]
    if not seqs or any(s < 0 or s > 99 for s in seqs) or len(set(seqs)) != len(seqs):
        raise InputError(out, f"bad sequence list {list(sequences)}", "give distinct sequence numbers 0-99")
    for seq in seqs:  # stale frames from an earlier, longer run would not match poses.txt
        velo = out / "sequences" / f"{seq:02d}" / "velodyne"
        if velo.is_dir() and any(velo.iterdir()):
            raise InputError(velo, "already holds scans", "generate into an empty folder (or delete this sequence first)")
    sensor = hdl64(points_scale)
    tr = np.eye(4)
    tr[:3, :4] = np.array(KITTI_SEQ00_CALIB.splitlines()[4].split()[1:], float).reshape(3, 4)
    tr_inv = np.linalg.inv(tr)
    summary: dict = {"format": "semantickitti", "root": str(out), "seed": int(seed),
                     "points_scale": float(points_scale), "coverage": bool(coverage), "sequences": {}}
    for seq in seqs:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), seq, 0]))
        times = np.arange(scans_per_sequence) * FRAME_PERIOD
        # every other sequence keeps its rare objects beyond 20 m (like the real spvnas scan)
        scene = build_scene(rng, times, "semantickitti", rare_far=(seq % 2 == 1), coverage=coverage)
        seq_dir = out / "sequences" / f"{seq:02d}"
        labelled = seq < 11
        poses_world = np.stack([scene.ego_base_pose(k) for k in range(scans_per_sequence)])
        lidar_world = poses_world.copy()
        lidar_world[:, :3, 3] += poses_world[:, :3, :3] @ np.array([0.0, 0.0, SENSOR_HEIGHT])
        t_lidar = np.linalg.inv(lidar_world[0]) @ lidar_world      # T_lidar_0 = I
        cam = tr @ t_lidar @ tr_inv                                 # loader: inv(Tr) @ P @ Tr
        n_points = 0
        for k in range(scans_per_sequence):
            frame_rng = np.random.default_rng(np.random.SeedSequence([int(seed), seq, 1, k]))
            points, labels, _ = render_scan(scene, k, sensor, frame_rng)
            n_points += points.shape[0]
            write_array_atomic(seq_dir / "velodyne" / f"{k:06d}.bin", points)
            if labelled:
                write_array_atomic(seq_dir / "labels" / f"{k:06d}.label", labels)
        write_text_atomic(seq_dir / "calib.txt", KITTI_SEQ00_CALIB)
        write_text_atomic(seq_dir / "poses.txt", _format_rows(cam))
        write_text_atomic(seq_dir / "times.txt", "".join(f"{t:e}\n" for t in times))
        summary["sequences"][f"{seq:02d}"] = {"scans": scans_per_sequence, "points": int(n_points),
                                             "labelled": labelled, "style": scene.info["style"],
                                             "rare_far": bool(scene.info["rare_far"])}
    return summary
