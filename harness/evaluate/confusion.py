"""Confusion matrices from counts.

Everything the harness reports (mIoU, per-class IoU, per-distance IoU) is derived from integer
confusion counts, accumulated over scans and, under DDP, summed over ranks -- never from averaged
per-scan or per-rank scores (detectron2 ``SemSegEvaluator``; nuscenes-devkit ``ConfusionMatrix``).

Convention: ``counts[gt, pred]`` (rows = ground truth, columns = prediction), as nuscenes-devkit.
(semantic-kitti-api's ``np_ioueval`` stores the transpose; the scores do not depend on it.)
"""
from __future__ import annotations

import numpy as np


def confusion_counts(gt: np.ndarray, pred: np.ndarray, num_classes: int, bins: np.ndarray | None = None,
                     num_bins: int = 1) -> np.ndarray:
    """Count (gt, pred) pairs with one ``np.bincount``.

    Args:
        gt, pred: (N,) integer learning ids in ``[0, num_classes)``.
        bins: optional (N,) bin index per point in ``[-1, num_bins)``; -1 drops the point (used for
            distance bins, where some points fall in no bin).
    Returns:
        (num_classes, num_classes) int64, or (num_bins, C, C) when ``bins`` is given.
    """
    gt = np.asarray(gt, dtype=np.int64).ravel()
    pred = np.asarray(pred, dtype=np.int64).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"gt has {gt.shape[0]} entries but pred has {pred.shape[0]}")
    c = num_classes
    if gt.size and (gt.min() < 0 or gt.max() >= c or pred.min() < 0 or pred.max() >= c):
        raise ValueError(f"class ids must lie in [0, {c}); got gt [{gt.min()}, {gt.max()}], pred [{pred.min()}, {pred.max()}]")
    flat = gt * c + pred
    if bins is None:
        return np.bincount(flat, minlength=c * c).reshape(c, c)
    bins = np.asarray(bins, dtype=np.int64).ravel()
    keep = bins >= 0
    flat = bins[keep] * (c * c) + flat[keep]
    return np.bincount(flat, minlength=num_bins * c * c).reshape(num_bins, c, c)


class ConfusionMatrix:
    """Accumulates ``counts[gt, pred]`` over scans; mergeable across workers and ranks."""

    def __init__(self, num_classes: int, counts: np.ndarray | None = None) -> None:
        self.num_classes = num_classes
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)

    def add(self, gt: np.ndarray, pred: np.ndarray) -> "ConfusionMatrix":
        self.counts += confusion_counts(gt, pred, self.num_classes)
        return self

    def __iadd__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different sizes")
        self.counts += other.counts
        return self


def sum_over_ranks(counts: np.ndarray) -> np.ndarray:
    """Sum integer counts over all ranks of the default ``torch.distributed`` group (no-op otherwise).

    Metrics under DDP are reduced from counts, never averaged per rank (detectron2 SemSegEvaluator)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return counts
    t = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64))
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()
