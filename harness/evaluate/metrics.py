"""IoU scores from confusion counts under each benchmark's official semantics.

``semantickitti`` -- semantic-kitti-api ``evaluate_semantics.py`` + ``auxiliary/np_ioueval.py``
(commit a9c749e): points whose ground truth is ignored (0) are removed; a *prediction* of 0 on a
labelled point stays and counts as a false negative of its class; ``IoU = tp / (tp + fp + fn + 1e-15)``;
mIoU is the plain mean over all evaluated classes, an absent class counting as IoU 0.

``nuscenes`` -- nuscenes-devkit ``eval/lidarseg/utils.py`` ``ConfusionMatrix``: row 0 *and* column 0
are zeroed (ignored ground truth and predictions of 0 both dropped); ``IoU = diag / (row + col - diag)``
with NaN where the union is 0; ``mIoU = nanmean`` over classes 1..16.

``pvkd`` -- Cylinder3D / Codes-for-PVKD ``utils/metric_util.py`` ``fast_hist_crop`` + ``nanmean``:
rows and columns 0 cropped, absent classes NaN and skipped. Reported as a secondary check only.
"""
from __future__ import annotations

import numpy as np

CONVENTIONS = ("semantickitti", "nuscenes", "pvkd")


def iou_per_class(counts: np.ndarray, convention: str, ignore: int = 0) -> np.ndarray:
    """Per-class IoU for classes ``1..C-1`` (index 0 of the result is class 1).

    Args:
        counts: (C, C) confusion counts, ``counts[gt, pred]``.
        convention: one of :data:`CONVENTIONS`.
    """
    conf = np.asarray(counts, dtype=np.float64).copy()
    if convention == "semantickitti":
        conf[ignore, :] = 0  # drop points whose ground truth is ignored; keep predictions of 0
        tp = np.diag(conf)
        fp = conf.sum(axis=0) - tp
        fn = conf.sum(axis=1) - tp
        iou = tp / (tp + fp + fn + 1e-15)
    elif convention in ("nuscenes", "pvkd"):
        conf[ignore, :] = 0
        conf[:, ignore] = 0
        tp = np.diag(conf)
        union = conf.sum(axis=0) + conf.sum(axis=1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / union
        iou[union == 0] = np.nan
    else:
        raise ValueError(f"unknown convention {convention!r}; use one of {CONVENTIONS}")
    keep = [c for c in range(conf.shape[0]) if c != ignore]
    return iou[keep]


def mean_iou(iou: np.ndarray, convention: str) -> float:
    """mIoU: plain mean (absent class = 0) for ``semantickitti``; ``nanmean`` otherwise."""
    if convention == "semantickitti":
        return float(np.mean(iou))
    if np.all(np.isnan(iou)):
        return float("nan")
    return float(np.nanmean(iou))


def accuracy(counts: np.ndarray, convention: str, ignore: int = 0) -> float:
    """Point accuracy. semantic-kitti-api: ``tp.sum() / (tp + fp)[evaluated].sum()`` (predicted-0 points
    leave the denominator); devkit-style conventions: ``trace / total`` after dropping row/column 0."""
    conf = np.asarray(counts, dtype=np.float64).copy()
    conf[ignore, :] = 0
    if convention != "semantickitti":
        conf[:, ignore] = 0
    tp = np.diag(conf)
    keep = [c for c in range(conf.shape[0]) if c != ignore]
    fp = conf.sum(axis=0) - tp
    denom = tp[keep].sum() + fp[keep].sum()
    return float(tp.sum() / denom) if denom else float("nan")


def frequency_weighted_iou(counts: np.ndarray, ignore: int = 0) -> float:
    """nuscenes-devkit ``get_freqweighted_iou``: ``nansum(gt_count_c * IoU_c) / total`` over classes != 0."""
    conf = np.asarray(counts, dtype=np.float64).copy()
    conf[ignore, :] = 0
    conf[:, ignore] = 0
    iou = iou_per_class(counts, "nuscenes", ignore)
    gt_count = np.delete(conf.sum(axis=1), ignore)
    total = conf.sum()
    return float(np.nansum(gt_count * iou) / total) if total else float("nan")


def scores(counts: np.ndarray, convention: str, class_names: tuple[str, ...] | list[str]) -> dict:
    """All scores of one confusion matrix as a JSON-ready dict (``class_names`` includes index 0)."""
    iou = iou_per_class(counts, convention)
    return {
        "convention": convention,
        "miou": mean_iou(iou, convention),
        "accuracy": accuracy(counts, convention),
        "iou_per_class": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names[1:], iou)},
    }
