"""Synthetic nuScenes-lidarseg data that nuscenes-devkit loads and evaluates (docs/readings.md#synthetic-data).

``generate_nuscenes(out, scans, seed, version)`` writes::

    out/samples/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp_us>.pcd.bin   key frames, float32 (34688, 5)
    out/sweeps/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp_us>.pcd.bin    non-key sweeps (20 Hz)
    out/lidarseg/<version>/<sd_token>_lidarseg.bin                   uint8 fine index 0-31 per point
    out/<version>/{category, attribute, visibility, instance, sensor, calibrated_sensor, ego_pose,
                   log, scene, sample, sample_data, sample_annotation, map, lidarseg}.json
    out/maps/<token>.png                                             tiny semantic-prior masks

Points come from the shared scene model and ray caster with an HDL-32E: 32 lasers from -30.67 deg
(ring 0) to +10.67 deg (ring 31), 1084 azimuth steps, mounted 1.84 m above ground with the sensor
frame x right / y forward. Unlike KITTI **every firing is kept** (34688 = 32 x 1084 points, in
firing order: rings 0..31 for one azimuth, then the next azimuth, turning clockwise). What no-return
firings look like was read off the real v1.0-mini key frame of the real-data fixtures (``$PVKD_REAL_DATA/nuscenes``):
about 23 % of its points lie within 1 m of the sensor; they are the sensor origin displaced by the
ego-motion compensation (``-v * dt`` backwards along +y, so ~0-0.15 m), with one column at exactly
(0, 0, 0). Here sky, beyond-100 m, 1 % random dropouts and own-body hits closer than 1 m become such
points; own-body hits farther than 1 m are real returns (1-3 m); all of them are labelled 31
``vehicle.ego``, as in the real 40-point lidarseg sample.

Scenes use the official v1.0-mini names (mini_val first, then mini_train), so
``nuscenes.eval.lidarseg.utils.get_samples_in_eval_set`` and ``LidarSegEval`` work for ``mini_val``
once >= 2 scans are generated, and for ``mini_train`` once >= 10 are.
"""
from __future__ import annotations

import hashlib
import re
import struct
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from harness.data.generate.classes import CLASSES, NUSCENES_FINE, cid, sample_reflectivity
from harness.data.generate.raycast import SOURCE_EGO, SOURCE_GROUND, SOURCE_PRIM, SensorModel, cast
from harness.data.generate.scene import Scene, build_scene, rot_z
from harness.data.labelmap import load_label_map
from harness.errors import InputError
from harness.io import write_array_atomic, write_bytes_atomic, write_json_atomic

# devkit python-sdk/nuscenes/utils/splits.py: mini_val first, so 2 scans already cover mini_val
MINI_VAL = ("scene-0103", "scene-0916")
MINI_TRAIN = ("scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077", "scene-1094",
              "scene-1100")
SCENE_NAMES = MINI_VAL + MINI_TRAIN

HDL32_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)  # ring 0 .. ring 31 (real medians -30.6 .. +10.7)
N_COLS = 1084              # firings per ring per sweep (real key frame: 34688 = 32 x 1084)
MAX_RANGE = 100.0          # m (real key frame: max 103 m)
RANGE_SIGMA = 0.02         # m
DROPOUT = 0.025            # random no-return share
FAR_DROPOUT = 0.9          # extra no-return probability at 100 m for a black surface (~0.2 at 50 m)
EGO_RETURN_MIN = 1.3       # m: own-body hits closer than this come back as no-return points
SWEEP_PERIOD = 0.05        # s (20 Hz)
KEY_PERIOD = 0.5           # s (2 Hz key frames)
FIRST_AZIMUTH_DEG = -172.1  # atan2(y, x) of the first firing column in the real key frame
# LIDAR_TOP mounting: ~0.94 m ahead of the ego origin (rear axle), 1.84 m above ground, sensor x
# right / y forward, i.e. yawed by -90 deg against the ego frame (quaternion ~(0.707, 0, 0, -0.707)).
SENSOR_TRANSLATION = (0.94, 0.0, 1.84)
SENSOR_YAW = -np.pi / 2
# Own car (Renault Zoe) below the sensor, boxes in the sensor frame [m] (x right, y forward);
# fitted so that the share of own-body rays per ring matches the real key frame's near-return share
# of the lowest 8 rings (0.82, 0.71, 0.60, 0.52, 0.47, 0.26, 0.12, 0.04) within ~0.1.
NUSCENES_EGO_BOXES = (
    ((-0.40, -0.60, -1.80), (0.40, 0.40, -0.25)),    # roof around the sensor mount
    ((-0.87, -1.40, -1.80), (0.87, 2.36, -1.10)),    # bonnet, body, boot
)
LOCATIONS = (("singapore-onenorth", "n015", 8), ("boston-seaport", "n008", -4),
             ("singapore-queenstown", "n015", 8), ("singapore-hollandvillage", "n015", 8))
ATTRIBUTES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
              "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving")
VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))


def hdl32() -> SensorModel:
    """The nuScenes HDL-32E model (canonical order: top ring first, azimuth increasing)."""
    step = 2 * np.pi / N_COLS
    # firing column c (clockwise) = canonical column N_COLS - 1 - c (counter-clockwise)
    az0 = np.radians(FIRST_AZIMUTH_DEG) - (N_COLS - 1) * step
    return SensorModel("HDL-32E (nuScenes)", np.radians(HDL32_ELEVATIONS_DEG[::-1]), N_COLS, az0=az0,
                       az_jitter=np.radians(0.01), el_jitter=np.radians(0.05), max_range=MAX_RANGE,
                       ego_boxes=NUSCENES_EGO_BOXES)


def sensor_to_ego() -> np.ndarray:
    """4x4 LIDAR_TOP -> ego transform."""
    t = np.eye(4)
    t[:3, :3] = rot_z(SENSOR_YAW)
    t[:3, 3] = SENSOR_TRANSLATION
    return t


def _quat(rot: np.ndarray) -> list[float]:
    """Rotation matrix -> unit quaternion [w, x, y, z] (w >= 0)."""
    m = rot
    w = np.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = np.sqrt(max(0.0, 1 + m[0, 0] - m[1, 1] - m[2, 2])) / 2
    y = np.sqrt(max(0.0, 1 - m[0, 0] + m[1, 1] - m[2, 2])) / 2
    z = np.sqrt(max(0.0, 1 - m[0, 0] - m[1, 1] + m[2, 2])) / 2
    x, y, z = np.copysign(x, m[2, 1] - m[1, 2]), np.copysign(y, m[0, 2] - m[2, 0]), np.copysign(z, m[1, 0] - m[0, 1])
    q = np.array([w, x, y, z])
    return [float(v) for v in q / np.linalg.norm(q)]


def render_sweep(scene: Scene, frame: int, sensor: SensorModel, rng: np.random.Generator, speed: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One LIDAR_TOP sweep in firing order.

    Returns (points (N, 5) float32 ``x, y, z, intensity, ring``, fine labels (N,) uint8, instance ids
    (N,) int64, the 4x4 ego pose); N = 32 * 1084.
    """
    ego_pose = scene.ego_base_pose(frame)
    pose = ego_pose @ sensor_to_ego()
    _, _, dirs = sensor.ray_grid(rng)
    s_ego = float(scene.ego.s[frame])
    prims = scene.primitives_at(frame, s_ego, 1.4 * MAX_RANGE + 30)
    hits = cast(prims, scene.road, pose, sensor, dirs, s_ego, rng)
    n_r, n_c = sensor.n_rings, sensor.n_cols
    # canonical (top ring first, azimuth increasing) -> firing order (column clockwise, ring 0 = bottom)
    order = np.arange(n_r * n_c).reshape(n_r, n_c)[::-1, ::-1].T.reshape(-1)
    t, source, cls, inst = hits.t[order], hits.source[order], hits.cls[order].copy(), hits.inst[order].copy()
    refl, d = hits.refl[order], dirs[order]
    ring = np.tile(np.arange(n_r), n_c)
    col = np.repeat(np.arange(n_c), n_r)
    surface = ((source == SOURCE_GROUND) | (source == SOURCE_PRIM)) & (t <= MAX_RANGE)
    # weak returns get lost: a base dropout plus one that grows with range and darkness
    p_drop = DROPOUT + FAR_DROPOUT * np.minimum(t / MAX_RANGE, 1.0) ** 2 * (1.0 - refl)
    surface &= rng.random(t.shape) >= p_drop
    body = (source == SOURCE_EGO) & (t >= EGO_RETURN_MIN)
    ret = surface | body
    rng_t = np.where(ret, t + rng.normal(0, RANGE_SIGMA, t.shape), 0.0)
    xyz = d * rng_t[:, None]
    # no return: the sensor origin moved by the ego-motion compensation (backwards along +y);
    # the last firing column needs no compensation and sits at exactly (0, 0, 0)
    back = speed * SWEEP_PERIOD * (n_c - 1 - col) / n_c
    nr = ~ret
    xyz[nr] = np.stack([-0.003 * back[nr], -back[nr], -0.032 * back[nr]], axis=1)
    cls[~surface] = cid("ego")
    inst[~surface] = 0
    # a few noise returns (fine 0): multipath behind the surface or early returns in the air
    cand = np.flatnonzero(surface & (t > 3.0))
    n_out = min(cand.size, 2 + int(rng.poisson(4)))
    out = rng.choice(cand, n_out, replace=False)
    f = np.where(d[out, 2] < -0.05, rng.uniform(1.1, 1.5, n_out), rng.uniform(0.3, 0.7, n_out))
    xyz[out] *= f[:, None]
    cls[out], inst[out] = cid("outlier"), 0
    r = sample_reflectivity(rng, cls, np.where(surface, refl, 0.03))
    intensity = np.clip(np.round(255 * r ** 2.3 + rng.normal(0, 1.5, r.shape)), 0, 255)
    intensity[nr] = np.minimum(rng.geometric(0.12, int(nr.sum())) - 1, 255)  # real near points: median ~11
    points = np.concatenate([xyz, intensity[:, None], ring[:, None]], axis=1).astype("<f4")
    labels = NUSCENES_FINE[cls].astype(np.uint8)
    return points, labels, inst, ego_pose


def _png(pixels: np.ndarray) -> bytes:
    """Encode an 8-bit greyscale image as PNG (stdlib only; deterministic bytes)."""
    h, w = pixels.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels.astype(np.uint8))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def generate_nuscenes(out_dir: str | Path, scans: int, seed: int = 0, version: str = "v1.0-mini",
                      sweeps_per_sample: int = 2) -> dict:
    """Write a synthetic nuScenes-lidarseg dataset that ``nuscenes.NuScenes(version, out_dir)`` loads.

    Args:
        out_dir: dataroot; must not already hold ``<version>/`` tables (stale lidarseg files would
            break the devkit's file-count check).
        scans: number of key frames (samples), each with a lidarseg label file; spread over up to
            10 scenes named after the v1.0-mini scenes (mini_val first).
        seed: one seed -> byte-identical files; different seeds -> different data.
        version: table folder name (``v1.0-mini`` by default; the mini split names are used in
            any case, so only the mini eval sets are complete).
        sweeps_per_sample: non-key LIDAR_TOP sweeps written after each key frame (0.05 s apart).

    Returns:
        a deterministic summary: ``{"format", "root", "version", "seed", "samples", "sweeps",
        "points_per_scan", "scenes": {name: {"split", "samples", "sweeps", "location"}}}``.
    """
    out = Path(out_dir)
    if scans < 1:
        raise InputError(out, f"scans={scans}", "ask for at least 1 scan (2 cover mini_val, 10 all mini scenes)")
    if not re.fullmatch(r"v1\.0-[A-Za-z0-9_-]+", version):
        raise InputError(out, f"version {version!r} is not a nuScenes version name", "use e.g. v1.0-mini")
    if not 0 <= sweeps_per_sample <= 9:
        raise InputError(out, f"sweeps_per_sample={sweeps_per_sample}", "use 0-9 (real nuScenes has 9 sweeps per key frame)")
    if (out / version).exists() and any((out / version).iterdir()):
        raise InputError(out / version, "already holds nuScenes tables",
                         "generate into an empty folder (or delete this one first)")
    fine_names = load_label_map("nuscenes").raw_names  # fine index -> category name (official order)

    def token(*key: object) -> str:
        return hashlib.md5("/".join(str(k) for k in (seed, *key)).encode()).hexdigest()

    sensor = hdl32()
    tables: dict[str, list] = {name: [] for name in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
        "scene", "sample", "sample_data", "sample_annotation", "map", "lidarseg")}
    cat_token = {i: token("category", i) for i in fine_names}
    tables["category"] = [{"token": cat_token[i], "name": fine_names[i], "description": f"{fine_names[i]} (synthetic)",
                           "index": i} for i in sorted(fine_names)]
    attr_token = {a: token("attribute", a) for a in ATTRIBUTES}
    tables["attribute"] = [{"token": attr_token[a], "name": a, "description": a} for a in ATTRIBUTES]
    tables["visibility"] = [{"token": tok, "level": lvl, "description": f"visibility of whole object is {lvl}"}
                            for tok, lvl in VISIBILITY]
    sensor_token = token("sensor", "LIDAR_TOP")
    tables["sensor"] = [{"token": sensor_token, "channel": "LIDAR_TOP", "modality": "lidar"}]
    s2e = sensor_to_ego()

    n_scenes = min(scans, len(SCENE_NAMES))
    per_scene = [scans // n_scenes + (1 if i < scans % n_scenes else 0) for i in range(n_scenes)]
    summary: dict = {"format": "nuscenes", "root": str(out), "version": version, "seed": int(seed), "samples": 0,
                     "sweeps": 0, "points_per_scan": sensor.n_rings * sensor.n_cols, "scenes": {}}
    map_logs: dict[str, list[str]] = {}
    n_files = 0
    for i, (name, n_samples) in enumerate(zip(SCENE_NAMES, per_scene)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7, i]))
        location, vehicle, tz_h = LOCATIONS[i % len(LOCATIONS)]
        date = datetime(2018, 7 + i % 4, 1 + (3 * i + int(seed)) % 27, 9 + i % 8, (7 * i) % 60, (13 * i) % 60,
                        tzinfo=timezone(timedelta(hours=tz_h)))
        log_name = f"{vehicle}-{date:%Y-%m-%d-%H-%M-%S}{'+' if tz_h >= 0 else '-'}{abs(tz_h):02d}00"
        t0_us = int(date.timestamp()) * 1_000_000 + int(rng.integers(0, 1_000_000))
        speed = float(rng.uniform(2.0, 8.0))  # m/s, urban driving
        # frame times: key frame k at 0.5 k s, then its sweeps 0.05 s apart (small timing jitter)
        frames = [(k * KEY_PERIOD + j * SWEEP_PERIOD, k, j == 0) for k in range(n_samples)
                  for j in range(sweeps_per_sample + 1)]
        times = np.array([f[0] for f in frames]) + rng.uniform(-0.002, 0.002, len(frames))
        times[0] = 0.0
        steps = np.concatenate([[0.0], np.diff(times) * speed])
        scene = build_scene(rng, times, "nuscenes", steps=steps, showcase=True)
        log_token, scene_token, cs_token = token("log", i), token("scene", i), token("calibrated_sensor", i)
        tables["log"].append({"token": log_token, "logfile": log_name, "vehicle": vehicle,
                              "date_captured": f"{date:%Y-%m-%d}", "location": location})
        map_logs.setdefault(location, []).append(log_token)
        tables["calibrated_sensor"].append({"token": cs_token, "sensor_token": sensor_token,
                                            "translation": [float(v) for v in s2e[:3, 3]],
                                            "rotation": _quat(s2e[:3, :3]), "camera_intrinsic": []})
        sample_tokens = [token("sample", i, k) for k in range(n_samples)]
        sd_tokens = [token("sample_data", i, f) for f in range(len(frames))]
        inst_anns: dict[int, list[dict]] = {}
        thing_info = {th.inst: th for th in scene.things}
        for f, ((_, k, key), t) in enumerate(zip(frames, times)):
            frng = np.random.default_rng(np.random.SeedSequence([int(seed), 8, i, f]))
            points, labels, inst, ego_pose = render_sweep(scene, f, sensor, frng, speed)
            ts = t0_us + int(round(t * 1e6))
            folder = "samples" if key else "sweeps"
            filename = f"{folder}/LIDAR_TOP/{log_name}__LIDAR_TOP__{ts}.pcd.bin"
            write_array_atomic(out / filename, points)
            n_files += 1
            ep_token = token("ego_pose", i, f)
            tables["ego_pose"].append({"token": ep_token, "timestamp": ts,
                                       "rotation": _quat(ego_pose[:3, :3]),
                                       "translation": [float(v) for v in ego_pose[:3, 3]]})
            tables["sample_data"].append({
                "token": sd_tokens[f], "sample_token": sample_tokens[k], "ego_pose_token": ep_token,
                "calibrated_sensor_token": cs_token, "timestamp": ts, "fileformat": "pcd", "is_key_frame": key,
                "height": 0, "width": 0, "filename": filename,
                "prev": sd_tokens[f - 1] if f > 0 else "", "next": sd_tokens[f + 1] if f + 1 < len(frames) else ""})
            if not key:
                summary["sweeps"] += 1
                continue
            tables["sample"].append({"token": sample_tokens[k], "timestamp": ts, "scene_token": scene_token,
                                     "prev": sample_tokens[k - 1] if k > 0 else "",
                                     "next": sample_tokens[k + 1] if k + 1 < n_samples else ""})
            seg_name = f"lidarseg/{version}/{sd_tokens[f]}_lidarseg.bin"
            write_array_atomic(out / seg_name, labels)
            tables["lidarseg"].append({"token": sd_tokens[f], "sample_data_token": sd_tokens[f], "filename": seg_name})
            summary["samples"] += 1
            # box annotations of the things hit by this key frame
            ids, counts = np.unique(inst[inst > 0], return_counts=True)
            boxes = {b["inst"]: b for b in scene.thing_boxes(f)}
            riders = {th.dynamic for th in scene.things if CLASSES[th.cls].name in ("bicyclist", "motorcyclist")}
            for iid, cnt in zip(ids.tolist(), counts.tolist()):
                if iid not in boxes:
                    continue
                b = boxes[iid]
                cname = CLASSES[b["cls"]].name
                if cname in ("bicyclist", "motorcyclist"):
                    continue  # nuScenes boxes the rider with its cycle (attribute cycle.with_rider)
                ann_token = token("sample_annotation", i, iid, k)
                if cname in ("bicycle", "motorcycle"):
                    attr = "cycle.with_rider" if thing_info[iid].dynamic in riders and thing_info[iid].dynamic >= 0 \
                        else "cycle.without_rider"
                elif NUSCENES_FINE[b["cls"]] in (2, 3, 4, 6):
                    attr = "pedestrian.moving" if b["moving"] else "pedestrian.standing"
                elif cname == "animal":
                    attr = None
                else:
                    attr = "vehicle.moving" if b["moving"] else "vehicle.parked"
                inst_anns.setdefault(iid, []).append({
                    "token": ann_token, "sample_token": sample_tokens[k], "instance_token": token("instance", i, iid),
                    "visibility_token": "4", "attribute_tokens": [attr_token[attr]] if attr else [],
                    "translation": [float(v) for v in b["center"]],
                    "size": [float(b["size"][1]), float(b["size"][0]), float(b["size"][2])],  # w, l, h
                    "rotation": _quat(rot_z(b["yaw"])), "num_lidar_pts": int(cnt), "num_radar_pts": 0,
                    "prev": "", "next": ""})
        for iid, anns in inst_anns.items():
            for a, b in zip(anns[:-1], anns[1:]):
                a["next"], b["prev"] = b["token"], a["token"]
            tables["sample_annotation"].extend(anns)
            tables["instance"].append({"token": token("instance", i, iid),
                                       "category_token": cat_token[int(NUSCENES_FINE[thing_info[iid].cls])],
                                       "nbr_annotations": len(anns), "first_annotation_token": anns[0]["token"],
                                       "last_annotation_token": anns[-1]["token"]})
        tables["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": n_samples,
                                "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                                "name": name, "description": "synthetic street scene (harness gen-data), not nuScenes data"})
        summary["scenes"][name] = {"split": "mini_val" if name in MINI_VAL else "mini_train", "samples": n_samples,
                                   "sweeps": n_samples * sweeps_per_sample, "location": location,
                                   "style": scene.info["style"]}
    mask = np.zeros((32, 32), np.uint8)
    mask[12:20, :] = 255  # a road band: the semantic prior is only read lazily by the devkit
    for location, logs in map_logs.items():
        map_token = token("map", location)
        filename = f"maps/{map_token}.png"
        write_bytes_atomic(out / filename, _png(mask))
        tables["map"].append({"token": map_token, "log_tokens": logs, "category": "semantic_prior",
                              "filename": filename})
    for table, rows in tables.items():
        write_json_atomic(out / version / f"{table}.json", rows)
    return summary
