"""Neutral semantic classes of the synthetic scene model and their dataset ids.

The scene model (``scene.py``) and the ray caster (``raycast.py``) know only these neutral class
names; the two writers map them to dataset ids here, so that one scene can be written in either
format and the official label maps (``harness/data/labels/*.yaml``) are exercised end to end:

* SemanticKITTI raw ids (``semantic-kitti.yaml`` ``labels``), with the *moving* raw id (252-259)
  used for a thing in the frames where it moves;
* nuScenes-lidarseg fine indices 0-31 (``nuscenes.yaml`` ``labels``, the ``index`` column of the
  lidarseg ``category.json``)

Reflectivity parameters give the class-dependent remission distribution (measured on
the real seq-00 scan: road median 0.25, sidewalk 0.31, building 0.42, vegetation 0.34, cars dark
with many 0 returns from glass).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NeutralClass:
    """One neutral class.

    Attributes:
        name: neutral name used by the scene model.
        kitti: SemanticKITTI raw id of the static object (-1: never written, e.g. the ego vehicle).
        kitti_moving: raw id used in frames where the object moves (-1: class never moves).
        nuscenes: nuScenes-lidarseg fine index 0-31.
        thing: True for countable objects that carry an instance id and a nuScenes box (stuff
            carries 0). In SemanticKITTI only the vehicle/human raw ids are things
            (:data:`KITTI_THING`); barriers, cones and bins map to KITTI stuff ids and get instance 0.
        refl_mean, refl_sd: per-point reflectivity (0-1, KITTI remission scale), normal distribution.
        p_zero: probability that a point returns remission exactly 0 (glass, black paint, far grazing).
    """

    name: str
    kitti: int
    kitti_moving: int
    nuscenes: int
    thing: bool
    refl_mean: float
    refl_sd: float
    p_zero: float


# fmt: off
CLASSES: tuple[NeutralClass, ...] = (
    #            name                   kitti mov  nus  thing  mean  sd    p0
    NeutralClass("unlabeled",              0,  -1,   0, False, 0.30, 0.10, 0.03),
    NeutralClass("outlier",                1,  -1,   0, False, 0.10, 0.10, 0.30),  # nuScenes "noise"
    NeutralClass("road",                  40,  -1,  24, False, 0.24, 0.06, 0.08),
    NeutralClass("lane_marking",          60,  -1,  24, False, 0.62, 0.15, 0.00),
    NeutralClass("parking",               44,  -1,  24, False, 0.26, 0.07, 0.05),
    NeutralClass("sidewalk",              48,  -1,  26, False, 0.30, 0.06, 0.01),
    NeutralClass("other_ground",          49,  -1,  25, False, 0.27, 0.08, 0.02),
    NeutralClass("terrain",               72,  -1,  27, False, 0.31, 0.09, 0.01),
    NeutralClass("building",              50,  -1,  28, False, 0.42, 0.13, 0.02),
    NeutralClass("fence",                 51,  -1,  28, False, 0.30, 0.10, 0.04),
    NeutralClass("other_structure",       52,  -1,  29, False, 0.33, 0.10, 0.02),
    NeutralClass("vegetation",            70,  -1,  30, False, 0.33, 0.11, 0.01),
    NeutralClass("trunk",                 71,  -1,  30, False, 0.30, 0.08, 0.01),
    NeutralClass("pole",                  80,  -1,  28, False, 0.35, 0.12, 0.02),
    NeutralClass("traffic_sign",          81,  -1,  28, False, 0.75, 0.18, 0.00),
    NeutralClass("other_object",          99,  -1,  11, True,  0.28, 0.12, 0.05),  # bins, boxes
    NeutralClass("barrier",               51,  -1,   9, True,  0.40, 0.12, 0.02),  # KITTI: guard rails are fence
    NeutralClass("traffic_cone",          99,  -1,  12, True,  0.60, 0.20, 0.00),
    NeutralClass("bicycle_rack",          99,  -1,  13, True,  0.35, 0.12, 0.05),
    NeutralClass("debris",                99,  -1,  10, True,  0.25, 0.10, 0.05),
    NeutralClass("animal",                 0,  -1,   1, True,  0.25, 0.08, 0.02),  # KITTI has no animal id
    NeutralClass("car",                   10, 252,  17, True,  0.12, 0.11, 0.18),
    NeutralClass("police_car",            10, 252,  20, True,  0.20, 0.15, 0.10),
    NeutralClass("truck",                 18, 258,  23, True,  0.30, 0.12, 0.06),
    NeutralClass("bus",                   13, 257,  16, True,  0.30, 0.12, 0.06),
    NeutralClass("bus_bendy",             13, 257,  15, True,  0.30, 0.12, 0.06),
    NeutralClass("other_vehicle",         20, 259,  18, True,  0.32, 0.12, 0.05),
    NeutralClass("construction_vehicle",  20, 259,  18, True,  0.38, 0.12, 0.04),
    NeutralClass("trailer",               20, 259,  22, True,  0.32, 0.12, 0.05),
    NeutralClass("ambulance",             20, 259,  19, True,  0.45, 0.15, 0.05),
    NeutralClass("person",                30, 254,   2, True,  0.25, 0.10, 0.03),
    NeutralClass("child",                 30, 254,   3, True,  0.25, 0.10, 0.03),
    NeutralClass("construction_worker",   30, 254,   4, True,  0.55, 0.20, 0.01),  # reflective vest
    NeutralClass("police_officer",        30, 254,   6, True,  0.35, 0.15, 0.02),
    NeutralClass("bicyclist",             31, 253,  14, True,  0.27, 0.10, 0.03),  # nuScenes: rider is part of the bicycle
    NeutralClass("bicycle",               11,  -1,  14, True,  0.30, 0.12, 0.05),
    NeutralClass("motorcyclist",          32, 255,  21, True,  0.27, 0.10, 0.03),
    NeutralClass("motorcycle",            15,  -1,  21, True,  0.30, 0.12, 0.05),
    NeutralClass("ego",                   -1,  -1,  31, False, 0.10, 0.10, 0.20),  # own vehicle body
)
# fmt: on

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
CLASS_ID: dict[str, int] = {c.name: i for i, c in enumerate(CLASSES)}

# Lookup arrays indexed by neutral class id (vectorised label mapping, no per-point Python).
KITTI_RAW = np.array([c.kitti for c in CLASSES], dtype=np.int64)
KITTI_RAW_MOVING = np.array([c.kitti_moving if c.kitti_moving >= 0 else c.kitti for c in CLASSES], dtype=np.int64)
NUSCENES_FINE = np.array([c.nuscenes for c in CLASSES], dtype=np.int64)
IS_THING = np.array([c.thing for c in CLASSES], dtype=bool)
# SemanticKITTI thing raw ids (instance-labelled classes): vehicles and humans, static and moving
_KITTI_THING_IDS = {10, 11, 13, 15, 16, 18, 20, 30, 31, 32, 252, 253, 254, 255, 256, 257, 258, 259}
KITTI_THING = np.array([c.thing and c.kitti in _KITTI_THING_IDS for c in CLASSES], dtype=bool)
REFL_MEAN = np.array([c.refl_mean for c in CLASSES])
REFL_SD = np.array([c.refl_sd for c in CLASSES])
P_ZERO = np.array([c.p_zero for c in CLASSES])


def cid(name: str) -> int:
    """Neutral class id of ``name`` (KeyError for an unknown name)."""
    return CLASS_ID[name]


def sample_reflectivity(rng: np.random.Generator, cls: np.ndarray, refl: np.ndarray) -> np.ndarray:
    """Per-point reflectivity in [0, 0.99] (float64, not quantised).

    ``refl`` is the reflectivity of the hit surface (per primitive, or the class mean on the
    ground); noise of the class's spread is added, a class-dependent share returns exactly 0 (glass,
    black paint), and 1 % of car returns are retro-reflectors (plates, lights) near 0.9.
    """
    r = refl + rng.normal(0, 1, cls.shape) * REFL_SD[cls] * 0.7
    r[rng.random(cls.shape) < P_ZERO[cls]] = 0.0
    bright = (cls == CLASS_ID["car"]) & (rng.random(cls.shape) < 0.01)
    r[bright] = rng.uniform(0.85, 0.99, int(bright.sum()))
    return np.clip(r, 0.0, 0.99)
