"""Class coverage of the generated data that the demo and cpu-bench profiles train and validate on.

Each profile generates ``harness gen-data --coverage`` data and crops every scan to its nearest
``data.max_points`` points (``VoxelScanDataset._crop``). A class that is absent from the cropped
training scans cannot be learned, and one absent from the cropped validation scans scores IoU 0 by
the SemanticKITTI convention whatever the network does. The test generates each profile's data with the
profile's own generator settings, reads it back through the training data path (loader, label map,
crop) and counts the points of every one of the 19 classes in the training and the validation split.

Minimum per class and split: ``MIN_POINTS_PER_SCAN`` x scans. 8 points per scan on average is about
one object of a thin class (a person at 8-10 m gets ~10-30 points at points_scale 0.035, a sign plate
~5-15) in every scan of the split, i.e. the class is seen in most scans rather than in one lucky
frame. The smallest classes measured at the demo's settings (seed 0) hold 2-4x that.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.config.load import load_config
from harness.data.generate import generate_semantickitti
from harness.data.labelmap import load_label_map
from harness.engine.data import VoxelScanDataset
from harness.reproduce.spec import PROFILE_DIR

LM = load_label_map("semantickitti")
MIN_POINTS_PER_SCAN = 8


def _profile_data(name: str) -> tuple[dict, dict]:
    block = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())["data"]["semantickitti"]
    return block["generate"], block["overrides"]


def _counts(root: Path, overrides: dict, split: str) -> tuple[np.ndarray, int]:
    """Points per learning id (0..19) over the split's cropped scans, read as training reads them."""
    args = [f"{k}={v}" for k, v in overrides.items()] + [f"data.root={root}", "data.dataset=semantickitti",
                                                          "model.backbone=minkunet"]
    ds = VoxelScanDataset(load_config(None, args), split)
    counts = np.zeros(len(LM.class_names), np.int64)
    for i in range(len(ds)):
        _, labels, n, _ = ds.load_points(i)
        counts += np.bincount(labels[:n], minlength=len(LM.class_names))
    return counts, len(ds)


@pytest.mark.parametrize("profile", ["demo", "cpu-bench"])
def test_every_class_in_cropped_train_and_val(profile: str, tmp_path: Path) -> None:
    gen, overrides = _profile_data(profile)
    assert gen.get("coverage") is True, f"{profile}.yaml must generate class-coverage streets"
    generate_semantickitti(tmp_path, gen["scans"], sequences=gen["sequences"], seed=gen["seed"],
                           points_scale=gen["points_scale"], coverage=True)
    for split in ("train", "val"):
        counts, scans = _counts(tmp_path, overrides, split)
        assert scans == gen["scans"]
        low = {LM.class_names[c]: int(counts[c]) for c in range(1, len(LM.class_names))
               if counts[c] < MIN_POINTS_PER_SCAN * scans}
        assert not low, f"{profile} {split}: classes below {MIN_POINTS_PER_SCAN} points/scan: {low}"


# sha256 over (relative path, bytes) of every file of generate_semantickitti(root, 4, [0], seed=0,
# points_scale=0.035), computed with the generator as it was before the coverage mode (commit 5d07eb8)
PLAIN_DIGEST = "b7881c8554101e90f1734a85a15524e8a2e6c4d3a0f77ec50ab7adc27cffada2"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_coverage_changes_only_coverage_scenes(tmp_path: Path) -> None:
    """Without coverage the generator writes byte for byte what it wrote before the coverage mode (its
    branches draw no random numbers there), and that realistic street lacks classes in a 3000-point crop
    that the coverage street of the same seed has."""
    plain, cov = tmp_path / "plain", tmp_path / "cov"
    generate_semantickitti(plain, 4, sequences=[0], seed=0, points_scale=0.035)
    assert _digest(plain) == PLAIN_DIGEST
    generate_semantickitti(cov, 4, sequences=[0], seed=0, points_scale=0.035, coverage=True)
    over = {"data.max_points": 3000, "data.train_sequences": "[0]", "data.val_sequences": "[0]"}
    c_plain, _ = _counts(plain, over, "train")
    c_cov, _ = _counts(cov, over, "train")
    assert (c_cov[1:] > 0).all(), dict(zip(LM.class_names[1:], c_cov[1:].tolist()))
    assert (c_plain[1:] == 0).sum() >= 3
