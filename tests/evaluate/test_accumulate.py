"""The shared evaluation loop applies the dataset description: label map, convention, prediction clamp."""
from __future__ import annotations

import numpy as np

from harness.data.datasets import dataset_spec
from harness.evaluate.runner import accumulate


def test_nuscenes_predictions_of_the_ignored_class_are_raised_to_1():
    xyz = np.zeros((2, 3), np.float32)
    result = accumulate([(xyz, np.array([1, 2]), np.array([0, 2]))], "nuscenes").result()
    names = dataset_spec("nuscenes").label_map.class_names
    # clamped to class 1: a true positive of class 1 (unclamped, the devkit would drop it: IoU undefined)
    assert result["iou_per_class"][names[1]] == 1.0
    assert result["convention"] == "nuscenes" and result["num_points"] == 2


def test_semantickitti_keeps_a_prediction_of_0_as_a_miss():
    xyz = np.zeros((2, 3), np.float32)
    result = accumulate([(xyz, np.array([1, 1]), np.array([0, 1]))], "semantickitti").result()
    names = dataset_spec("semantickitti").label_map.class_names
    assert abs(result["iou_per_class"][names[1]] - 0.5) < 1e-12     # tp 1, fn 1 (IoU has a +1e-15 guard)
    assert result["convention"] == "semantickitti"
