"""Shared scene model of the synthetic LiDAR generator (used by both dataset writers).

A scene is a street built along a gently meandering road:

* :class:`Road` -- the centreline (arc length ``s`` in metres, heading that oscillates by a few
  degrees so the ego yaw changes gently and the road never loops), a smooth ground height field
  ``h(x, y)`` (a few long-wavelength waves, slopes <= ~2 %, so the vehicle pitches and rolls a
  little), and a per-side *block layout* that gives the ground class at any world point: road with
  lane markings, parking lanes and lots, sidewalk, terrain, other-ground (driveways, gravel).
  World-fixed small-scale ground roughness and 3-D object-surface relief (foliage, facades) make
  the surfaces non-smooth, so that unregistered consecutive scans do not overlap trivially.
* :class:`Primitives` -- the solid objects as a structure of arrays: boxes rotated about the
  vertical axis, vertical cylinders and (yawed) ellipsoids, each with a neutral class
  (:mod:`classes`), an instance id (0 for stuff) and a reflectivity. Sidewalks are raised boxes
  (the curb face is their side), buildings and fences are boxes, trees are a trunk cylinder plus a
  crown ellipsoid, people are a few cylinders/ellipsoids.
* :class:`DynamicObject` -- a thing with a pose per frame (road coordinates ``s, l`` and a yaw
  offset); it is labelled *moving* in the frames where it moves.
* :class:`EgoTrack` -- the ego trajectory per frame in road coordinates (0.6-1.2 m per 0.1 s by
  default) plus a ~1 Hz suspension bounce; :meth:`Scene.ego_base_pose` gives the vehicle pose.
* :func:`build_scene` -- lays out one street: blocks of urban / suburban / green style with
  sidewalks, parking, buildings, fences, trees and hedges, poles and signs, parked and moving
  vehicles, people and riders (a few guaranteed behind the ego start), and nuScenes extras.

Everything lives in one fixed world frame, so the static world aligns across frames (multi-scan
fusion works as on real data). Units: metres, radians, seconds. All randomness comes from the
``numpy.random.Generator`` passed in, so one seed gives one scene.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from harness.data.generate.classes import CLASSES, IS_THING, cid

KIND_BOX, KIND_CYLINDER, KIND_ELLIPSOID = 0, 1, 2


# --------------------------------------------------------------------------- primitives
@dataclass
class Primitives:
    """Solid primitives as a structure of arrays (n primitives).

    Attributes:
        kind: (n,) int8, ``KIND_BOX`` / ``KIND_CYLINDER`` / ``KIND_ELLIPSOID``.
        center: (n, 3) float64 geometric centre [m] (world frame, or object frame for a template).
        half: (n, 3) float64 half extents [m]: box (hx, hy, hz) along its own axes; cylinder
            (r, r, hz); ellipsoid semi-axes (a, b, c).
        yaw: (n,) rotation about +z [rad] (ignored by cylinders).
        cls: (n,) int64 neutral class id.
        inst: (n,) int64 instance id (0 for stuff).
        refl: (n,) float64 reflectivity of this primitive (0-1); per-point noise is added later.
        moving: (n,) bool, the object moves in the current frame (selects the moving raw id).
    """

    kind: np.ndarray
    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    cls: np.ndarray
    inst: np.ndarray
    refl: np.ndarray
    moving: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @staticmethod
    def empty() -> "Primitives":
        return Primitives(np.zeros(0, np.int8), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0),
                          np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool))

    def take(self, index: np.ndarray) -> "Primitives":
        return Primitives(self.kind[index], self.center[index], self.half[index], self.yaw[index],
                          self.cls[index], self.inst[index], self.refl[index], self.moving[index])

    @staticmethod
    def concat(parts: Sequence["Primitives"]) -> "Primitives":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Primitives.empty()
        return Primitives(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                            ("kind", "center", "half", "yaw", "cls", "inst", "refl", "moving")))


class PrimList:
    """Append-only builder for :class:`Primitives` (scene construction, not per point)."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, kind: int, center: Sequence[float], half: Sequence[float], yaw: float, cls: str,
            inst: int = 0, refl: float | None = None) -> None:
        c = CLASSES[cid(cls)]
        self.rows.append((kind, tuple(center), tuple(half), yaw, cid(cls), inst,
                          c.refl_mean if refl is None else refl))

    def box(self, center, half, yaw, cls, inst=0, refl=None) -> None:
        self.add(KIND_BOX, center, half, yaw, cls, inst, refl)

    def cylinder(self, center, radius, half_height, cls, inst=0, refl=None) -> None:
        self.add(KIND_CYLINDER, center, (radius, radius, half_height), 0.0, cls, inst, refl)

    def ellipsoid(self, center, semi_axes, yaw, cls, inst=0, refl=None) -> None:
        self.add(KIND_ELLIPSOID, center, semi_axes, yaw, cls, inst, refl)

    def build(self) -> Primitives:
        if not self.rows:
            return Primitives.empty()
        kind, center, half, yaw, cls, inst, refl = zip(*self.rows)
        n = len(kind)
        return Primitives(np.array(kind, np.int8), np.array(center, float).reshape(n, 3),
                          np.array(half, float).reshape(n, 3), np.array(yaw, float),
                          np.array(cls, np.int64), np.array(inst, np.int64), np.array(refl, float),
                          np.zeros(n, bool))


# --------------------------------------------------------------------------- object templates
# Object frame: origin on the ground under the object centre, x forward, y left, z up (metres).
def car_template(rng: np.random.Generator, cls: str = "car", inst: int = 0) -> PrimList:
    """A car as a lower body box plus a cabin box (rounder than one box; ground visible below)."""
    p = PrimList()
    length, width, height = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9), rng.uniform(1.40, 1.60)
    refl = float(np.clip(rng.normal(CLASSES[cid(cls)].refl_mean, 0.08), 0.02, 0.6))
    body_top = 0.62 * height
    p.box((0, 0, (0.28 + body_top) / 2), (length / 2, width / 2, (body_top - 0.28) / 2), 0, cls, inst, refl)
    cab_len = 0.55 * length
    p.box((-0.08 * length, 0, (body_top + height) / 2), (cab_len / 2, 0.45 * width, (height - body_top) / 2), 0,
          cls, inst, refl)
    return p


def long_vehicle_template(rng: np.random.Generator, cls: str, inst: int) -> PrimList:
    """Trucks, buses, trailers, construction and other vehicles as 1-3 boxes."""
    p = PrimList()
    if cls == "truck":
        cargo, width = rng.uniform(5.0, 8.0), rng.uniform(2.3, 2.5)
        h = rng.uniform(3.0, 3.8)
        p.box((-(cargo / 2) + 0.9, 0, (0.5 + h) / 2), (cargo / 2, width / 2, (h - 0.5) / 2), 0, cls, inst)
        p.box((1.0 + 1.1, 0, (0.45 + 2.9) / 2), (1.1, width / 2, (2.9 - 0.45) / 2), 0, cls, inst)
    elif cls in ("bus", "bus_bendy"):
        h, w = rng.uniform(2.9, 3.3), 2.55
        if cls == "bus":
            length = rng.uniform(10.5, 12.5)
            p.box((0, 0, (0.35 + h) / 2), (length / 2, w / 2, (h - 0.35) / 2), 0, cls, inst)
        else:
            p.box((4.6, 0, (0.35 + h) / 2), (4.5, w / 2, (h - 0.35) / 2), 0, cls, inst)
            p.box((-4.3, 0, (0.35 + h) / 2), (4.2, w / 2, (h - 0.35) / 2), 0, cls, inst)
    elif cls == "trailer":
        length, h = rng.uniform(6.0, 10.0), rng.uniform(2.8, 3.6)
        p.box((0, 0, (1.0 + h) / 2), (length / 2, 1.25, (h - 1.0) / 2), 0, cls, inst)
    elif cls == "construction_vehicle":
        p.box((0, 0, 1.3), (2.6, 1.25, 0.9), 0, cls, inst)
        p.box((-0.8, 0, 2.9), (0.9, 0.8, 0.7), 0, cls, inst)
        p.box((2.9, 0, 2.6), (1.6, 0.25, 0.25), 0, cls, inst)    # boom / bucket arm
    else:  # other_vehicle, ambulance: van-like
        length, h = rng.uniform(4.8, 6.0), rng.uniform(2.1, 2.7)
        p.box((0, 0, (0.35 + h) / 2), (length / 2, 1.0, (h - 0.35) / 2), 0, cls, inst)
    return p


def person_template(rng: np.random.Generator, cls: str = "person", inst: int = 0, scale: float = 1.0,
                    base: float = 0.0) -> PrimList:
    """A standing person (legs cylinder, torso ellipsoid, head sphere), about 1.75 m tall."""
    p = PrimList()
    s = scale * rng.uniform(0.93, 1.07)
    p.cylinder((0, 0, base + 0.43 * s), 0.14 * s, 0.43 * s, cls, inst)
    p.ellipsoid((0, 0, base + 1.17 * s), (0.17 * s, 0.25 * s, 0.34 * s), 0, cls, inst)
    p.ellipsoid((0, 0, base + 1.63 * s), (0.11 * s, 0.10 * s, 0.12 * s), 0, cls, inst)
    return p


def rider_template(rng: np.random.Generator, vehicle: str, rider_inst: int, vehicle_inst: int) -> PrimList:
    """A bicyclist on a bicycle or a motorcyclist on a motorcycle (two instances, two classes)."""
    p = PrimList()
    if vehicle == "bicycle":
        p.box((0, 0, 0.62), (0.85, 0.08, 0.33), 0, "bicycle", vehicle_inst)
        seat = 0.95
        rider = "bicyclist"
    else:
        p.box((0, 0, 0.62), (1.05, 0.35, 0.42), 0, "motorcycle", vehicle_inst)
        seat = 1.0
        rider = "motorcyclist"
    p.cylinder((-0.1, 0, seat + 0.05), 0.13, 0.12, rider, rider_inst)
    p.ellipsoid((0.0, 0, seat + 0.48), (0.22, 0.22, 0.32), 0, rider, rider_inst)
    p.ellipsoid((0.1, 0, seat + 0.92), (0.13, 0.12, 0.14), 0, rider, rider_inst)
    return p


def parked_two_wheeler(vehicle: str, inst: int) -> PrimList:
    p = PrimList()
    if vehicle == "bicycle":
        p.box((0, 0, 0.5), (0.85, 0.08, 0.5), 0, "bicycle", inst)
    else:
        p.box((0, 0, 0.6), (1.05, 0.35, 0.5), 0, "motorcycle", inst)
    return p


def tree_template(rng: np.random.Generator, big: bool = True) -> PrimList:
    """A tree: trunk cylinder (radius 0.06-0.2 m) reaching into a crown ellipsoid.

    Big (street/garden) trees have the crown bottom 1.6-3.3 m above ground, so scan lines at sensor
    height mostly pass below nearby crowns (the HDL-64E looks up by only 2.5 deg), as in real street
    scenes; small trees are bush-like.
    """
    p = PrimList()
    r_trunk = rng.uniform(0.08, 0.2) if big else rng.uniform(0.05, 0.1)
    crown_r = rng.uniform(1.8, 3.8) if big else rng.uniform(0.9, 1.8)
    crown_h = crown_r * rng.uniform(0.8, 1.3)
    bottom = rng.uniform(1.6, 3.3) if big else rng.uniform(0.6, 1.2)
    crown_z = bottom + crown_h
    trunk_top = bottom + 0.3 * crown_h
    p.cylinder((0, 0, trunk_top / 2), r_trunk, trunk_top / 2, "trunk")
    p.ellipsoid((0, 0, crown_z), (crown_r, crown_r * rng.uniform(0.85, 1.0), crown_h), rng.uniform(0, np.pi),
                "vegetation", 0, float(np.clip(rng.normal(0.33, 0.05), 0.15, 0.5)))
    return p


# --------------------------------------------------------------------------- road and ground
@dataclass
class Layout:
    """Per-side block layout along the road (arrays of length n_blocks, sorted by ``start``).

    ``kind``: 0 street block, 1 side street (the whole block is road out to ``far``).
    ``parking``/``sidewalk``: widths [m] of the parking lane and the raised sidewalk (0 = none).
    ``beyond``: neutral class of the ground behind the sidewalk (terrain, other_ground, parking).
    ``drive0``/``drive1``: an other-ground driveway across the beyond zone (s interval, may be empty).
    """

    start: np.ndarray
    end: np.ndarray
    kind: np.ndarray
    parking: np.ndarray
    sidewalk: np.ndarray
    beyond: np.ndarray
    drive0: np.ndarray
    drive1: np.ndarray
    style: np.ndarray


class Road:
    """Centreline, ground height and ground classes of one street (see module docstring)."""

    def __init__(self, rng: np.random.Generator, s_lo: float, s_hi: float, half_width: float,
                 layouts: tuple[Layout, Layout] | None = None) -> None:
        self.ds = 0.5
        self.half_width = half_width
        self.s = np.arange(s_lo, s_hi + self.ds, self.ds)
        # heading oscillates by a few degrees over 250-600 m: gentle yaw, no loops (min radius ~250 m)
        a1, a2 = rng.uniform(0.03, 0.12), rng.uniform(0.0, 0.04)
        l1, l2 = rng.uniform(300, 600), rng.uniform(120, 250)
        p1, p2, theta0 = rng.uniform(0, 2 * np.pi, 3)
        self.theta = theta0 + a1 * np.sin(2 * np.pi * self.s / l1 + p1) + a2 * np.sin(2 * np.pi * self.s / l2 + p2)
        dx, dy = np.cos(self.theta) * self.ds, np.sin(self.theta) * self.ds
        i0 = int(np.argmin(np.abs(self.s)))  # the point s = 0 sits at the world origin
        x = np.concatenate([[0.0], np.cumsum((dx[1:] + dx[:-1]) / 2)])
        y = np.concatenate([[0.0], np.cumsum((dy[1:] + dy[:-1]) / 2)])
        self.x, self.y = x - x[i0], y - y[i0]
        # ground: sum of long waves, amplitude 0.2-0.35 m, slopes up to ~2 %
        n = 3
        amp = np.array([rng.uniform(0.15, 0.35), rng.uniform(0.05, 0.12), rng.uniform(0.01, 0.03)])
        wl = np.array([rng.uniform(180, 300), rng.uniform(60, 100), rng.uniform(20, 35)])
        ang = rng.uniform(0, np.pi, n)
        self._wave_amp = amp
        self._wave_k = (2 * np.pi / wl)[:, None] * np.stack([np.cos(ang), np.sin(ang)], axis=1)  # (n, 2)
        self._wave_phase = rng.uniform(0, 2 * np.pi, n)
        # small-scale roughness (world-fixed, so it aligns across frames): 6 waves of 0.4-3 m
        m = 6
        ang_r = rng.uniform(0, np.pi, m)
        self._rough_k = (2 * np.pi / rng.uniform(0.4, 3.0, m))[:, None] * np.stack([np.cos(ang_r), np.sin(ang_r)], axis=1)
        self._rough_phase = rng.uniform(0, 2 * np.pi, m)
        # 3-D relief of object surfaces (leaves, window recesses, body panels), world-fixed as well
        dirs = rng.normal(size=(8, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        self._relief_k = dirs * (2 * np.pi / rng.uniform(0.25, 1.5, 8))[:, None]
        self._relief_phase = rng.uniform(0, 2 * np.pi, 8)
        self.layouts = layouts

    # ---- centreline
    def center(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centreline point (x, y) and heading at arc length ``s`` [m] (linear interpolation)."""
        return np.interp(s, self.s, self.x), np.interp(s, self.s, self.y), np.interp(s, self.s, self.theta)

    def to_world(self, s, l) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Road coordinates (s along, l to the left) -> world (x, y) and the road heading."""
        cx, cy, th = self.center(s)
        return cx - l * np.sin(th), cy + l * np.cos(th), th

    def to_road(self, x: np.ndarray, y: np.ndarray, s_guess: float) -> tuple[np.ndarray, np.ndarray]:
        """World (x, y) -> road coordinates (s, l) by projecting onto the centreline (4 Newton steps).

        ``s_guess`` (e.g. the ego's ``s``) starts the iteration; it converges for points within a few
        hundred metres because the road curvature is small.
        """
        s = np.full(np.shape(x), float(s_guess))
        for _ in range(4):
            cx, cy, th = self.center(s)
            s = s + (x - cx) * np.cos(th) + (y - cy) * np.sin(th)
        cx, cy, th = self.center(s)
        l = -(x - cx) * np.sin(th) + (y - cy) * np.cos(th)
        return s, l

    # ---- ground height
    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground height h(x, y) [m]."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        ph = self._wave_k[:, 0, None] * x.reshape(1, -1) + self._wave_k[:, 1, None] * y.reshape(1, -1) \
            + self._wave_phase[:, None]
        return (self._wave_amp[:, None] * np.sin(ph)).sum(0).reshape(x.shape)

    def height_gradient(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ground height and its gradient (h, dh/dx, dh/dy) in one pass (shares the wave phases)."""
        ph = self._wave_k[:, 0, None] * x[None, :] + self._wave_k[:, 1, None] * y[None, :] + self._wave_phase[:, None]
        a = self._wave_amp[:, None]
        h = (a * np.sin(ph)).sum(0)
        c = a * np.cos(ph)
        return h, (c * self._wave_k[:, 0, None]).sum(0), (c * self._wave_k[:, 1, None]).sum(0)

    def gradient(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dh/dx, dh/dy) of the ground height field."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        ph = self._wave_k[:, 0, None] * x.reshape(1, -1) + self._wave_k[:, 1, None] * y.reshape(1, -1) \
            + self._wave_phase[:, None]
        c = self._wave_amp[:, None] * np.cos(ph)
        return (c * self._wave_k[:, 0, None]).sum(0).reshape(x.shape), (c * self._wave_k[:, 1, None]).sum(0).reshape(x.shape)

    def roughness(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Small-scale surface relief [m] around the smooth ground, unit amplitude ~1 cm (sd 0.7 cm)."""
        ph = self._rough_k[:, 0, None] * x[None, :] + self._rough_k[:, 1, None] * y[None, :] + self._rough_phase[:, None]
        return 0.004 * np.sin(ph).sum(0)

    def relief(self, xyz: np.ndarray) -> np.ndarray:
        """World-fixed 3-D surface relief in [-1, 1] (sd ~0.5) at points (N, 3); scaled per class."""
        ph = xyz @ self._relief_k.T + self._relief_phase[None, :]
        return np.sin(ph).sum(1) / np.sqrt(8.0)

    # ---- ground classes
    def ground_class(self, s: np.ndarray, l: np.ndarray) -> np.ndarray:
        """Neutral ground class at road coordinates (vectorised over points)."""
        hw = self.half_width
        a = np.abs(l)
        out = np.full(s.shape, cid("terrain"), np.int64)
        for side, mask in ((0, l >= 0), (1, l < 0)):
            if not mask.any():
                continue
            lay = self.layouts[side]
            ss, aa = s[mask], a[mask]
            b = np.clip(np.searchsorted(lay.start, ss, side="right") - 1, 0, len(lay.start) - 1)
            curb = hw + lay.parking[b]
            back = curb + lay.sidewalk[b]
            cls = lay.beyond[b].copy()
            drive = (ss >= lay.drive0[b]) & (ss < lay.drive1[b]) & (aa >= back)
            cls[drive] = cid("other_ground")
            cls[aa < back] = cid("sidewalk")
            cls[aa < curb] = cid("parking")
            cls[(aa < hw) | (lay.kind[b] == 1)] = cid("road")
            out[mask] = cls
        # lane markings: dashed centre line (3 m dash, 6 m gap) and solid edge lines
        on_road = out == cid("road")
        centre = (np.abs(l) < 0.075) & (np.mod(s, 9.0) < 3.0)
        edge = np.abs(a - (hw - 0.3)) < 0.07
        out[on_road & (centre | edge)] = cid("lane_marking")
        return out


# --------------------------------------------------------------------------- dynamic objects / ego
@dataclass
class DynamicObject:
    """A thing that moves: object-frame primitives and a road-frame pose per frame.

    ``s``, ``l``: (n_frames,) road coordinates of the object origin [m]; ``yaw``: (n_frames,) yaw
    relative to the road heading [rad]; ``moving``: (n_frames,) bool.
    """

    template: Primitives
    s: np.ndarray
    l: np.ndarray
    yaw: np.ndarray
    moving: np.ndarray


@dataclass
class Thing:
    """Bounding box of one thing instance (for box annotations), in its object frame.

    ``center``/``size`` [m]: centre and (length, width, height) of the axis-aligned box around the
    object's primitives in the object frame; the object pose is ``pose`` = (x, y, z, yaw) in the
    world for a static object, or that of ``scene.dynamic[dynamic]`` in each frame.
    """

    inst: int
    cls: int
    center: np.ndarray
    size: np.ndarray
    pose: tuple[float, float, float, float] | None = None
    dynamic: int = -1


def thing_bounds(template: Primitives) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(inst, cls, centre, size) of each thing instance in an object-frame template."""
    out = []
    for inst in np.unique(template.inst[(template.inst > 0) & IS_THING[template.cls]]):
        sel = template.inst == inst
        lo = (template.center[sel] - template.half[sel]).min(0)
        hi = (template.center[sel] + template.half[sel]).max(0)
        lo[2] = min(lo[2], 0.0)  # boxes reach the ground (wheels, feet)
        out.append((int(inst), int(template.cls[sel][0]), (lo + hi) / 2, hi - lo))
    return out


@dataclass
class EgoTrack:
    """Ego trajectory: road coordinates per frame plus small attitude noise [rad]."""

    s: np.ndarray
    l: np.ndarray
    yaw: np.ndarray
    pitch_noise: np.ndarray
    roll_noise: np.ndarray


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def place(template: Primitives, x: float, y: float, z: float, yaw: float) -> Primitives:
    """Move object-frame primitives to a world pose (yaw about +z, then translation)."""
    out = template.take(np.arange(len(template)))
    c, s = np.cos(yaw), np.sin(yaw)
    lx, ly = template.center[:, 0], template.center[:, 1]
    out.center = np.stack([x + c * lx - s * ly, y + s * lx + c * ly, z + template.center[:, 2]], axis=1)
    out.yaw = template.yaw + yaw
    return out


# --------------------------------------------------------------------------- the scene
@dataclass
class Scene:
    """A street: road + static primitives (sorted by road ``s``) + dynamic objects + ego track."""

    road: Road
    static: Primitives
    static_s: np.ndarray
    dynamic: list[DynamicObject]
    ego: EgoTrack
    info: dict = field(default_factory=dict)
    things: list[Thing] = field(default_factory=list)

    def ego_base_pose(self, frame: int) -> np.ndarray:
        """4x4 pose of the ego frame (on the ground, x forward, z up) in the world at ``frame``.

        Pitch and roll follow the ground slope under the vehicle plus a little noise.
        """
        s, l = self.ego.s[frame], self.ego.l[frame]
        x, y, th = self.road.to_world(s, l)
        yaw = float(th + self.ego.yaw[frame])
        gx, gy = self.road.gradient(np.array([x]), np.array([y]))
        fwd = gx[0] * np.cos(yaw) + gy[0] * np.sin(yaw)
        left = -gx[0] * np.sin(yaw) + gy[0] * np.cos(yaw)
        pitch = -np.arctan(fwd) + self.ego.pitch_noise[frame]
        roll = np.arctan(left) + self.ego.roll_noise[frame]
        pose = np.eye(4)
        pose[:3, :3] = rot_z(yaw) @ rot_y(pitch) @ rot_x(roll)
        pose[:3, 3] = [x, y, float(self.road.height(np.array([x]), np.array([y]))[0])]
        return pose

    def primitives_at(self, frame: int, center_s: float, radius: float) -> Primitives:
        """Primitives that can be seen from road position ``center_s`` in ``frame``.

        Static primitives are selected by a window on ``s`` (the world is fixed); dynamic ones are
        placed at their pose of this frame and flagged moving where they move.
        """
        lo, hi = np.searchsorted(self.static_s, [center_s - radius, center_s + radius])
        parts = [self.static.take(np.arange(lo, hi))]
        for obj in self.dynamic:
            s = obj.s[frame]
            if abs(s - center_s) > radius:
                continue
            x, y, th = self.road.to_world(s, obj.l[frame])
            z = float(self.road.height(np.array([x]), np.array([y]))[0])
            placed = place(obj.template, float(x), float(y), z, float(th + obj.yaw[frame]))
            placed.moving[:] = bool(obj.moving[frame])
            parts.append(placed)
        return Primitives.concat(parts)

    def thing_boxes(self, frame: int) -> list[dict]:
        """World boxes of all thing instances in ``frame``: dicts with ``inst``, ``cls`` (neutral id),
        ``center`` (3,), ``size`` (length, width, height), ``yaw`` [rad], ``moving``."""
        out = []
        for th in self.things:
            moving = False
            if th.dynamic >= 0:
                obj = self.dynamic[th.dynamic]
                x, y, road_th = self.road.to_world(obj.s[frame], obj.l[frame])
                z = float(self.road.height(np.array([x]), np.array([y]))[0])
                yaw = float(road_th + obj.yaw[frame])
                x, y, moving = float(x), float(y), bool(obj.moving[frame])
            else:
                x, y, z, yaw = th.pose
            c, s_ = np.cos(yaw), np.sin(yaw)
            center = np.array([x + c * th.center[0] - s_ * th.center[1], y + s_ * th.center[0] + c * th.center[1],
                               z + th.center[2]])
            out.append({"inst": th.inst, "cls": th.cls, "center": center, "size": th.size, "yaw": yaw,
                        "moving": moving})
        return out


# --------------------------------------------------------------------------- scene construction
class _Builder:
    """Places the content of one street along the road (Python loops over objects, not points)."""

    def __init__(self, rng: np.random.Generator, road: Road, ego: EgoTrack, times: np.ndarray,
                 flavour: str, rare_far: bool, showcase_s: Sequence[float]) -> None:
        self.rng, self.road, self.ego, self.times = rng, road, ego, times
        self.flavour, self.rare_far = flavour, rare_far
        self.static = PrimList()
        self.static_s: list[float] = []
        self.dynamic: list[DynamicObject] = []
        self.things: list[Thing] = []
        self.showcase_s = list(showcase_s)
        self.coverage = False  # build_scene(coverage=True): the class-coverage street
        self.row_next: dict[int, int] = {}  # coverage street: next COVERAGE_ROW index per side
        # arbitrary, non-contiguous instance ids (real seq 00: cars 208-219 and 504)
        self._next_inst = int(rng.integers(100, 400))
        ex, ey, _ = road.to_world(ego.s, ego.l)
        self._ego_xy = np.stack([ex, ey], axis=1)

    def new_instance(self) -> int:
        self._next_inst += int(self.rng.integers(1, 6))
        if self._next_inst > 65000:  # the label file keeps 16 bits for the instance
            self._next_inst = int(self.rng.integers(100, 400))
        return self._next_inst

    def ground_z(self, x: float, y: float) -> float:
        return float(self.road.height(np.array([x]), np.array([y]))[0])

    def min_ego_distance(self, s: np.ndarray | float, l: np.ndarray | float) -> float:
        """Smallest distance [m] over all frames between a road position (or track) and the ego."""
        x, y, _ = self.road.to_world(np.broadcast_to(s, self.ego.s.shape), np.broadcast_to(l, self.ego.s.shape))
        return float(np.min(np.hypot(x - self._ego_xy[:, 0], y - self._ego_xy[:, 1])))

    def far_enough(self, s, l) -> bool:
        """Rare objects keep >= 7 m from the ego in every frame (> 22 m in a ``rare_far`` street).

        A person 3 m from the sensor would take > 2 % of a scan; real rare classes stay well below 1 %.
        """
        return self.min_ego_distance(s, l) > (22.0 if self.rare_far else 7.0)

    # ---- static placement
    def put(self, template: PrimList | Primitives, s: float, l: float, yaw: float = 0.0, z_off: float = 0.0) -> None:
        prims = template.build() if isinstance(template, PrimList) else template
        if not len(prims):
            return
        x, y, th = self.road.to_world(s, l)
        z = self.ground_z(float(x), float(y)) + z_off
        placed = place(prims, float(x), float(y), z, float(th + yaw))
        for inst, cls, centre, size in thing_bounds(prims):
            self.things.append(Thing(inst, cls, centre, size, pose=(float(x), float(y), z, float(th + yaw))))
        for i in range(len(placed)):
            self.static.rows.append((int(placed.kind[i]), tuple(placed.center[i]), tuple(placed.half[i]),
                                     float(placed.yaw[i]), int(placed.cls[i]), int(placed.inst[i]), float(placed.refl[i])))
            self.static_s.append(s)

    def along(self, s0: float, s1: float, a0: float, a1: float, side: int, z0: float, z1: float, cls: str,
              seg: float = 8.0, inst: int = 0, refl: float | None = None) -> None:
        """A long box between s0..s1 (along the road) and |l| in a0..a1, cut into <= seg m pieces."""
        n = max(1, int(np.ceil((s1 - s0) / seg)))
        edges = np.linspace(s0, s1, n + 1)
        sign = 1.0 if side == 0 else -1.0
        for e0, e1 in zip(edges[:-1], edges[1:]):
            p = PrimList()
            p.box((0, 0, (z0 + z1) / 2), ((e1 - e0) / 2 + 0.02, (a1 - a0) / 2, (z1 - z0) / 2), 0, cls, inst, refl)
            self.put(p, (e0 + e1) / 2, sign * (a0 + a1) / 2)

    # ---- dynamic placement
    def add_dynamic(self, template: PrimList, s: np.ndarray, l: np.ndarray, yaw: np.ndarray, moving: np.ndarray) -> None:
        prims = template.build()
        for inst, cls, centre, size in thing_bounds(prims):
            self.things.append(Thing(inst, cls, centre, size, dynamic=len(self.dynamic)))
        self.dynamic.append(DynamicObject(prims, np.asarray(s, float), np.asarray(l, float),
                                          np.asarray(yaw, float), np.asarray(moving, bool)))

    def mover(self, s0: float, speed: float, direction: int, t_start: float = -1e9,
              t_stop: float = 1e9) -> tuple[np.ndarray, np.ndarray]:
        """Road ``s`` per frame for an object moving at ``speed`` [m/s] between t_start and t_stop."""
        t = np.clip(self.times, t_start, t_stop)
        s = s0 + direction * speed * (t - np.clip(self.times[0], t_start, t_stop))
        moving = (self.times > t_start) & (self.times < t_stop) & (speed > 0.05)
        return s, moving


def build_scene(rng: np.random.Generator, times: np.ndarray, flavour: str = "semantickitti",
                steps: np.ndarray | None = None, rare_far: bool = False, style: str | None = None,
                showcase: bool = False, coverage: bool = False) -> Scene:
    """Build one street scene and the ego track for frames at ``times`` [s].

    Args:
        rng: the random generator (one seed -> one scene).
        times: (n_frames,) frame times [s] from the sequence start.
        flavour: ``"semantickitti"`` or ``"nuscenes"`` (nuScenes adds barriers, cones, trailers,
            construction vehicles, animals, bicycle racks and debris).
        steps: (n_frames,) ego displacement [m] from frame i-1 to frame i (``steps[0]`` is
            ignored); default 0.6-1.2 m per 0.1 s frame with a smooth speed profile.
        rare_far: keep person/bicyclist/motorcyclist/bicycle/motorcycle beyond 22 m of the ego in
            every frame (like the spvnas scan, whose cars are all > 20 m).
        style: ``"urban"``, ``"suburban"`` or ``"green"`` (mix of block kinds); random if None.
        showcase: put one object of every nuScenes thing class near the first frame.
        coverage: a "class coverage" street for short demo/benchmark sequences (SemanticKITTI flavour):
            every block has a parking lane, a sidewalk, street trees and sign poles; the parking lanes
            hold a repeating row of car, truck, van (other-vehicle), motorcycle, bicycle and person, and
            a bicyclist and a motorcyclist ride with the ego, so that all 19 SemanticKITTI classes lie
            within ~15 m of the sensor in every frame (see :func:`_coverage_row`). Not a realistic
            street: the class frequencies are flattened on purpose.
    """
    n = len(times)
    if steps is None and coverage:
        # coverage street: key frames 3-4 m apart (about every 4th frame of a 10 Hz drive), so that a short
        # sequence passes a whole cycle of the parking-lane row instead of repeating one view
        steps = rng.uniform(3.0, 4.0, n)
    if steps is None:
        # 6-12 m/s at 10 Hz with a smooth speed profile (real seq 00: 0.67-0.81 m per frame)
        base = rng.uniform(0.8, 1.0)
        steps = base + 0.2 * np.sin(np.arange(n) / rng.uniform(15, 40) + rng.uniform(0, 6.3))
    ego_s = np.concatenate([[0.0], np.cumsum(steps[1:])]) if n else np.zeros(0)
    # KITTI: narrow residential streets; nuScenes (Boston, Singapore): wider multi-lane city roads
    half_width = float(rng.uniform(3.2, 4.6) if flavour == "semantickitti" else rng.uniform(4.5, 7.0))
    # attitude: suspension bounce at ~1 Hz (+-0.1-0.25 deg) on top of the ground slope; the real
    # seq 00 poses change by ~0.2 deg between frames 0 and 1, which the LiDAR poses must capture
    t = np.asarray(times, float)
    f_p, f_r = rng.uniform(0.8, 1.6, 2)
    ego = EgoTrack(s=ego_s, l=np.full(n, -half_width / 2) + 0.15 * np.sin(ego_s / 35.0 + rng.uniform(0, 6.3)),
                   yaw=0.004 * np.sin(ego_s / 20.0 + rng.uniform(0, 6.3)),
                   pitch_noise=np.radians(rng.uniform(0.1, 0.25)) * np.sin(2 * np.pi * f_p * t + rng.uniform(0, 6.3)),
                   roll_noise=np.radians(rng.uniform(0.1, 0.25)) * np.sin(2 * np.pi * f_r * t + rng.uniform(0, 6.3)))
    margin = 140.0
    s_lo, s_hi = float(ego_s.min()) - margin, float(ego_s.max()) + margin
    style = style or str(rng.choice(["urban", "suburban", "green"], p=[0.4, 0.35, 0.25]))
    if coverage:
        style = "urban"
    # coverage: short blocks whose ground behind the sidewalk alternates terrain / other-ground, in
    # opposite phase on the two sides
    layouts = (_make_layout(rng, s_lo, s_hi, style, flavour, 0 if coverage else None),
               _make_layout(rng, s_lo, s_hi, style, flavour, 1 if coverage else None))
    road = Road(rng, s_lo - 20, s_hi + 20, half_width, layouts)
    b = _Builder(rng, road, ego, np.asarray(times, float), flavour, rare_far,
                 [float(ego_s[0])] if showcase else [])
    b.coverage = coverage
    for side in (0, 1):
        _fill_side(b, side)
    if coverage:
        _coverage_riders(b)
    _traffic(b)
    _rare_guaranteed(b)
    _rare(b)
    if flavour == "nuscenes":
        _nuscenes_extras(b)
    if showcase:
        _showcase(b)
    static = b.static.build()
    static_s = np.asarray(b.static_s, float)
    order = np.argsort(static_s, kind="stable")
    return Scene(road, static.take(order), static_s[order], b.dynamic, ego,
                 {"style": style, "half_width": half_width, "rare_far": rare_far, "coverage": coverage}, b.things)


def _make_layout(rng: np.random.Generator, s_lo: float, s_hi: float, style: str, flavour: str,
                 coverage: int | None = None) -> Layout:
    """Blocks of 20-70 m with street furniture widths; side streets every ~80-200 m.

    ``coverage`` (a phase 0/1, None = off): every block is a 10-18 m urban one with a parking lane
    (parking) and a sidewalk; the ground behind it alternates terrain / other-ground from block to block."""
    weights = {"urban": (0.75, 0.15, 0.10), "suburban": (0.2, 0.65, 0.15), "green": (0.05, 0.3, 0.65)}[style]
    rows = []
    s = s_lo
    next_street = s_lo + rng.uniform(40, 160)
    while s < s_hi:
        if s >= next_street:
            length = rng.uniform(9, 14)
            rows.append((s, s + length, 1, 0.0, 0.0, cid("road"), 0.0, 0.0, 0))
            s += length
            next_street = s + rng.uniform(80, 220)
            continue
        length = min(rng.uniform(20, 70) if coverage is None else rng.uniform(10, 18), max(next_street - s, 5.0))
        kind_style = int(rng.choice(3, p=weights))  # 0 urban, 1 suburban, 2 green
        if kind_style == 0:
            parking = rng.uniform(2.2, 2.6) if rng.random() < 0.3 else 0.0
            sidewalk = rng.uniform(2.5, 5.0)
            r = rng.random()
            beyond = cid("parking") if r < 0.08 else (cid("other_ground") if r < 0.2 else cid("terrain"))
        elif kind_style == 1:
            parking = rng.uniform(2.2, 2.5) if rng.random() < 0.15 else 0.0
            sidewalk = rng.uniform(2.0, 3.5) if rng.random() < 0.8 else 0.0
            beyond = cid("terrain")
        else:
            parking = 0.0
            sidewalk = rng.uniform(1.5, 2.5) if rng.random() < 0.5 else 0.0
            beyond = cid("terrain") if rng.random() < 0.97 else cid("other_ground")
        if rng.random() < 0.25 and length > 15:
            d0 = s + rng.uniform(3, length - 8)
            drive = (d0, d0 + rng.uniform(3, 5))
        else:
            drive = (0.0, 0.0)
        if coverage is not None:
            kind_style = 0   # urban: fence and building 3-4 m behind the sidewalk
            parking, sidewalk = rng.uniform(2.2, 2.6), rng.uniform(1.6, 2.4)
            beyond = (cid("terrain"), cid("other_ground"))[(len(rows) + coverage) % 2]
        rows.append((s, s + length, 0, parking, sidewalk, beyond, drive[0], drive[1], kind_style))
        s += length
    arr = list(zip(*rows))
    return Layout(*(np.array(a, dtype=np.int64 if i in (2, 5, 8) else float) for i, a in enumerate(arr)))


def _fill_side(b: _Builder, side: int) -> None:
    """Sidewalks, buildings, fences, vegetation, poles, signs, parked cars and clutter of one side."""
    rng, road = b.rng, b.road
    lay = road.layouts[side]
    hw = road.half_width
    sign = 1.0 if side == 0 else -1.0
    for i in range(len(lay.start)):
        s0, s1 = float(lay.start[i]), float(lay.end[i])
        if lay.kind[i] == 1:  # side street: poles with signs at the corners, a building further down
            for sc in (s0 - 0.8, s1 + 0.8):
                if rng.random() < 0.7:
                    _sign_pole(b, sc, sign * (hw + 0.6), side)
            continue
        parking, sidewalk = float(lay.parking[i]), float(lay.sidewalk[i])
        curb = hw + parking
        back = curb + sidewalk
        st = int(lay.style[i])
        if sidewalk > 0:
            h = rng.uniform(0.10, 0.15)
            b.along(s0, s1, curb, back, side, -0.3, h, "sidewalk")
        if b.coverage:
            _coverage_row(b, s0, s1, side, hw + parking / 2)
        # parked cars in the parking lane, 60-85 % occupied
        elif parking > 0:
            s = s0 + rng.uniform(0.5, 3.0)
            while s < s1 - 4.5:
                if rng.random() < 0.38:
                    r = rng.random()
                    if r < 0.92:   # 92 % cars, 2 % vans/trucks, 6 % motorcycles
                        tpl = car_template(rng, "car", b.new_instance())
                        heading = float(rng.normal(0, 0.03)) + (0.0 if rng.random() < 0.7 else np.pi)
                        b.put(tpl, s + 2.3, sign * (hw + parking / 2), heading)
                        s += rng.uniform(5.0, 6.5)
                        continue
                    if r < 0.94 and side == 0:  # vans/trucks park across the road, not beside the ego lane
                        cls = str(rng.choice(["truck", "other_vehicle"], p=[0.4, 0.6]))
                        tpl = long_vehicle_template(rng, cls, b.new_instance())
                        b.put(tpl, s + 4.5, sign * (hw + parking / 2 + 0.1), 0.0)
                        s += 10.0
                        continue
                    if b.far_enough(s + 1.2, sign * (hw + parking / 2)):
                        b.put(parked_two_wheeler("motorcycle", b.new_instance()), s + 1.2, sign * (hw + parking / 2), 0.3)
                s += rng.uniform(2.5, 6.5)
        # street trees and poles along the curb
        cov = b.coverage
        if sidewalk >= 1.5:
            if cov or rng.random() < (0.75 if st == 0 else 0.5):
                spacing = rng.uniform(6, 10) if cov else rng.uniform(8, 15)
                for s in np.arange(s0 + rng.uniform(1, spacing), s1 - 1, spacing):
                    b.put(tree_template(rng, big=rng.random() < 0.8), s, sign * (curb + 0.9))
            for s in np.arange(s0 + rng.uniform(2, 20 if not cov else 6), s1 - 1,
                               rng.uniform(18, 35) if not cov else rng.uniform(7, 11)):
                if rng.random() < (0.35 if not cov else 0.6):
                    _sign_pole(b, s, sign * (curb + 0.35), side, low=cov)
                else:
                    p = PrimList()
                    hgt = rng.uniform(4.0, 9.0)
                    p.cylinder((0, 0, hgt / 2), rng.uniform(0.06, 0.15), hgt / 2, "pole")
                    b.put(p, s, sign * (curb + 0.35))
            for _ in range(int(rng.poisson(0.6))):  # bins, boxes, benches (other-object -> unlabeled)
                p = PrimList()
                p.box((0, 0, 0.5), (rng.uniform(0.3, 0.9), 0.3, rng.uniform(0.4, 0.6)), 0, "other_object",
                      b.new_instance())
                b.put(p, rng.uniform(s0, s1), sign * (back - 0.4))
        elif rng.random() < 0.5:
            p = PrimList()
            hgt = rng.uniform(5.0, 9.0)
            p.cylinder((0, 0, hgt / 2), rng.uniform(0.08, 0.15), hgt / 2, "pole")
            b.put(p, rng.uniform(s0, s1), sign * (back + 0.6))
        if st == 0 and sidewalk > 0 and rng.random() < 0.15:  # bus shelter / kiosk: other-structure
            p = PrimList()
            p.box((0, 0, 1.25), (rng.uniform(1.2, 2.5), 0.7, 1.25), 0, "other_structure")
            b.put(p, rng.uniform(s0 + 3, max(s1 - 3, s0 + 3.1)), sign * (back - 0.8))
        _background(b, s0, s1, back, side, st)
        # the zone behind the sidewalk
        if st == 0:
            _urban_back(b, s0, s1, back, side, int(lay.beyond[i]))
        elif st == 1:
            _suburban_back(b, s0, s1, back, side, (float(lay.drive0[i]), float(lay.drive1[i])))
        else:
            _green_back(b, s0, s1, back, side)


def _background(b: _Builder, s0: float, s1: float, back: float, side: int, style: int) -> None:
    """Far rows 25-60 m behind the street (tall buildings or woods): real scans have returns out
    to 80 m through gaps between the front buildings and above hedges."""
    rng = b.rng
    sign = 1.0 if side == 0 else -1.0
    s = s0 + rng.uniform(0, 6)
    open_sky = b.flavour == "nuscenes"  # the real nuScenes key frame has ~30 % sky on its upper rings
    while s < s1:
        a = back + rng.uniform(25, 55)
        if open_sky and rng.random() < 0.5:
            s += rng.uniform(10, 30)
            continue
        if rng.random() < (0.65, 0.4, 0.0)[style]:
            length, depth = rng.uniform(12, 35), rng.uniform(10, 20)
            height = rng.uniform(6, 16) if open_sky else rng.uniform(10, 28)
            p = PrimList()
            p.box((0, 0, height / 2 - 0.3), (length / 2, depth / 2, height / 2 + 0.3), 0, "building",
                  refl=float(np.clip(rng.normal(0.42, 0.1), 0.1, 0.8)))
            b.put(p, s + length / 2, sign * (a + depth / 2))
            s += length + rng.uniform(2, 15)
        else:
            for _ in range(int(rng.integers(3, 7))):
                b.put(tree_template(rng), s + rng.uniform(0, 12), sign * (a - 8 + rng.uniform(0, 18)))
            s += rng.uniform(8, 14)


def _sign_pole(b: _Builder, s: float, l: float, side: int, low: bool = False) -> None:
    """A pole with a sign plate on top; ``low``: a 1.5-2.0 m post (the coverage street), whose plate the
    HDL-64E's top ring (+2.6 deg) sees from ~5 m on, where a 3 m sign is seen only from ~30 m."""
    rng = b.rng
    p = PrimList()
    hgt = rng.uniform(2.6, 3.4) if not low else rng.uniform(1.5, 2.0)
    p.cylinder((0, 0, hgt / 2), rng.uniform(0.03, 0.05), hgt / 2, "pole")
    size = rng.uniform(0.3, 0.45)
    p.box((0, 0, hgt - size), (0.02, size, size), 0, "traffic_sign")
    b.put(p, s, l, 0.0)


def _urban_back(b: _Builder, s0: float, s1: float, back: float, side: int, beyond: int) -> None:
    rng = b.rng
    sign = 1.0 if side == 0 else -1.0
    if beyond == cid("parking"):  # a parking lot with rows of cars, building behind
        for s in np.arange(s0 + 2, s1 - 2, 2.7):
            for row, a in enumerate((back + 4.0, back + 10.0)):
                if rng.random() < 0.45:
                    b.put(car_template(rng, "car", b.new_instance()), s, sign * a, np.pi / 2 + rng.normal(0, 0.05))
        setback = 16.0
    else:
        setback = rng.uniform(0.5, 6.0) if not b.coverage else rng.uniform(3.1, 4.0)
        if setback > 3.0 and (b.coverage or rng.random() < 0.4):  # garden fence in front of the buildings
            b.along(s0, s1, back + setback - 1.0, back + setback - 0.94, side, 0, rng.uniform(0.9, 1.6), "fence",
                    seg=10.0)
    s = s0 + rng.uniform(0, 3)
    while s < s1 - 3:
        length = min(rng.uniform(10, 35), s1 - s)
        depth, height = rng.uniform(8, 20), rng.uniform(7, 22)
        a0 = back + setback + rng.uniform(0, 1.5)
        p = PrimList()
        p.box((0, 0, height / 2 - 0.3), (length / 2, depth / 2, height / 2 + 0.3), 0, "building",
              refl=float(np.clip(rng.normal(0.42, 0.1), 0.1, 0.8)))
        b.put(p, s + length / 2, sign * (a0 + depth / 2))
        if rng.random() < 0.2:  # a shed / wall piece: other-structure (-> unlabeled)
            q = PrimList()
            q.box((0, 0, 1.2), (rng.uniform(1, 3), 0.6, 1.2), 0, "other_structure")
            b.put(q, s + rng.uniform(0, length), sign * (a0 - 1.0))
        for _ in range(int(rng.poisson(length / 5))):  # bushes in front of the facade
            q = PrimList()
            r = rng.uniform(0.6, 1.4)
            q.ellipsoid((0, 0, r * 0.8), (r * 1.3, r, r), rng.uniform(0, np.pi), "vegetation")
            b.put(q, s + rng.uniform(0, length), sign * (a0 - r - 0.2))
        gap = rng.uniform(0, 8) if rng.random() < 0.6 else 0.0
        if gap > 2:
            if rng.random() < 0.65:  # fence across the gap, else a tree
                b.along(s + length, s + length + gap, a0, a0 + 0.06, side, 0, rng.uniform(1.0, 2.0), "fence")
            else:
                b.put(tree_template(rng), s + length + gap / 2, sign * (a0 + 2))
        if setback > 2.5 and rng.random() < 0.5:  # front garden hedge
            hh = rng.uniform(0.6, 1.6)
            h0 = back + rng.uniform(1.0, setback - 1.0)
            b.along(s, s + length, h0, h0 + rng.uniform(0.5, 1.1), side, 0, hh, "vegetation", seg=6.0)
        s += length + gap


def _suburban_back(b: _Builder, s0: float, s1: float, back: float, side: int, drive: tuple[float, float]) -> None:
    rng = b.rng
    sign = 1.0 if side == 0 else -1.0
    setback = rng.uniform(6, 14)
    # property line: fence or hedge (with a gap at the driveway), a little behind the sidewalk
    line = rng.random()
    pl = back + rng.uniform(0.5, 3.0)
    pieces = [(s0, drive[0]), (drive[1], s1)] if drive[1] > drive[0] else [(s0, s1)]
    for a, c in pieces:
        if c - a < 1:
            continue
        if line < 0.45:
            b.along(a, c, pl, pl + 0.06, side, 0, rng.uniform(0.8, 1.6), "fence", seg=10.0)
        elif line < 0.52:   # low garden wall: other-structure (-> unlabeled)
            b.along(a, c, pl, pl + 0.25, side, 0, rng.uniform(0.5, 1.0), "other_structure", seg=10.0)
        elif line < 0.9:
            b.along(a, c, pl, pl + rng.uniform(0.6, 1.3), side, 0, rng.uniform(0.6, 1.6), "vegetation", seg=6.0)
    if drive[1] > drive[0] and rng.random() < 0.6:
        b.put(car_template(rng, "car", b.new_instance()), (drive[0] + drive[1]) / 2, sign * (back + setback * 0.6),
              np.pi / 2)
    s = s0 + rng.uniform(0, 5)
    while s < s1 - 5:
        length = min(rng.uniform(8, 14), s1 - s)
        depth, height = rng.uniform(8, 12), rng.uniform(5, 8.5)
        p = PrimList()
        p.box((0, 0, height / 2 - 0.3), (length / 2, depth / 2, height / 2 + 0.3), 0, "building",
              refl=float(np.clip(rng.normal(0.42, 0.1), 0.1, 0.8)))
        b.put(p, s + length / 2, sign * (back + setback + depth / 2))
        for _ in range(int(rng.integers(2, 6))):  # garden trees and bushes
            if rng.random() < 0.7:
                b.put(tree_template(rng, big=rng.random() < 0.6), s + rng.uniform(-2, length + 2),
                      sign * (back + rng.uniform(2.0, max(setback - 1.5, 2.5))))
            else:
                q = PrimList()
                r = rng.uniform(0.6, 1.3)
                q.ellipsoid((0, 0, r * 0.8), (r, r, r * 0.9), 0, "vegetation")
                b.put(q, s + rng.uniform(0, length), sign * (back + rng.uniform(1.5, setback)))
        s += length + rng.uniform(4, 10)
    for _ in range(int((s1 - s0) * 0.25)):  # shrub beds on the lawns
        q = PrimList()
        q.box((0, 0, 0.2), (rng.uniform(1.0, 3.0), rng.uniform(0.5, 1.5), rng.uniform(0.35, 0.7)),
              rng.uniform(-0.3, 0.3), "vegetation")
        b.put(q, rng.uniform(s0, s1), sign * (back + rng.uniform(2.0, max(setback, 2.5))))


def _green_back(b: _Builder, s0: float, s1: float, back: float, side: int) -> None:
    rng = b.rng
    sign = 1.0 if side == 0 else -1.0
    edge = back + rng.uniform(6.0, 12.0)
    n_trees = int((s1 - s0) * rng.uniform(0.4, 0.7))
    for _ in range(n_trees):
        b.put(tree_template(rng, big=rng.random() < 0.5), rng.uniform(s0, s1), sign * (edge + 1 + rng.exponential(8.0)))
    if rng.random() < 0.9:  # a shrub belt along the wood edge hides the trunks behind it
        b.along(s0, s1, edge - 1.5, edge, side, 0, rng.uniform(0.7, 1.5), "vegetation", seg=6.0)
    for _ in range(int((s1 - s0) * 0.3)):   # undergrowth and bushes
        q = PrimList()
        r = rng.uniform(0.5, 1.5)
        q.ellipsoid((0, 0, r * 0.7), (r * 1.3, r, r * 0.9), rng.uniform(0, np.pi), "vegetation")
        b.put(q, rng.uniform(s0, s1), sign * (edge + rng.uniform(-1.0, 10.0)))
    if rng.random() < 0.7:  # fence / guard rail in front of the wood
        b.along(s0, s1, edge - 2.5, edge - 2.44, side, 0, rng.uniform(0.8, 1.4), "fence", seg=10.0)


# Coverage street (``build_scene(coverage=True)``): the parking-lane row cycles through these things.
# Large vehicles come once per cycle: they would otherwise take most of a cropped scan's points.
COVERAGE_ROW = ("car", "bicycle", "person", "truck", "motorcycle", "car", "person", "other_vehicle", "bicycle",
                "motorcycle")


def _coverage_row(b: _Builder, s0: float, s1: float, side: int, l: float) -> None:
    """A parking lane holding a repeating row of every parked thing class of SemanticKITTI.

    With ~1.5 m gaps one cycle of :data:`COVERAGE_ROW` spans ~25 m, so a crop of ~15 m radius around the
    sensor holds most of them on one side or the other (the two sides start at different places)."""
    rng = b.rng
    sign = 1.0 if side == 0 else -1.0
    k = b.row_next.setdefault(side, int(rng.integers(0, len(COVERAGE_ROW))))
    s = s0 + rng.uniform(0.3, 1.5)
    while s < s1 - 1.0:
        cls = COVERAGE_ROW[k % len(COVERAGE_ROW)]
        if cls == "car":
            tpl, half = car_template(rng, "car", b.new_instance()), 2.4
        elif cls in ("truck", "other_vehicle"):
            tpl, half = long_vehicle_template(rng, cls, b.new_instance()), (4.5 if cls == "truck" else 3.0)
        elif cls == "person":
            tpl, half = person_template(rng, "person", b.new_instance()), 0.4
        else:
            tpl, half = parked_two_wheeler(cls, b.new_instance()), 1.1
        if s + 2 * half > s1 + 1.0:
            break   # does not fit: it opens the next block of this side (the cycle goes on there)
        k += 1
        b.row_next[side] = k
        heading = float(rng.normal(0, 0.05)) + (0.0 if rng.random() < 0.5 else np.pi)
        b.put(tpl, s + half, sign * l + float(rng.normal(0, 0.1)), rng.uniform(0, 2 * np.pi) if cls == "person" else heading)
        s += 2 * half + rng.uniform(1.0, 2.0)


def _coverage_riders(b: _Builder) -> None:
    """Things that travel with the ego (moving ids) and so are near it in every frame: a bicyclist 4-7 m
    ahead at the road edge of the ego side, a motorcyclist 3-6 m ahead in the oncoming lane, and a person
    on the ego side's sidewalk within 4 m of it (along the road)."""
    rng, road = b.rng, b.road
    hw, ego_s, n = road.half_width, b.ego.s, len(b.ego.s)
    wobble = np.sin(np.arange(n) / 3.0)
    moving = np.ones(n, bool)
    b.add_dynamic(rider_template(rng, "bicycle", b.new_instance(), b.new_instance()), ego_s + rng.uniform(4, 7)
                  + wobble, np.full(n, -(hw - 0.7)), np.zeros(n), moving)
    b.add_dynamic(rider_template(rng, "motorcycle", b.new_instance(), b.new_instance()), ego_s + rng.uniform(3, 6)
                  - wobble, np.full(n, hw / 2), np.zeros(n), moving)
    lay = road.layouts[1]
    i = np.clip(np.searchsorted(lay.start, ego_s, side="right") - 1, 0, len(lay.start) - 1)
    walk = -(hw + lay.parking[i] + 0.5 * np.maximum(lay.sidewalk[i], 1.0))
    b.add_dynamic(person_template(rng, "person", b.new_instance()), ego_s + rng.uniform(-4, 4, n), walk,
                  rng.uniform(0, 2 * np.pi, n), moving)


def _traffic(b: _Builder) -> None:
    """Moving vehicles: oncoming traffic, a lead car in the ego lane, a car pulling out, a truck/bus."""
    rng, road = b.rng, b.road
    hw = road.half_width
    ego_s = b.ego.s
    s_lo, s_hi = float(road.s[0]) + 30, float(road.s[-1]) - 30
    duration = float(b.times[-1] - b.times[0]) if len(b.times) > 1 else 0.0
    # oncoming lane: a stream of vehicles 40-120 m apart at 7-13 m/s
    speed = rng.uniform(7, 13)
    s = s_hi + speed * duration
    while s > s_lo - 10:
        cls = str(rng.choice(["car", "truck", "bus", "other_vehicle"], p=[0.9, 0.04, 0.03, 0.03]))
        tpl = car_template(rng, cls, b.new_instance()) if cls == "car" else long_vehicle_template(rng, cls, b.new_instance())
        track, moving = b.mover(s, speed, -1)
        b.add_dynamic(tpl, track, np.full_like(track, hw / 2 + rng.normal(0, 0.15)), np.full_like(track, np.pi), moving)
        s -= rng.uniform(40, 120)
    # a lead car in the ego lane, 15-35 m ahead, labelled moving
    if rng.random() < 0.6:
        gap = rng.uniform(15, 35) + 4 * np.sin(np.arange(len(ego_s)) / 13.0)
        b.add_dynamic(car_template(rng, "car", b.new_instance()), ego_s + gap, b.ego.l.copy(),
                      np.zeros_like(ego_s), np.ones_like(ego_s, bool))
    # a car parked ahead in the opposite parking lane/road shoulder that starts moving mid-sequence
    if len(b.times) > 2 and rng.random() < 0.7:
        s0 = float(ego_s[0] + rng.uniform(20, 50))
        t0 = float(b.times[len(b.times) // 2])
        track, moving = b.mover(s0, rng.uniform(2, 5), 1, t_start=t0)
        b.add_dynamic(car_template(rng, "car", b.new_instance()), track, np.full_like(track, hw + 1.2),
                      np.zeros_like(track), moving)


def _rare(b: _Builder) -> None:
    """People, bicyclists, motorcyclists, parked bicycles and motorcycles (a few per 100 m)."""
    rng, road = b.rng, b.road
    hw = road.half_width
    s_lo, s_hi = float(road.s[0]) + 40, float(road.s[-1]) - 40
    length = s_hi - s_lo

    def walk_l(s: float, side: int) -> float:
        """Lateral position on the sidewalk (or 1 m beyond the road edge where there is none)."""
        lay = road.layouts[side]
        i = int(np.clip(np.searchsorted(lay.start, s, side="right") - 1, 0, len(lay.start) - 1))
        curb = hw + lay.parking[i]
        width = lay.sidewalk[i]
        sign = 1.0 if side == 0 else -1.0
        return sign * (curb + (width * 0.6 if width > 0 else 1.0))

    for _ in range(max(1, int(rng.poisson(length / 60)))):  # people: standing or walking
        s = rng.uniform(s_lo, s_hi)
        side = int(rng.integers(0, 2))
        l = walk_l(s, side)
        if not b.far_enough(s, l):
            continue
        walking = rng.random() < 0.5
        for k in range(int(rng.choice([1, 1, 2, 3]))):
            cls = "child" if (k > 0 and rng.random() < 0.3) else "person"
            tpl = person_template(rng, "person" if b.flavour == "semantickitti" else cls, b.new_instance(),
                                  scale=0.65 if cls == "child" else 1.0)
            if walking:
                track, moving = b.mover(s + 0.8 * k, rng.uniform(1.0, 1.5), int(rng.choice([-1, 1])))
                b.add_dynamic(tpl, track, np.full_like(track, l + 0.5 * k), np.zeros_like(track), moving)
            else:
                b.put(tpl, s + 0.7 * k, l + rng.normal(0, 0.3), rng.uniform(0, 2 * np.pi))
    for _ in range(max(1, int(rng.poisson(length / 150)))):  # bicyclists on the road edge
        s = rng.uniform(s_lo, s_hi)
        direction = int(rng.choice([-1, 1]))
        l = -(hw - 0.7) if direction > 0 else (hw - 0.7)
        speed = rng.uniform(3.5, 6.0)
        track, moving = b.mover(s, speed, direction)
        if not b.far_enough(track, l):
            continue
        tpl = rider_template(rng, "bicycle", b.new_instance(), b.new_instance())
        b.add_dynamic(tpl, track, np.full_like(track, l), np.full_like(track, 0 if direction > 0 else np.pi), moving)
    for _ in range(max(1, int(rng.poisson(length / 250)))):  # motorcyclists in the oncoming lane
        s = rng.uniform(s_lo, s_hi)
        speed = rng.uniform(8, 13)
        track, moving = b.mover(s, speed, -1)
        l = hw / 2 + rng.normal(0, 0.3)
        if not b.far_enough(track, l):
            continue
        tpl = rider_template(rng, "motorcycle", b.new_instance(), b.new_instance())
        b.add_dynamic(tpl, track, np.full_like(track, l), np.full_like(track, np.pi), moving)
    for _ in range(int(rng.poisson(length / 100))):  # parked bicycles on sidewalks
        s = rng.uniform(s_lo, s_hi)
        side = int(rng.integers(0, 2))
        l = walk_l(s, side)
        if b.far_enough(s, l):
            b.put(parked_two_wheeler("bicycle", b.new_instance()), s, l + (0.6 if side == 0 else -0.6),
                  rng.uniform(-0.3, 0.3))


def _rare_guaranteed(b: _Builder) -> None:
    """One of each rare class behind the ego's start, so that every street has them in view.

    Behind the start and slower than the ego (or parked), their distance to the ego only grows, so
    the placement is valid for any sequence length; ``rare_far`` streets start them beyond 25 m.
    """
    rng, road = b.rng, b.road
    hw = road.half_width
    s0 = float(b.ego.s[0])
    near = (25.0, 40.0) if b.rare_far else (14.0, 30.0)
    ego_speed = float(np.min(np.diff(b.ego.s) / np.maximum(np.diff(b.times), 1e-6))) if len(b.times) > 1 else 0.0
    for kind in ("person", "bicycle", "motorcycle", "bicyclist", "motorcyclist"):
        for _ in range(10):
            s = s0 - rng.uniform(*near)
            side = int(rng.integers(0, 2))
            sign = 1.0 if side == 0 else -1.0
            if kind in ("person", "bicycle", "motorcycle"):
                l = sign * (hw + rng.uniform(1.0, 2.5))
                if not b.far_enough(s, l):
                    continue
                tpl = person_template(rng, "person", b.new_instance()) if kind == "person" \
                    else parked_two_wheeler(kind, b.new_instance())
                b.put(tpl, s, l, rng.uniform(0, 2 * np.pi) if kind == "person" else rng.uniform(-0.3, 0.3))
                break
            # riders follow the ego lane direction, slower than the ego: the gap never shrinks
            speed = min(rng.uniform(3.0, 6.0), 0.9 * ego_speed) if kind == "bicyclist" else 0.95 * ego_speed
            l = -(hw - 0.7) if kind == "bicyclist" else float(b.ego.l[0])
            track, moving = b.mover(s, speed, 1)
            if not b.far_enough(track, l):
                continue
            tpl = rider_template(rng, "bicycle" if kind == "bicyclist" else "motorcycle", b.new_instance(),
                                 b.new_instance())
            b.add_dynamic(tpl, track, np.full_like(track, l), np.zeros_like(track), moving)
            break


def _nuscenes_extras(b: _Builder) -> None:
    """Barriers, traffic cones, trailers, construction vehicles, animals, racks, debris."""
    rng, road = b.rng, b.road
    hw = road.half_width
    s_lo, s_hi = float(road.s[0]) + 40, float(road.s[-1]) - 40
    length = s_hi - s_lo
    for _ in range(max(1, int(rng.poisson(length / 120)))):  # construction zone on a sidewalk/shoulder
        s = rng.uniform(s_lo, s_hi)
        _construction_zone(b, s, int(rng.integers(0, 2)))
    for _ in range(int(rng.poisson(length / 200))):
        side = int(rng.integers(0, 2))
        sign = 1.0 if side == 0 else -1.0
        tpl = long_vehicle_template(rng, "trailer", b.new_instance())
        b.put(tpl, rng.uniform(s_lo, s_hi), sign * (hw + 1.4), 0.0)
    for _ in range(int(rng.poisson(length / 250))):
        p = PrimList()
        p.ellipsoid((0, 0, 0.45), (0.45, 0.15, 0.25), 0, "animal", b.new_instance())
        side = int(rng.integers(0, 2))
        b.put(p, rng.uniform(s_lo, s_hi), (1 if side == 0 else -1) * (hw + 2.5), rng.uniform(0, 6.3))


def _construction_zone(b: _Builder, s: float, side: int) -> None:
    rng = b.rng
    hw = b.road.half_width
    sign = 1.0 if side == 0 else -1.0
    for k in range(int(rng.integers(3, 7))):  # a row of barriers along the road edge
        p = PrimList()
        p.box((0, 0, 0.45), (1.0, 0.22, 0.45), 0, "barrier", b.new_instance())
        b.put(p, s + 2.1 * k, sign * (hw + 0.4))
    for k in range(int(rng.integers(3, 6))):
        p = PrimList()
        p.cylinder((0, 0, 0.35), 0.14, 0.35, "traffic_cone", b.new_instance())
        b.put(p, s - 2 - 2.5 * k, sign * (hw - 0.3))
    b.put(long_vehicle_template(rng, "construction_vehicle", b.new_instance()), s + 6, sign * (hw + 4.5), 0.0)
    b.put(person_template(rng, "construction_worker", b.new_instance()), s + 2, sign * (hw + 2.0), 1.0)
    p = PrimList()
    p.box((0, 0, 0.15), (0.3, 0.2, 0.15), 0, "debris", b.new_instance())
    b.put(p, s + 3, sign * (hw + 1.5))


def _showcase(b: _Builder) -> None:
    """One object of every nuScenes thing class near the first frame (so a short scene covers all)."""
    rng = b.rng
    hw = b.road.half_width
    s0 = b.showcase_s[0]
    _construction_zone(b, s0 + 12, 0)                                         # barrier, cone, construction
    b.put(long_vehicle_template(rng, "bus", b.new_instance()), s0 + 32, hw + 1.4, np.pi)
    b.put(long_vehicle_template(rng, "trailer", b.new_instance()), s0 - 18, hw + 1.4, np.pi)
    b.put(long_vehicle_template(rng, "truck", b.new_instance()), s0 + 26, -(hw + 1.4), 0.0)
    b.put(car_template(rng, "car", b.new_instance()), s0 - 9, -(hw + 1.2), 0.0)
    b.put(parked_two_wheeler("bicycle", b.new_instance()), s0 + 7, -(hw + 1.0), 0.2)
    b.put(parked_two_wheeler("motorcycle", b.new_instance()), s0 + 10, -(hw + 1.0), 0.2)
    b.put(person_template(rng, "person", b.new_instance()), s0 + 5, -(hw + 2.2), 0.0)
    b.put(person_template(rng, "police_officer", b.new_instance()), s0 - 6, hw + 2.4, 0.0)
    p = PrimList()
    p.ellipsoid((0, 0, 0.45), (0.45, 0.15, 0.25), 0, "animal", b.new_instance())
    b.put(p, s0 + 4, hw + 2.8, 1.0)
    q = PrimList()
    q.box((0, 0, 0.45), (1.0, 0.25, 0.45), 0, "bicycle_rack", b.new_instance())
    b.put(q, s0 - 3, -(hw + 2.5), 0.0)
    r = PrimList()
    r.box((0, 0, 1.2), (1.5, 0.8, 1.2), 0, "other_structure")
    b.put(r, s0 + 15, -(hw + 3.5), 0.0)
