"""One description per dataset: every fact the trainer, the evaluation and the report need about it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.labelmap import LabelMap, load_label_map
from harness.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """What the harness knows about a dataset.

    Attributes:
        name: ``data.dataset`` in a config.
        label_map: the shipped label map (``harness/data/labels``): learning ids, class names, raw-id map.
        convention: the IoU semantics of its benchmark (:data:`harness.evaluate.metrics.CONVENTIONS`).
        min_prediction: predictions below this learning id are raised to it before scoring (nuScenes: 1,
            because the devkit refuses a prediction of the ignored class 0; SemanticKITTI: 0, no clamp).
        cylindrical_grid: the :class:`~harness.voxelize.cylindrical.CylindricalGrid` preset (a classmethod
            name) of the Cylinder3D recipe for this dataset.
    """

    name: str
    label_map_name: str
    convention: str
    min_prediction: int
    cylindrical_grid: str

    @property
    def label_map(self) -> LabelMap:
        return load_label_map(self.label_map_name)

    @property
    def num_classes(self) -> int:
        """Learning classes, the ignored id 0 included (SemanticKITTI 20, nuScenes 17)."""
        return self.label_map.num_classes

    def clamp(self, pred: np.ndarray) -> np.ndarray:
        """Learning-id predictions as the benchmark accepts them (see ``min_prediction``)."""
        return np.maximum(pred, self.min_prediction) if self.min_prediction else pred


DATASETS: Registry[DatasetSpec] = Registry("dataset")
DATASETS.register("semantickitti", DatasetSpec("semantickitti", "semantickitti", "semantickitti", 0, "semantickitti"))
DATASETS.register("nuscenes", DatasetSpec("nuscenes", "nuscenes", "nuscenes", 1, "nuscenes"))


def dataset_spec(name: str) -> DatasetSpec:
    """The description of ``data.dataset`` ``name``; unknown names: KeyError with a did-you-mean."""
    return DATASETS.get(name)
