"""M2SKD hard-class instance fusion: add the previous scans' hard-class instances to the current scan.

M2SKD (Qiu, Jiang, Zhang, Xue, Pu, arXiv 2304.14800, Fig. 1) trains its multi-scan teacher on a scan to which
only the instances of pre-defined hard classes (learning ids 2-8, not car) of the previous ``num_past`` = 4
scans have been added. Readings: which scans and classes [docs/readings.md#m2skd-fusion]; the alignment
(``align="pose"``, default, or the authors' ``"centroid"`` offset), instance matching, and where this module
differs from the authors' loader, with measured gaps on real scans [docs/readings.md#m2skd-fusion-align].

Output layout (:class:`FusedScan`): the first ``N = num_original`` rows are the current scan exactly as
:meth:`SemanticKITTI.load` returns it (``points[:N]`` bit-identical), followed by the fused points ordered by
frame (t-1 first) and, within a frame, in scan order. Instance ids are kept as stored (stable over a sequence),
so a fused point's ``instance`` equals that of the current-frame instance it belongs to.

Example::

    ds = SemanticKITTI(root, split="train")
    fused = fuse_hard_instances(ds, index=10, num_past=4, align="centroid")
    fused.points[:fused.num_original]        # the single scan, unchanged
    fused.points[fused.num_original:]        # hard-class instance points of frames t-1 .. t-4
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from harness.data.semantickitti import FrameRef, SemanticKITTI
from harness.errors import InputError

__all__ = ["ALIGN_MODES", "HARD_CLASSES_SEMANTICKITTI", "FusedScan", "fuse_hard_instances", "sequence_poses"]

#: SemanticKITTI learning ids of M2SKD's hard classes [V]: bicycle 2, motorcycle 3, truck 4,
#: other-vehicle 5, person 6, bicyclist 7, motorcyclist 8 -- the thing classes without car
#: (skyshoumeng/M2SKD ``network/segmentator_3d_asymm_spconv.py`` ``thing_label = [2,3,4,5,6,7,8]``;
#: ``dataloader/pc_dataset.py`` skips label 1 when fusing). Identical to the list in the brief. Whether
#: the paper adds pole / traffic-sign is unknown (docs/readings.md#m2skd-fusion); the repo uses those only for copy-paste.
HARD_CLASSES_SEMANTICKITTI: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)

ALIGN_MODES = ("pose", "centroid")

_INSTANCE_BITS = 16  # instance ids are the upper 16 bits of a .label entry, so < 2**16


@dataclass
class FusedScan:
    """A scan with the previous frames' hard-class instance points appended.

    Attributes:
        points: (N + F, 4) float32 ``x, y, z, remission`` in the current LiDAR frame; rows ``[:N]`` are
            the current scan unchanged.
        labels: (N + F,) int64 learning ids (a fused point keeps its instance's label).
        instance: (N + F,) int64 SemanticKITTI instance ids (0: no instance), stable over the sequence.
        num_original: N, the current scan's point count.
        source_frame: (N + F,) int64 frame number each point comes from (the current frame for ``[:N]``).
        ref: the current scan's :class:`FrameRef`.
        fused_frames: frame numbers that contributed at least one point, nearest first.
    """

    points: np.ndarray
    labels: np.ndarray
    instance: np.ndarray
    num_original: int
    source_frame: np.ndarray
    ref: FrameRef
    fused_frames: tuple[int, ...] = field(default_factory=tuple)

    @property
    def num_fused(self) -> int:
        """F, the number of appended points."""
        return int(self.points.shape[0] - self.num_original)


# ------------------------------------------------------------------------------------ per-dataset cache
@dataclass
class _SequenceIndex:
    frame_rows: dict[tuple[str, int], int]           # (sequence, frame number) -> row of dataset.frames
    poses: dict[str, np.ndarray] = field(default_factory=dict)


_CACHE: "weakref.WeakKeyDictionary[SemanticKITTI, _SequenceIndex]" = weakref.WeakKeyDictionary()


def _index(dataset: SemanticKITTI) -> _SequenceIndex:
    entry = _CACHE.get(dataset)
    if entry is None or len(entry.frame_rows) != len(dataset.frames):
        rows = {(ref.sequence, int(ref.frame)): i for i, ref in enumerate(dataset.frames)}
        entry = _SequenceIndex(rows)
        _CACHE[dataset] = entry
    return entry


def sequence_poses(dataset: SemanticKITTI, sequence: str | int) -> np.ndarray:
    """LiDAR-frame poses (M, 4, 4) of ``sequence``, read once per dataset object and sequence.

    Raises :class:`InputError` naming ``poses.txt`` (or ``calib.txt``) when it is missing, has a
    non-numeric line, a line without 12 numbers, or fewer lines than the sequence has frames
    (:func:`harness.data.semantickitti.read_poses`).
    """
    seq = f"{int(sequence):02d}"
    entry = _index(dataset)
    if seq not in entry.poses:
        entry.poses[seq] = dataset.poses(seq)
    return entry.poses[seq]


# ------------------------------------------------------------------------------------ fusion
def _keys(labels: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """(label, instance) -> one int64 key."""
    return (labels.astype(np.int64) << _INSTANCE_BITS) | instance.astype(np.int64)


def _group_centroids(xyz: np.ndarray, keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(len(table), 3) float64 centroid of the rows of ``xyz`` whose key is ``table[j]`` (keys ⊆ table)."""
    pos = np.searchsorted(table, keys)
    counts = np.bincount(pos, minlength=table.size).astype(np.float64)
    sums = np.stack([np.bincount(pos, weights=xyz[:, d], minlength=table.size) for d in range(3)], axis=1)
    return sums / np.maximum(counts, 1.0)[:, None]


def fuse_hard_instances(dataset: SemanticKITTI, index: int, num_past: int = 4,
                        hard_classes: Sequence[int] = HARD_CLASSES_SEMANTICKITTI,
                        align: str = "pose") -> FusedScan:
    """The current scan plus the hard-class instances of the ``num_past`` previous scans of its sequence.

    Args:
        dataset: a labelled :class:`SemanticKITTI` reader (its poses are needed for ``align="pose"``).
        index: row of ``dataset.frames`` (the current scan, frame t).
        num_past: k, previous frames t-1 ... t-k to take instances from (authors: 4 [V]); frames that
            do not exist in ``dataset`` or have no labels are skipped; 0 returns the scan alone.
        hard_classes: learning ids whose instances are fused (default M2SKD's 2-8 [V]).
        align: ``"pose"`` -- ``inv(T_t) @ T_past`` with the real poses [D]; ``"centroid"`` -- translate
            each past instance onto the centroid of its frame-t points, no pose (authors' loader [V]).

    Returns:
        :class:`FusedScan` (see the module docstring for the layout).

    Raises:
        InputError: the current scan has no labels, or (``align="pose"``) the sequence's
            ``poses.txt`` / ``calib.txt`` is missing or malformed (the message names the file).
        ValueError: unknown ``align`` or negative ``num_past``.
    """
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {list(ALIGN_MODES)}, got {align!r}")
    if int(num_past) < 0:
        raise ValueError(f"num_past must be >= 0, got {num_past}")
    ref = dataset.frames[index]
    cur = dataset.load(ref)
    if cur.labels is None:
        raise InputError(ref.scan_path, "hard-class instance fusion needs the scan's labels (instance ids), "
                         "but it has no .label file", "fuse only labelled frames (train / val), or set data.fusion_frames=0")
    frame_t = int(ref.frame)
    n = cur.points.shape[0]
    hard = np.asarray(sorted(set(int(c) for c in hard_classes)), dtype=np.int64)

    parts_pts, parts_lab, parts_inst, parts_src, used = [], [], [], [], []
    cur_mask = np.isin(cur.labels, hard) & (cur.instance > 0)
    if num_past and cur_mask.any():
        cur_keys_all = _keys(cur.labels[cur_mask], cur.instance[cur_mask])
        table = np.unique(cur_keys_all)                       # the current frame's hard instances
        rows = _index(dataset).frame_rows
        cur_centroid = None
        pose_t = None
        for offset in range(1, int(num_past) + 1):
            frame = frame_t - offset
            if frame < 0:
                break
            row = rows.get((ref.sequence, frame))
            if row is None or dataset.frames[row].label_path is None:
                continue
            past = dataset.load(dataset.frames[row])
            mask = np.isin(past.labels, hard) & (past.instance > 0)
            if not mask.any():
                continue
            keys = _keys(past.labels[mask], past.instance[mask])
            present = np.isin(keys, table)
            if not present.any():
                continue
            sel = np.flatnonzero(mask)[present]
            keys = keys[present]
            pts = past.points[sel].copy()
            xyz = pts[:, :3].astype(np.float64)
            if align == "pose":
                poses = sequence_poses(dataset, ref.sequence)
                if pose_t is None:
                    pose_t = np.linalg.inv(poses[frame_t])
                rel = pose_t @ poses[frame]
                xyz = xyz @ rel[:3, :3].T + rel[:3, 3]
            else:
                if cur_centroid is None:
                    cur_centroid = _group_centroids(cur.points[cur_mask, :3].astype(np.float64), cur_keys_all, table)
                past_centroid = _group_centroids(xyz, keys, table)
                xyz = xyz + (cur_centroid - past_centroid)[np.searchsorted(table, keys)]
            pts[:, :3] = xyz.astype(np.float32)
            parts_pts.append(pts)
            parts_lab.append(past.labels[sel])
            parts_inst.append(past.instance[sel])
            parts_src.append(np.full(sel.size, frame, dtype=np.int64))
            used.append(frame)

    points = np.concatenate([cur.points.astype(np.float32, copy=False)] + parts_pts, axis=0)
    labels = np.concatenate([cur.labels.astype(np.int64, copy=False)] + parts_lab)
    instance = np.concatenate([cur.instance.astype(np.int64, copy=False)] + parts_inst)
    source = np.concatenate([np.full(n, frame_t, dtype=np.int64)] + parts_src)
    return FusedScan(points, labels, instance, n, source, ref, tuple(used))
