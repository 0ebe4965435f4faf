"""Training-split class frequencies (harness.data.class_frequency): counted from the label files, cached per
root, recomputed when a label file changes, and never a silent uniform fallback."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness.data.class_frequency import CACHE_ENV, cache_dir, training_class_frequency
from harness.data.generate import generate_semantickitti
from harness.data.labelmap import LABEL_DIR
from harness.data.semantickitti import SemanticKITTI
from harness.distill.base import DistillContext
from harness.distill.pvd import PVD
from harness.errors import InputError


def yaml_learning_map(name: str) -> np.ndarray:
    """Raw id -> learning id straight from the shipped yaml (independent of LabelMap)."""
    table = yaml.safe_load((LABEL_DIR / name).read_text())["learning_map"]
    lut = np.zeros(max(int(k) for k in table) + 1, dtype=np.int64)
    for raw, learning in table.items():
        lut[int(raw)] = int(learning)
    return lut


def hand_count_kitti(root: Path, sequences: list[str]) -> np.ndarray:
    lut = yaml_learning_map("semantic-kitti.yaml")
    counts = np.zeros(20, dtype=np.int64)
    for seq in sequences:
        for path in sorted((root / "sequences" / seq / "labels").glob("*.label")):
            counts += np.bincount(lut[np.fromfile(path, dtype=np.uint32) & 0xFFFF], minlength=20)
    return counts


@pytest.fixture()
def kitti(tmp_path):
    root = tmp_path / "kitti"
    generate_semantickitti(root, scans_per_sequence=2, sequences=(0, 1), seed=5, points_scale=0.02)
    return root


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def test_cache_dir_setting(monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "/some/where")
    assert cache_dir() == Path("/some/where")
    monkeypatch.delenv(CACHE_ENV)
    assert cache_dir() == Path("~/.cache/pvkd-harness").expanduser()


def test_semantickitti_counts_are_the_label_files_and_cached(kitti, cache):
    reader = SemanticKITTI(kitti, sequences=[0, 1])
    expected = hand_count_kitti(kitti, ["00", "01"])
    first = training_class_frequency(reader, "semantickitti")
    assert not first.from_cache and first.scans == 4
    assert first.counts.tolist() == expected.tolist()
    assert first.frequency == pytest.approx(expected / expected.sum(), rel=1e-12)
    assert first.cache_file.parent == cache / "class_frequency" and first.cache_file.is_file()
    saved = json.loads(first.cache_file.read_text())
    assert saved["counts"] == expected.tolist() and saved["root"] == str(kitti.resolve())
    again = training_class_frequency(reader, "semantickitti")
    assert again.from_cache and again.counts.tolist() == expected.tolist()
    # another split of the same root is another cache entry
    only0 = training_class_frequency(SemanticKITTI(kitti, sequences=[0]), "semantickitti")
    assert not only0.from_cache and only0.counts.tolist() == hand_count_kitti(kitti, ["00"]).tolist()


def test_a_changed_label_file_is_recounted_and_a_damaged_cache_replaced(kitti, cache):
    reader = SemanticKITTI(kitti, sequences=[0, 1])
    before = training_class_frequency(reader, "semantickitti")
    label = sorted((kitti / "sequences" / "00" / "labels").glob("*.label"))[0]
    raw = np.fromfile(label, dtype=np.uint32)
    np.full_like(raw, 40).tofile(label)                       # every point "road" (raw 40)
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    after = training_class_frequency(reader, "semantickitti")
    assert not after.from_cache and after.cache_file != before.cache_file
    assert after.counts.tolist() == hand_count_kitti(kitti, ["00", "01"]).tolist() != before.counts.tolist()
    after.cache_file.write_text("{not json")
    repaired = training_class_frequency(reader, "semantickitti")
    assert not repaired.from_cache and repaired.counts.tolist() == after.counts.tolist()
    assert json.loads(repaired.cache_file.read_text())["counts"] == after.counts.tolist()


def test_no_silent_fallback(kitti, cache, tmp_path):
    # every point ignored -> an error, not uniform frequencies
    for path in (kitti / "sequences").glob("*/labels/*.label"):
        np.zeros(np.fromfile(path, dtype=np.uint32).shape, dtype=np.uint32).tofile(path)
    with pytest.raises(InputError, match="no labelled point"):
        training_class_frequency(SemanticKITTI(kitti, sequences=[0, 1]), "semantickitti")
    # a training scan without its label file
    shutil.rmtree(kitti / "sequences" / "01" / "labels")
    with pytest.raises(InputError, match="have no label file"):
        training_class_frequency(SemanticKITTI(kitti, sequences=[1], require_labels=False), "semantickitti")


def test_an_unwritable_cache_is_a_named_error(kitti, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    with pytest.raises(InputError, match=CACHE_ENV):
        training_class_frequency(SemanticKITTI(kitti, sequences=[0]), "semantickitti")


def test_nuscenes_counts_come_from_the_devkit_training_split(tmp_path, cache):
    pytest.importorskip("nuscenes", reason="nuscenes-devkit is not installed")
    from nuscenes import NuScenes
    from nuscenes.utils.splits import create_splits_scenes

    from harness.data.generate import generate_nuscenes
    from harness.data.nuscenes import NuScenesLidarSeg

    root = tmp_path / "nusc"
    generate_nuscenes(root, scans=10, seed=3)
    # independent count: the devkit's mini_train scenes -> key frames -> lidarseg files
    nusc = NuScenes("v1.0-mini", dataroot=str(root), verbose=False)
    scenes = set(create_splits_scenes()["mini_train"])
    lut = yaml_learning_map("nuscenes.yaml")
    expected, frames = np.zeros(17, dtype=np.int64), 0
    for sample in nusc.sample:
        if nusc.get("scene", sample["scene_token"])["name"] in scenes:
            sd = sample["data"]["LIDAR_TOP"]
            fine = np.fromfile(root / nusc.get("lidarseg", sd)["filename"], dtype=np.uint8)
            expected += np.bincount(lut[fine], minlength=17)
            frames += 1
    assert frames > 0
    got = training_class_frequency(NuScenesLidarSeg(root, "v1.0-mini", "train"), "nuscenes")
    assert got.scans == frames and got.counts.tolist() == expected.tolist()
    assert got.frequency.sum() == pytest.approx(1.0) and np.unique(got.frequency[1:]).size > 1  # not uniform
    # PVD accepts them for difficulty-aware sampling (a uniform placeholder would be refused)
    PVD(DistillContext("cylinder3d", 17, class_frequency=torch.tensor(got.frequency, dtype=torch.float32)),
        grid="nuscenes")
