"""Evaluate prediction files against ground truth: the back-end of ``harness evaluate``.

SemanticKITTI predictions use the official submission layout
``PRED_DIR/sequences/NN/predictions/XXXXXX.label`` (uint32, *raw* label ids, as semantic-kitti-api
``evaluate_semantics.py`` expects). nuScenes predictions use the devkit layout
``PRED_DIR/lidarseg/<eval_set>/<sd_token>_lidarseg.bin`` (uint8 coarse ids 1..16).

The result holds overall scores, per-distance scores in both bin modes, and the confusion matrices,
all derived from counts (:mod:`harness.evaluate.confusion`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from harness.data.datasets import DatasetSpec, dataset_spec
from harness.data.labelmap import LabelMap, load_label_map
from harness.errors import InputError
from harness.evaluate.confusion import confusion_counts, sum_over_ranks
from harness.evaluate.distance import DistanceBins
from harness.evaluate.metrics import frequency_weighted_iou, iou_per_class, mean_iou, scores

SCHEMA_VERSION = 1


@dataclass
class Accumulator:
    """Overall and per-distance-bin confusion counts for one evaluation."""

    label_map: LabelMap
    convention: str
    distance_modes: tuple[str, ...] = ("harness", "official")
    counts: np.ndarray = field(init=False)
    by_distance: dict[str, np.ndarray] = field(init=False)
    num_scans: int = 0
    num_points: int = 0

    def __post_init__(self) -> None:
        c = self.label_map.num_classes
        self.counts = np.zeros((c, c), dtype=np.int64)
        self.bins = {m: DistanceBins.make(m) for m in self.distance_modes}
        self.by_distance = {m: np.zeros((len(b.bins), c, c), dtype=np.int64) for m, b in self.bins.items()}

    def add(self, xyz: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> None:
        c = self.label_map.num_classes
        self.counts += confusion_counts(gt, pred, c)
        for mode, bins in self.bins.items():
            self.by_distance[mode] += confusion_counts(gt, pred, c, bins.assign(xyz), len(bins.bins))
        self.num_scans += 1
        self.num_points += int(gt.shape[0])

    def all_reduce(self) -> "Accumulator":
        """Sum every count (overall, per distance bin, scans, points) over the DDP ranks."""
        self.counts = sum_over_ranks(self.counts)
        self.by_distance = {mode: sum_over_ranks(arr) for mode, arr in self.by_distance.items()}
        self.num_scans, self.num_points = (int(v) for v in sum_over_ranks(np.array([self.num_scans, self.num_points])))
        return self

    def result(self) -> dict:
        names = self.label_map.class_names
        out = {"schema_version": SCHEMA_VERSION, "dataset": self.label_map.name, **scores(self.counts, self.convention, names)}
        out["num_scans"] = self.num_scans
        out["num_points"] = self.num_points
        out["per_distance"] = {}
        for mode, bins in self.bins.items():
            rows = []
            for (lo, hi), label, conf in zip(bins.bins, bins.labels, self.by_distance[mode]):
                iou = iou_per_class(conf, self.convention)
                gt_counts = np.delete(conf.sum(axis=1), 0)
                # NaN where a class has neither GT nor prediction in the bin, for the nanmean variant
                union_empty = (np.delete(conf.sum(axis=1), 0) + np.delete(conf.sum(axis=0), 0)) == 0
                iou_nan = np.where(union_empty, np.nan, iou)
                evaluated = evaluated_points(conf)
                rows.append({
                    "bin": label, "lo_m": lo, "hi_m": None if not np.isfinite(hi) else hi,
                    "num_points": int(conf.sum()),
                    "num_evaluated": evaluated,
                    # "no data" (JSON null), never 0: a bin without an evaluated point has no score
                    "miou": mean_iou(iou, self.convention) if evaluated else None,
                    "miou_nanmean": mean_iou(iou_nan, "nuscenes") if evaluated else None,
                    "iou_per_class": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names[1:], iou_nan)},
                    "gt_points_per_class": {n: int(v) for n, v in zip(names[1:], gt_counts)},
                })
            out["per_distance"][mode] = {"open_intervals": bins.open_intervals, "range": bins.range_kind, "bins": rows}
        out["confusion_matrix"] = {"layout": "counts[gt][pred]", "class_names": list(names), "counts": self.counts.tolist()}
        return out


def evaluated_points(conf: np.ndarray, ignore: int = 0) -> int:
    """Points of a (C, C) ``counts[gt][pred]`` matrix that any convention scores: ground truth not ``ignore``.

    A distance bin with none has no mIoU ("no data": ``None`` in JSON, "—" in tables, a gap in figures). The
    semantic-kitti-api prints 0 for such a bin (every IoU is 0 / (0 + 1e-15)); that 0 is not a measurement."""
    conf = np.asarray(conf)
    return int(conf.sum() - conf[ignore, :].sum())


def accumulate(triples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], dataset: str | DatasetSpec) -> Accumulator:
    """The evaluation loop shared by ``harness evaluate``, ``harness predict`` and ``Trainer.evaluate``.

    Args:
        triples: per scan ``(xyz (N, 3) [m], ground-truth learning ids (N,), predicted learning ids (N,))``.
        dataset: its description (label map, IoU convention, prediction clamp), or its name.
    Returns the accumulator (counts overall and per distance bin); ``.result()`` gives the metrics.
    """
    spec = dataset_spec(dataset) if isinstance(dataset, str) else dataset
    acc = Accumulator(spec.label_map, spec.convention)
    for xyz, gt, pred in triples:
        acc.add(xyz, gt, spec.clamp(pred))
    return acc


def semantickitti_pairs(root: str | Path, predictions: str | Path, sequences: Iterable[str],
                        label_map: LabelMap) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (points, gt learning ids, predicted learning ids) for every labelled frame of ``sequences``.

    Every ground-truth frame needs a prediction file of the same length; prediction raw ids are
    mapped through ``learning_map`` (ids outside it are an error: train ids written instead of raw
    ids are the classic submission bug).
    """
    from harness.data.semantickitti import SemanticKITTI, read_label_file, split_label

    predictions = Path(predictions)
    dataset = SemanticKITTI(root, sequences=list(sequences), label_map=label_map, require_labels=True)
    if len(dataset) == 0:
        raise InputError(Path(root) / "sequences", "no scans found for the requested sequences", "check --root and --sequences/--split")
    for ref in dataset.frames:
        scan = dataset.load(ref)
        pred_path = predictions / "sequences" / ref.sequence / "predictions" / f"{ref.frame}.label"
        if not pred_path.is_file():
            raise InputError(pred_path, "prediction file missing", f"write one prediction per scan in {predictions}/sequences/NN/predictions/")
        raw_pred = read_label_file(pred_path, num_points=scan.points.shape[0])
        pred_sem, _ = split_label(raw_pred)
        try:
            pred = label_map.to_learning(pred_sem, pred_path)
        except InputError as err:
            raise InputError(pred_path, err.problem,
                             "predictions must be raw SemanticKITTI ids: map train ids with learning_map_inv "
                             "(harness predict writes them that way)") from None
        yield scan.points, scan.labels, pred


def evaluate_semantickitti(root: str | Path, predictions: str | Path, sequences: Iterable[str],
                           label_map: str = "semantickitti") -> dict:
    """Official-semantics evaluation of a SemanticKITTI prediction folder; returns the metrics dict."""
    spec = dataset_spec("semantickitti")
    lm = load_label_map(label_map)
    pairs = semantickitti_pairs(root, predictions, sequences, lm)
    return accumulate(((points[:, :3], gt, pred) for points, gt, pred in pairs), spec).result()


def evaluate_nuscenes(dataroot: str | Path, predictions: str | Path, version: str = "v1.0-trainval",
                      eval_set: str = "val") -> dict:
    """nuscenes-devkit lidarseg semantics on ``PRED/lidarseg/<eval_set>/<sd_token>_lidarseg.bin``.

    Predictions are uint8 coarse ids in 1..16 (the devkit asserts this: 0 is not a valid prediction).
    """
    from harness.data.nuscenes import NuScenesLidarSeg  # nuscenes-devkit is optional: imported on use

    dataset = NuScenesLidarSeg(dataroot, version, eval_set)
    acc = Accumulator(dataset.label_map, "nuscenes")
    pred_dir = Path(predictions) / "lidarseg" / dataset.split
    for i, ref in enumerate(dataset.frames):
        scan = dataset[i]
        if scan.labels is None:
            raise InputError(Path(dataroot) / version / "lidarseg.json", "no lidarseg ground truth", "install nuScenes-lidarseg")
        pred_path = pred_dir / f"{ref.sd_token}_lidarseg.bin"
        if not pred_path.is_file():
            raise InputError(pred_path, "prediction file missing", f"write one uint8 file per key frame into {pred_dir}")
        pred = np.fromfile(pred_path, dtype=np.uint8)
        if pred.shape[0] != scan.points.shape[0]:
            raise InputError(pred_path, f"has {pred.shape[0]} predictions but the scan has {scan.points.shape[0]} points",
                             "write one prediction per point, in the scan's order")
        if pred.size and (pred.min() < 1 or pred.max() > 16):
            raise InputError(pred_path, f"predictions must be coarse ids 1..16, found [{pred.min()}, {pred.max()}]",
                             "predict one of the 16 classes for every point (0 = ignore is not a valid prediction)")
        acc.add(scan.points[:, :3], scan.labels, pred.astype(np.int64))
    result = acc.result()
    result["freq_weighted_iou"] = frequency_weighted_iou(acc.counts)
    result["eval_set"] = dataset.split
    return result


def format_table(result: dict) -> str:
    """Plain-text per-class table (percent) for the terminal."""
    lines = [f"{'class':<22}{'IoU %':>8}"]
    for name, iou in result["iou_per_class"].items():
        lines.append(f"{name:<22}{'n/a' if iou is None else f'{100 * iou:.2f}':>8}")
    lines.append(f"{'mIoU (' + result['convention'] + ')':<22}{100 * result['miou']:>8.2f}")
    lines.append(f"{'accuracy':<22}{100 * result['accuracy']:>8.2f}")
    for mode, block in result["per_distance"].items():
        lines.append(f"per distance ({mode}): " + ", ".join(
            f"{b['bin']} " + ("no data" if b["miou"] is None else f"{100 * b['miou']:.1f}") for b in block["bins"]))
    return "\n".join(lines)
