"""Official label maps (raw dataset ids -> learning ids) loaded from the shipped YAML files.

The YAML files in ``harness/data/labels/`` are the official ones, unchanged (see PROVENANCE.md there):

* ``semantickitti``: PRBonn/semantic-kitti-api ``config/semantic-kitti.yaml`` -- 34 raw ids, learning
  ids 0..19, id 0 (unlabeled) ignored, 19 evaluated classes.
* ``semantickitti-all``: the api's multi-scan ``semantic-kitti-all.yaml`` -- 0..25, 25 evaluated classes.
* ``nuscenes``: Cylinder3D ``config/label_mapping/nuscenes.yaml`` -- 32 lidarseg fine indices ->
  16 coarse classes + 0 ignore (identical to nuscenes-devkit ``LidarsegClassMapper``).
* ``semantickitti-spvnas`` (derived, no file): the mapping mit-han-lab/spvnas trains and validates MinkUNet /
  SPVCNN with (``core/datasets/semantic_kitti.py``: only the 19 ``kept_labels`` names and their ``moving-``
  variants get a class, everything else 255 = ignore). It has the same 19 classes in the same order, and
  differs from ``semantickitti`` only where the api merges a raw class into a kept one: bus (13), on-rails (16),
  moving-on-rails (256), moving-bus (257) -> other-vehicle and lane-marking (60) -> road there; ignored here.

One convention everywhere in the harness: learning id 0 is "ignore", classes are 1..C-1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from harness.errors import InputError

LABEL_DIR = Path(__file__).parent / "labels"
LABEL_FILES = {
    "semantickitti": "semantic-kitti.yaml",
    "semantickitti-all": "semantic-kitti-all.yaml",
    "nuscenes": "nuscenes.yaml",
}

# derived maps: name -> (base map, raw ids mapped to the ignored learning id 0 instead of the base's class)
DERIVED_MAPS = {"semantickitti-spvnas": ("semantickitti", (13, 16, 60, 256, 257))}

# devkit python-sdk/nuscenes/utils/color_map.py, coarse classes (RGB); index = coarse id.
_NUSCENES_COARSE_RGB = [
    (0, 0, 0), (112, 128, 144), (220, 20, 60), (255, 127, 80), (255, 158, 0), (233, 150, 70),
    (255, 61, 99), (0, 0, 230), (47, 79, 79), (255, 140, 0), (255, 99, 71), (0, 207, 191),
    (175, 0, 75), (75, 0, 75), (112, 180, 60), (222, 184, 135), (0, 175, 0),
]


@dataclass(frozen=True)
class LabelMap:
    """A dataset's label definition.

    Attributes:
        name: registry name (``semantickitti``, ``semantickitti-all``, ``nuscenes``).
        class_names: learning-id -> name, index 0 is the ignored class.
        learning_map: raw id -> learning id.
        learning_map_inv: learning id -> raw id (SemanticKITTI only; used for submissions).
        ignore_ids: learning ids excluded from the metric (always ``(0,)`` here).
        colors_rgb: (num_classes, 3) uint8 RGB colours per learning id.
        content: (num_classes,) fraction of all points per learning id, summed over merged raw ids
            (SemanticKITTI's official ``content``), or None for nuScenes, whose yaml has none: its
            training-split frequencies are counted by :mod:`harness.data.class_frequency` (no placeholder).
    """

    name: str
    class_names: tuple[str, ...]
    learning_map: dict[int, int]
    learning_map_inv: dict[int, int]
    ignore_ids: tuple[int, ...]
    colors_rgb: np.ndarray = field(repr=False)
    content: np.ndarray | None = field(repr=False)
    raw_names: dict[int, str] = field(repr=False, default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of learning ids including the ignored 0 (20 for SemanticKITTI, 17 for nuScenes)."""
        return len(self.class_names)

    @property
    def evaluated_ids(self) -> np.ndarray:
        return np.array([c for c in range(self.num_classes) if c not in self.ignore_ids])

    @property
    def lut(self) -> np.ndarray:
        """Raw id -> learning id lookup table; ids absent from ``learning_map`` hold -1."""
        return _lut(self.name)

    def to_learning(self, raw_semantic: np.ndarray, source: str | Path = "<labels>") -> np.ndarray:
        """Map raw semantic ids to learning ids (int64). Unknown raw ids raise :class:`InputError`.

        The official api silently maps ids missing from ``learning_map`` to 0 (and crashes on ids
        >= 359); a harness should say so instead.
        """
        raw = np.asarray(raw_semantic).astype(np.int64, copy=False)
        lut = self.lut
        if raw.size:
            in_range = (raw >= 0) & (raw < lut.shape[0])
            mapped = np.full(raw.shape, -1, dtype=np.int64)
            mapped[in_range] = lut[raw[in_range]]
        else:
            mapped = raw.copy()
        bad = mapped < 0
        if bad.any():
            unknown = sorted(set(np.unique(raw[bad]).tolist()))[:10]
            raise InputError(
                source,
                f"raw label id(s) {unknown} are not in the {self.name} learning_map",
                f"use raw ids from {LABEL_FILES.get(self.name, 'semantic-kitti.yaml')} (were train ids or a different "
                "dataset's ids written?)",
            )
        return mapped

    def to_raw(self, learning: np.ndarray) -> np.ndarray:
        """Learning ids -> raw ids through ``learning_map_inv`` (for submission files)."""
        if not self.learning_map_inv:
            raise ValueError(f"label map {self.name} has no learning_map_inv")
        inv = np.zeros(self.num_classes, dtype=np.uint32)
        for k, v in self.learning_map_inv.items():
            inv[k] = v
        return inv[np.asarray(learning, dtype=np.int64)]


@lru_cache(maxsize=None)
def _lut(name: str) -> np.ndarray:
    lm = load_label_map(name)
    lut = np.full(max(lm.learning_map) + 1, -1, dtype=np.int64)
    for raw, learn in lm.learning_map.items():
        lut[raw] = learn
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=None)
def load_label_map(name: str) -> LabelMap:
    """Load one of the shipped official label maps (or a derived one, ``DERIVED_MAPS``) by name."""
    if name in DERIVED_MAPS:
        import dataclasses

        base_name, ignored = DERIVED_MAPS[name]
        base = load_label_map(base_name)
        learning_map = {raw: (0 if raw in ignored else learn) for raw, learn in base.learning_map.items()}
        cfg = yaml.safe_load((LABEL_DIR / LABEL_FILES[base_name]).read_text())
        content = np.zeros(base.num_classes)
        for raw, frac in cfg["content"].items():
            content[learning_map[int(raw)]] += float(frac)
        return dataclasses.replace(base, name=name, learning_map=learning_map, content=content)
    if name not in LABEL_FILES:
        raise KeyError(f"unknown label map {name!r}; known: {sorted(LABEL_FILES) + sorted(DERIVED_MAPS)}")
    cfg = yaml.safe_load((LABEL_DIR / LABEL_FILES[name]).read_text())
    learning_map = {int(k): int(v) for k, v in cfg["learning_map"].items()}
    if name == "nuscenes":
        names16 = cfg["labels_16"]
        class_names = tuple("ignore" if k == 0 else names16[k] for k in sorted(names16))
        colors = np.array(_NUSCENES_COARSE_RGB, dtype=np.uint8)
        return LabelMap(name, class_names, learning_map, {}, (0,), colors, None,
                        {int(k): v for k, v in cfg["labels"].items()})
    inv = {int(k): int(v) for k, v in cfg["learning_map_inv"].items()}
    raw_names = {int(k): v for k, v in cfg["labels"].items()}
    n = max(inv) + 1
    class_names = tuple(raw_names[inv[i]] for i in range(n))
    ignore = tuple(int(k) for k, v in cfg["learning_ignore"].items() if v)
    # color_map is BGR in the official yaml; matplotlib wants RGB.
    colors = np.array([cfg["color_map"][inv[i]][::-1] for i in range(n)], dtype=np.uint8)
    content = np.zeros(n)
    for raw, frac in cfg["content"].items():
        content[learning_map[int(raw)]] += float(frac)
    return LabelMap(name, class_names, learning_map, inv, ignore, colors, content, raw_names)


def semantickitti_splits() -> dict[str, list[int]]:
    """Official split lists (``split`` in semantic-kitti.yaml): train / valid / test sequences."""
    cfg = yaml.safe_load((LABEL_DIR / LABEL_FILES["semantickitti"]).read_text())
    return {k: [int(s) for s in v] for k, v in cfg["split"].items()}
