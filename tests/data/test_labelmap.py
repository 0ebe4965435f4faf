"""Label maps: values checked against the official yaml tables"""
import numpy as np
import pytest

from harness.data.labelmap import load_label_map, semantickitti_splits
from harness.errors import InputError


def test_semantickitti_learning_map_merges_moving_and_ignored_ids():
    lm = load_label_map("semantickitti")
    assert lm.num_classes == 20 and lm.ignore_ids == (0,)
    raw = np.array([0, 1, 10, 252, 11, 13, 16, 20, 256, 257, 259, 30, 254, 40, 60, 52, 99, 81])
    expected = [0, 0, 1, 1, 2, 5, 5, 5, 5, 5, 5, 6, 6, 9, 9, 0, 0, 19]
    assert lm.to_learning(raw).tolist() == expected
    assert lm.class_names[1] == "car" and lm.class_names[19] == "traffic-sign"
    assert lm.to_raw(np.arange(20)).tolist() == [0, 10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81]


def test_semantickitti_content_and_colours():
    lm = load_label_map("semantickitti")
    # content summed over merged raw ids
    assert lm.content[1] == pytest.approx(0.042608, abs=2e-6)
    assert lm.content[15] == pytest.approx(0.266815, abs=2e-6)
    assert lm.content[0] == pytest.approx(0.031502, abs=2e-6)
    # colour_map is BGR: car is [245,150,100] -> RGB (100,150,245)
    assert lm.colors_rgb[1].tolist() == [100, 150, 245]


def test_unknown_raw_id_is_a_clear_error():
    lm = load_label_map("semantickitti")
    with pytest.raises(InputError, match=r"x\.label: raw label id\(s\) \[2, 500\]"):
        lm.to_learning(np.array([10, 2, 500]), "x.label")


def test_nuscenes_fine_to_coarse():
    lm = load_label_map("nuscenes")
    assert lm.num_classes == 17
    fine = np.arange(32)
    coarse = lm.to_learning(fine)
    # the nuScenes-lidarseg 16-class table
    assert coarse.tolist() == [0, 0, 7, 7, 7, 0, 7, 0, 0, 1, 0, 0, 8, 0, 2, 3, 3, 4, 5, 0, 0, 6, 9, 10, 11, 12, 13, 14, 15, 0, 16, 0]
    assert lm.class_names[1:] == ("barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
                                  "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk",
                                  "terrain", "manmade", "vegetation")
    assert lm.content is None  # no placeholder frequencies: harness.data.class_frequency counts them


def test_official_splits():
    splits = semantickitti_splits()
    assert splits["train"] == [0, 1, 2, 3, 4, 5, 6, 7, 9, 10]
    assert splits["valid"] == [8]
    assert splits["test"] == list(range(11, 22))
