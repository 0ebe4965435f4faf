"""SemanticKITTI reader for the official on-disk layout.

Layout (PRBonn/semantic-kitti-api README)::

    ROOT/sequences/NN/velodyne/XXXXXX.bin    float32 (N, 4): x, y, z [m, LiDAR frame], remission
    ROOT/sequences/NN/labels/XXXXXX.label    uint32 (N,): semantic = low 16 bits, instance = high 16
    ROOT/sequences/NN/{calib.txt, poses.txt, times.txt}

Poses in ``poses.txt`` are cam0-frame poses relative to the first scan; the LiDAR-frame pose is
``T_i = inv(Tr) @ P_i @ Tr`` with ``Tr`` (Velodyne -> cam0) from ``calib.txt`` (semantic-kitti-api
``generate_sequential.py``; Codes-for-PVKD ``dataloader/pc_dataset.py`` ``parse_poses``).

Splits follow ``semantic-kitti.yaml``: train 00-07 + 09-10, valid 08, test 11-21 (no labels).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from harness.data.labelmap import LabelMap, load_label_map, semantickitti_splits
from harness.errors import InputError

SPLIT_ALIASES = {"train": "train", "val": "valid", "valid": "valid", "test": "test"}


# --------------------------------------------------------------------------- raw file readers
def read_points(path: str | Path) -> np.ndarray:
    """Read a ``velodyne/*.bin`` scan as (N, 4) float32 ``x, y, z, remission`` (metres).

    Raises :class:`InputError` for a missing file, a size that is not a multiple of 16 bytes
    (truncated write), an empty scan or non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "scan file not found", "check the dataset root and sequence/frame ids")
    size = path.stat().st_size
    if size % 16:
        raise InputError(path, f"size {size} bytes is not a multiple of 16 (4 float32 per point): truncated or not a KITTI .bin",
                         "re-copy the file from the original dataset")
    if size == 0:
        raise InputError(path, "scan is empty (0 points)", "remove the frame or re-copy it")
    points = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    if not np.isfinite(points).all():
        bad = int((~np.isfinite(points)).any(axis=1).sum())
        raise InputError(path, f"{bad} point(s) have NaN/inf values", "re-copy the file; a valid scan has only finite values")
    check_coordinates(points, path)
    return points


# No automotive LiDAR returns points farther than a few hundred metres; beyond this the voxelisers' integer grid
# casts overflow (a 1e30 m point collapses a whole scan into a couple of voxels), so such a scan is bad input.
MAX_ABS_COORDINATE_M = 1000.0


def check_coordinates(points: np.ndarray, path: str | Path) -> None:
    """x, y, z (metres) must lie within ±:data:`MAX_ABS_COORDINATE_M`."""
    far = np.abs(points[:, :3]) > MAX_ABS_COORDINATE_M
    if far.any():
        rows = far.any(axis=1)
        worst = float(np.abs(points[:, :3]).max())
        raise InputError(path, f"{int(rows.sum())} point(s) have a coordinate beyond {MAX_ABS_COORDINATE_M:g} m "
                         f"(largest |value| {worst:.3g}): not a LiDAR scan in metres",
                         "re-copy the file; coordinates are float32 metres in the sensor frame")


def read_label_file(path: str | Path, num_points: int | None = None) -> np.ndarray:
    """Read a ``.label`` file as (N,) uint32; check it has ``num_points`` entries when given."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "label file not found", "check the dataset root (the test split 11-21 has no labels)")
    size = path.stat().st_size
    if size % 4:
        raise InputError(path, f"size {size} bytes is not a multiple of 4 (uint32 per point)", "re-copy the file")
    labels = np.fromfile(path, dtype="<u4")
    if num_points is not None and labels.shape[0] != num_points:
        raise InputError(path, f"has {labels.shape[0]} labels but the scan has {num_points} points",
                         "the label file must belong to the scan with the same sequence and frame id")
    return labels


def split_label(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split uint32 labels into (semantic = low 16 bits, instance = high 16 bits), both int64."""
    raw = raw.astype(np.uint32, copy=False)
    return (raw & 0xFFFF).astype(np.int64), (raw >> 16).astype(np.int64)


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file of the dataset; undecodable bytes are an error naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(path, f"{what} is not text (undecodable byte at offset {err.start})",
                         f"use the official {what} from the dataset") from None


def _parse_float_rows(path: Path, what: str) -> list[list[float]]:
    rows = []
    for lineno, line in enumerate(read_text_file(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append([float(v) for v in line.split()])
        except ValueError:
            raise InputError(path, f"line {lineno} of {what} is not numeric: {line[:60]!r}",
                             "use the official file from the dataset (12 numbers per line)") from None
    return rows


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``calib.txt``: ``P0..P3`` and ``Tr`` as 4x4 homogeneous matrices (``Tr``: Velodyne -> cam0)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "calib.txt not found", "copy calib.txt from the KITTI odometry calibration archive")
    calib = {}
    for lineno, line in enumerate(read_text_file(path, "calib.txt").splitlines(), 1):
        if ":" not in line:
            continue
        key, values = line.split(":", 1)
        try:
            nums = [float(v) for v in values.split()]
        except ValueError:
            raise InputError(path, f"line {lineno} ({key}) is not numeric", "use the official calib.txt") from None
        if len(nums) != 12:
            raise InputError(path, f"line {lineno} ({key}) has {len(nums)} numbers, expected 12", "use the official calib.txt")
        mat = np.eye(4)
        mat[:3, :4] = np.array(nums).reshape(3, 4)
        calib[key.strip()] = mat
    if "Tr" not in calib:
        raise InputError(path, "no 'Tr:' line (Velodyne -> cam0 transform)", "use the official calib.txt")
    return calib


def read_poses(path: str | Path, calib_tr: np.ndarray, min_count: int | None = None) -> np.ndarray:
    """Read ``poses.txt`` and return LiDAR-frame poses (M, 4, 4): ``inv(Tr) @ P_i @ Tr``.

    Each line holds 12 numbers, a row-major 3x4 cam0 pose relative to the sequence's first scan.
    ``min_count`` (the highest frame id + 1 present on disk) is checked when given: every scan needs
    its pose, while a subset of a sequence may have fewer scans than poses.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "poses.txt not found", "copy the SemanticKITTI poses.txt into the sequence folder")
    rows = _parse_float_rows(path, "poses.txt")
    for i, row in enumerate(rows, 1):
        if len(row) != 12:
            raise InputError(path, f"line {i} has {len(row)} numbers, expected 12", "use the official poses.txt")
    if min_count is not None and len(rows) < min_count:
        raise InputError(path, f"has {len(rows)} poses but frame ids go up to {min_count - 1}",
                         "poses.txt must have one line per scan of the sequence")
    poses_cam = np.tile(np.eye(4), (len(rows), 1, 1))
    if rows:
        poses_cam[:, :3, :4] = np.asarray(rows).reshape(-1, 3, 4)
    tr_inv = np.linalg.inv(calib_tr)
    return tr_inv @ poses_cam @ calib_tr


def read_times(path: str | Path) -> np.ndarray:
    """Read ``times.txt``: seconds since the start of the sequence, one per scan."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "times.txt not found", "copy times.txt from the KITTI odometry archive")
    rows = _parse_float_rows(path, "times.txt")
    return np.array([r[0] for r in rows], dtype=np.float64)


# --------------------------------------------------------------------------- dataset index
@dataclass(frozen=True)
class FrameRef:
    """One scan on disk. ``label_path`` is None where the split has no labels (test)."""

    sequence: str
    frame: str
    scan_path: Path
    label_path: Path | None


@dataclass
class Scan:
    """A loaded scan.

    ``points`` (N, 4) float32; ``labels`` (N,) int64 learning ids or None; ``instance`` (N,) int64
    (0 for stuff) or None; ``raw_semantic`` (N,) int64 raw ids or None.
    """

    ref: FrameRef
    points: np.ndarray
    labels: np.ndarray | None
    instance: np.ndarray | None
    raw_semantic: np.ndarray | None


def resolve_sequences(split: str | None = None, sequences: Iterable[int | str] | None = None) -> list[str]:
    """Sequence folder names ("08") for a split name or an explicit list."""
    if sequences is not None:
        try:
            return [f"{int(s):02d}" for s in sequences]
        except (TypeError, ValueError):
            raise InputError("--sequences", f"{list(sequences)} are not sequence numbers", "e.g. --sequences 08") from None
    if split is None:
        raise InputError("--split/--sequences", "no sequences chosen", "pass --split val or --sequences 08 ...")
    if split not in SPLIT_ALIASES:
        raise InputError("--split", f"unknown split {split!r}", f"use one of {', '.join(sorted(SPLIT_ALIASES))}")
    return [f"{s:02d}" for s in semantickitti_splits()[SPLIT_ALIASES[split]]]


class SemanticKITTI:
    """Index of SemanticKITTI frames under ``root`` for a split or a list of sequences.

    >>> ds = SemanticKITTI("/data/semantickitti", split="val")   # doctest: +SKIP
    >>> scan = ds[0]; scan.points.shape, scan.labels.shape       # doctest: +SKIP
    """

    def __init__(self, root: str | Path, split: str | None = None, sequences: Sequence[int | str] | None = None,
                 label_map: str | LabelMap = "semantickitti", require_labels: bool | None = None) -> None:
        self.root = Path(root)
        self.label_map = load_label_map(label_map) if isinstance(label_map, str) else label_map
        self.sequences = resolve_sequences(split, sequences)
        # the test split has no labels; anything else must have them unless told otherwise
        if require_labels is None:
            require_labels = split is not None and SPLIT_ALIASES.get(split) != "test"
        self.frames: list[FrameRef] = []
        for seq in self.sequences:
            seq_dir = self.root / "sequences" / seq
            velo = seq_dir / "velodyne"
            if not velo.is_dir():
                raise InputError(seq_dir, "sequence folder (with velodyne/) not found",
                                 f"check the dataset root {self.root} (expected ROOT/sequences/{seq}/velodyne/*.bin)")
            label_dir = seq_dir / "labels"
            for scan_path in sorted(velo.glob("*.bin")):
                label_path = label_dir / (scan_path.stem + ".label")
                has_label = label_path.is_file()
                if require_labels and not has_label:
                    raise InputError(label_path, "label file missing for a labelled split",
                                     "copy the SemanticKITTI labels (data_odometry_labels) into the sequence folder")
                self.frames.append(FrameRef(seq, scan_path.stem, scan_path, label_path if has_label else None))

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Scan:
        return self.load(self.frames[index])

    def load(self, ref: FrameRef) -> Scan:
        points = read_points(ref.scan_path)
        if ref.label_path is None:
            return Scan(ref, points, None, None, None)
        raw = read_label_file(ref.label_path, num_points=points.shape[0])
        semantic, instance = split_label(raw)
        labels = self.label_map.to_learning(semantic, ref.label_path)
        return Scan(ref, points, labels, instance, semantic)

    def poses(self, sequence: str | int) -> np.ndarray:
        """LiDAR-frame poses (M, 4, 4) of a sequence, checked against its scan count."""
        seq = f"{int(sequence):02d}"
        seq_dir = self.root / "sequences" / seq
        calib = read_calib(seq_dir / "calib.txt")
        frame_ids = [int(f.frame) for f in self.frames if f.sequence == seq]
        return read_poses(seq_dir / "poses.txt", calib["Tr"], min_count=max(frame_ids) + 1 if frame_ids else None)
