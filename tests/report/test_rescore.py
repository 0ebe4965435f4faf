"""Tables read scores recomputed from a run's confusion.npz under the dataset's current convention, and the
per-distance mode its config chose (eval.distance_bins)."""
from __future__ import annotations

import json
import math

import numpy as np

from harness.config.experiment import RunSpec
from harness.data.labelmap import load_label_map
from harness.report.collect import read_run


def _run(tmp_path, metrics: dict, overall: np.ndarray | None = None, **distance):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics))
    if overall is not None:
        np.savez_compressed(run / "confusion.npz", overall=overall, **{f"distance_{k}": v for k, v in distance.items()})
    spec = RunSpec(id="g/x", recipe="spvcnn", name="x", dataset=metrics.get("dataset", "semantickitti"))
    return read_run("t", spec, 0, run, None)


def test_scores_come_from_the_confusion_counts(tmp_path):
    names = load_label_map("semantickitti").class_names
    c = len(names)
    counts = np.zeros((c, c), np.int64)
    counts[1, 1] = 3      # class 1: tp 3, fn 1 (one point predicted as class 2) -> IoU 3 / 4
    counts[1, 2] = 1      # class 2: fp 1, no ground truth -> IoU 0 (SemanticKITTI: absent class counts 0)
    counts[0, 5] = 7      # ignored ground truth: dropped
    bins = np.zeros((2, c, c), np.int64)
    bins[0, 1, 1] = 2     # near bin: class 1 perfect -> mIoU 1 / 19
    metrics = {"dataset": "semantickitti", "miou": 0.9, "iou_per_class": {names[1]: 0.9},
               "per_distance": {"harness": {"bins": [{"bin": "0-20", "miou": 0.5}, {"bin": "20+", "miou": 0.5}]}}}
    r = _run(tmp_path, metrics, counts, harness=bins)
    assert math.isclose(r.miou, 100 * 0.75 / 19)
    assert math.isclose(r.iou[names[1]], 75.0) and r.iou[names[2]] == 0.0
    assert math.isclose(r.per_distance[0][1], 100 / 19) and r.per_distance[1][1] == 0.0


def test_without_counts_the_recorded_scores_stand(tmp_path):
    r = _run(tmp_path, {"dataset": "semantickitti", "miou": 0.5})
    assert r.miou == 50.0


def test_the_configured_distance_mode_is_read(tmp_path):
    metrics = {"dataset": "semantickitti", "miou": 0.5, "distance_bins": "official",
               "per_distance": {"harness": {"bins": [{"bin": "h", "miou": 0.1}]},
                                "official": {"bins": [{"bin": "o1", "miou": 0.2}, {"bin": "o2", "miou": 0.3}]}}}
    r = _run(tmp_path, metrics)
    assert [b for b, _ in r.per_distance] == ["o1", "o2"]
    assert math.isclose(r.per_distance[1][1], 30.0)
