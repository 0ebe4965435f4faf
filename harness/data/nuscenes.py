"""nuScenes-lidarseg reader built on nuscenes-devkit (its table joins are not re-written here).

* Key frames only: ``sample['data']['LIDAR_TOP']`` sample_data records (2 Hz).
* ``samples/LIDAR_TOP/*.pcd.bin``: float32 (N, 5) ``x, y, z`` [m, LIDAR_TOP sensor frame],
  intensity (0-255), ring index (devkit ``LidarPointCloud.from_file``; Cylinder3D ``reshape(-1, 5)``).
* ``lidarseg/<version>/<sd_token>_lidarseg.bin``: uint8 fine-class index 0-31 per point (the lidarseg
  ``category.json`` ``index``), mapped 32 -> 16 through the shipped ``nuscenes.yaml`` (equal to devkit
  ``LidarsegClassMapper``). Coarse 0 is ignored.
* Splits: devkit ``create_splits_scenes`` (train 700 / val 150 / test 150 scenes; mini_train / mini_val
  for v1.0-mini), samples collected with devkit ``get_samples_in_eval_set``.

nuscenes-devkit is an optional dependency (``pip install 'pvkd-harness[nuscenes]'``), imported lazily.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.labelmap import load_label_map
from harness.data.semantickitti import check_coordinates
from harness.errors import InputError

NUM_POINT_COLUMNS = 5


def _devkit():
    try:
        from nuscenes import NuScenes
        from nuscenes.eval.lidarseg.utils import get_samples_in_eval_set
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("nuScenes support needs nuscenes-devkit: pip install 'pvkd-harness[nuscenes]'") from err
    return NuScenes, get_samples_in_eval_set


def read_nuscenes_points(path: str | Path) -> np.ndarray:
    """Read a ``.pcd.bin`` as (N, 5) float32; errors name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "point file not found", "check the nuScenes dataroot (samples/LIDAR_TOP/)")
    size = path.stat().st_size
    if size == 0:
        raise InputError(path, "point file is empty (0 points)", "re-copy the file")
    if size % (4 * NUM_POINT_COLUMNS):
        raise InputError(path, f"size {size} bytes is not a multiple of 20 (5 float32 per point)", "re-copy the file")
    points = np.fromfile(path, dtype="<f4").reshape(-1, NUM_POINT_COLUMNS)
    if not np.isfinite(points).all():
        raise InputError(path, "points have NaN/inf values", "re-copy the file")
    check_coordinates(points, path)
    return points


def read_lidarseg(path: str | Path, num_points: int | None = None) -> np.ndarray:
    """Read a ``_lidarseg.bin`` as (N,) uint8 fine indices; check the count against the scan."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "lidarseg label file not found", "install the nuScenes-lidarseg archive into the dataroot")
    labels = np.fromfile(path, dtype=np.uint8)
    if num_points is not None and labels.shape[0] != num_points:
        raise InputError(path, f"has {labels.shape[0]} labels but the scan has {num_points} points",
                         "the label file must belong to the key frame with this sample_data token")
    return labels


@dataclass(frozen=True)
class NuScenesFrame:
    sample_token: str
    sd_token: str
    scan_path: Path
    label_path: Path | None


@dataclass
class NuScenesScan:
    """``points`` (N, 5) float32; ``labels`` (N,) int64 coarse ids 0-16 or None; ``fine`` (N,) uint8 or None."""

    ref: NuScenesFrame
    points: np.ndarray
    labels: np.ndarray | None
    fine: np.ndarray | None


def _broken_table(folder: Path) -> Path:
    """The first ``*.json`` table in ``folder`` that is not a JSON list of records (else the folder itself)."""
    for table in sorted(folder.glob("*.json")):
        try:
            data = json.loads(table.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return table
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            return table
    return folder


def eval_set_name(version: str, split: str) -> str:
    """devkit split name: ``train``/``val`` on v1.0-mini mean ``mini_train``/``mini_val``."""
    if version.endswith("mini") and split in ("train", "val"):
        return f"mini_{split}"
    return split


class NuScenesLidarSeg:
    """Key frames of one split with their lidarseg labels, indexed through nuscenes-devkit."""

    def __init__(self, dataroot: str | Path, version: str = "v1.0-trainval", split: str = "train") -> None:
        NuScenes, get_samples_in_eval_set = _devkit()
        self.dataroot = Path(dataroot)
        if not (self.dataroot / version).is_dir():
            raise InputError(self.dataroot / version, "nuScenes table folder not found",
                             f"point --root at the nuScenes dataroot that contains {version}/*.json")
        try:
            self.nusc = NuScenes(version=version, dataroot=str(self.dataroot), verbose=False)
        except (ValueError, KeyError, TypeError, AssertionError) as err:  # json.JSONDecodeError is a ValueError
            raise InputError(_broken_table(self.dataroot / version), f"the devkit cannot read the nuScenes tables "
                             f"({err.__class__.__name__}: {str(err)[:200]})",
                             "re-copy the table folder from the nuScenes archive") from None
        self.version = version
        self.split = eval_set_name(version, split)
        self.label_map = load_label_map("nuscenes")
        has_lidarseg = len(getattr(self.nusc, "lidarseg", [])) > 0
        self.frames: list[NuScenesFrame] = []
        for sample_token in get_samples_in_eval_set(self.nusc, self.split):
            sd_token = self.nusc.get("sample", sample_token)["data"]["LIDAR_TOP"]
            scan_path = self.dataroot / self.nusc.get("sample_data", sd_token)["filename"]
            label_path = self.dataroot / self.nusc.get("lidarseg", sd_token)["filename"] if has_lidarseg else None
            self.frames.append(NuScenesFrame(sample_token, sd_token, scan_path, label_path))

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> NuScenesScan:
        ref = self.frames[index]
        points = read_nuscenes_points(ref.scan_path)
        if ref.label_path is None:
            return NuScenesScan(ref, points, None, None)
        fine = read_lidarseg(ref.label_path, num_points=points.shape[0])
        return NuScenesScan(ref, points, self.label_map.to_learning(fine, ref.label_path), fine)
