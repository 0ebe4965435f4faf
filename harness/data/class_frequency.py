"""Class frequencies of a dataset root's training split, computed from its label files and cached.

PVD's difficulty-aware supervoxel sampling weighs a supervoxel by the rarity of the classes in it
(``f_class``, PVKD supplement section 2), so it needs each class's share of the training points.
The shipped label maps cannot give it for every root: nuScenes' ``nuscenes.yaml`` has no
``content`` at all (a uniform placeholder would make ``f_class`` constant and reduce the sampling to
distance only, silently), and SemanticKITTI's ``content`` describes the official dataset, not a
generated root or a custom split. So the frequencies are counted here:

* SemanticKITTI: every ``sequences/NN/labels/*.label`` of the training sequences (semantic = low
  16 bits, mapped to learning ids through ``semantic-kitti.yaml``'s ``learning_map``);
* nuScenes: every key frame's ``lidarseg/<version>/<token>_lidarseg.bin`` of the devkit's training
  split (``create_splits_scenes``: ``train``, ``mini_train`` on v1.0-mini), the sample -> lidarseg
  joins done by nuscenes-devkit's tables; 32 fine indices mapped to 16 coarse classes.

``frequency[c] = points of learning id c / all points`` (id 0, ignored, included, as ``content``).
A split without a labelled point is an error, never a uniform fallback.

Cache: one JSON file per (dataset, root, split files) under ``$PVKD_CACHE_DIR/class_frequency/``
(default ``~/.cache/pvkd-harness``). The key hashes the resolved root, the dataset, the label map
file and every label file's relative path, size and modification time, so a changed, added or
removed label file recomputes; a damaged cache file is recomputed and replaced.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.data.labelmap import LABEL_DIR, LABEL_FILES, LabelMap, load_label_map
from harness.errors import InputError

CACHE_ENV = "PVKD_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/pvkd-harness"
CACHE_SUBDIR = "class_frequency"
SCHEMA = 1


@dataclass(frozen=True)
class ClassFrequency:
    """Training-split class frequencies of one dataset root.

    Attributes:
        dataset: ``semantickitti`` | ``nuscenes``.
        root: resolved dataset root.
        frequency: (C,) float64 share of all labelled-split points per learning id (sums to 1).
        counts: (C,) int64 points per learning id.
        scans: label files counted.
        cache_file: where the values are cached (None when caching was off).
        from_cache: True when read from the cache instead of counted.
    """

    dataset: str
    root: str
    frequency: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    scans: int
    cache_file: Path | None
    from_cache: bool


def cache_dir() -> Path:
    """``$PVKD_CACHE_DIR`` or ``~/.cache/pvkd-harness`` (expanded, not created)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def _semantickitti_labels(path: Path, label_map: LabelMap) -> np.ndarray:
    from harness.data.semantickitti import read_label_file, split_label

    semantic, _ = split_label(read_label_file(path))
    return label_map.to_learning(semantic, path)


def _nuscenes_labels(path: Path, label_map: LabelMap) -> np.ndarray:
    from harness.data.nuscenes import read_lidarseg

    return label_map.to_learning(read_lidarseg(path), path)


#: dataset -> (label map name, reader of one label file as learning ids)
LABEL_READERS: dict[str, tuple[str, Callable[[Path, LabelMap], np.ndarray]]] = {
    "semantickitti": ("semantickitti", _semantickitti_labels),
    "nuscenes": ("nuscenes", _nuscenes_labels),
}


def _reader_root(reader: Any) -> Path:
    root = getattr(reader, "root", None) or getattr(reader, "dataroot", None)
    if root is None:
        raise TypeError(f"{type(reader).__name__} has no root/dataroot attribute")
    return Path(root).resolve()


def _label_files(reader: Any, dataset: str, root: Path) -> list[Path]:
    paths = [frame.label_path for frame in reader.frames]
    missing = [i for i, p in enumerate(paths) if p is None]
    if missing:
        where = root / (reader.version if dataset == "nuscenes" else "sequences")
        raise InputError(where, f"{len(missing)} of {len(paths)} training scans have no label file, so the class "
                         "frequencies of the training split cannot be counted",
                         "install the labels (SemanticKITTI data_odometry_labels / nuScenes-lidarseg) or pass "
                         "distill.options.class_frequency explicitly")
    if not paths:
        raise InputError(root, "the training split has no scans, so its class frequencies cannot be counted",
                         "check data.root / data.train_sequences (or data.version for nuScenes)")
    return [Path(p) for p in paths]


def _fingerprint(dataset: str, root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    digest.update(f"{SCHEMA}\0{dataset}\0{root}\0".encode())
    digest.update((LABEL_DIR / LABEL_FILES[LABEL_READERS[dataset][0]]).read_bytes())
    for path in files:
        try:
            st = path.stat()
        except OSError:
            raise InputError(path, "label file not found", "re-copy the dataset's labels") from None
        rel = os.path.relpath(path, root)
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _read_cache(path: Path, fingerprint: str, num_classes: int) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return None
    counts = data.get("counts")
    if not isinstance(counts, list) or len(counts) != num_classes or not all(isinstance(c, int) and c >= 0
                                                                              for c in counts):
        return None
    return data


def _write_cache(path: Path, payload: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError as err:
        raise InputError(path.parent, f"cannot write the class-frequency cache ({err.strerror or err})",
                         f"set {CACHE_ENV} to a writable folder") from None


def count_classes(dataset: str, files: list[Path], num_classes: int) -> np.ndarray:
    """(C,) int64 points per learning id over ``files`` (label files of ``dataset``)."""
    label_map_name, read = LABEL_READERS[dataset]
    label_map = load_label_map(label_map_name)
    counts = np.zeros(num_classes, dtype=np.int64)
    for path in files:
        counts += np.bincount(read(path, label_map), minlength=num_classes)[:num_classes]
    return counts


def training_class_frequency(reader: Any, dataset: str, *, use_cache: bool = True) -> ClassFrequency:
    """Class frequencies of the training split ``reader`` indexes (a :class:`harness.data.semantickitti.SemanticKITTI`
    or :class:`harness.data.nuscenes.NuScenesLidarSeg`), counted once per root and cached (module docstring).

    Raises:
        InputError: a scan without a label file, no scan, no labelled point, or an unwritable cache folder.
    """
    if dataset not in LABEL_READERS:
        raise InputError("data.dataset", f"no class-frequency reader for {dataset!r}",
                         f"use one of {sorted(LABEL_READERS)}")
    num_classes = load_label_map(LABEL_READERS[dataset][0]).num_classes
    root = _reader_root(reader)
    files = _label_files(reader, dataset, root)
    fingerprint = _fingerprint(dataset, root, files)
    cache_file = cache_dir() / CACHE_SUBDIR / f"{dataset}-{fingerprint}.json" if use_cache else None
    cached = _read_cache(cache_file, fingerprint, num_classes) if cache_file is not None else None
    if cached is not None:
        counts = np.asarray(cached["counts"], dtype=np.int64)
    else:
        counts = count_classes(dataset, files, num_classes)
    if counts[1:].sum() == 0:
        raise InputError(root, f"the {len(files)} training label files hold no labelled point (every point is "
                         "ignore, id 0), so the class frequencies are undefined",
                         "check the label files, or pass distill.options.class_frequency explicitly")
    if cache_file is not None and cached is None:
        _write_cache(cache_file, {"schema": SCHEMA, "fingerprint": fingerprint, "dataset": dataset, "root": str(root),
                                  "scans": len(files), "counts": [int(c) for c in counts],
                                  "frequency": (counts / counts.sum()).tolist()})
    return ClassFrequency(dataset, str(root), counts / counts.sum(), counts, len(files), cache_file, cached is not None)
