"""``harness timing data``: time the per-scan preprocessing of a backbone on one scan file."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from harness.data.labelmap import load_label_map
from harness.data.semantickitti import read_label_file, read_points, split_label
from harness.backbones.base import voxelize_for_backbone


def load_and_voxelize(backbone: str, scan: Path, label: Path | None, augment_rng: np.random.Generator | None):
    """Everything the original ``__getitem__`` does per scan: read, map labels, augment, voxelise."""
    points = read_points(scan)
    labels = None
    if label is not None:
        semantic, _ = split_label(read_label_file(label, num_points=points.shape[0]))
        labels = load_label_map("semantickitti").to_learning(semantic, label)
    return voxelize_for_backbone(backbone, points, labels, augment_rng)


def profile_data(backbone: str, scan: str | Path, label: str | Path | None = None, repeat: int = 20,
                 augment: bool = True, seed: int = 0) -> dict:
    """Mean / median milliseconds per scan over ``repeat`` runs after one warm-up."""
    scan = Path(scan)
    label = Path(label) if label else None
    rng = np.random.default_rng(seed) if augment else None
    result = load_and_voxelize(backbone, scan, label, rng)  # warm-up (and input validation)
    times = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        result = load_and_voxelize(backbone, scan, label, rng)
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "backbone": backbone, "scan": str(scan), "label": str(label) if label else None, "augment": augment,
        "repeat": len(times), "ms_per_scan_mean": float(np.mean(times)), "ms_per_scan_median": float(np.median(times)),
        "points": result.num_points, "voxels": result.num_voxels,
    }
