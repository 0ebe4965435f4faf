"""Metric semantics: hand-computed cases, the api restatement, and nuscenes-devkit's own ConfusionMatrix."""
import json
import shutil

import numpy as np
import pytest

from harness.cli import main
from harness.data.labelmap import load_label_map
from harness.evaluate.confusion import ConfusionMatrix, confusion_counts
from harness.evaluate.distance import DistanceBins
from harness.evaluate.metrics import accuracy, frequency_weighted_iou, iou_per_class, mean_iou
from tests.evaluate.reference_kitti_api import ApiIoUEval, api_evaluate_files


def test_hand_computed_semantickitti_semantics():
    # 3 classes + ignore. gt/pred pairs:
    gt = np.array([1, 1, 1, 2, 2, 0, 0, 3])
    pred = np.array([1, 1, 0, 2, 1, 2, 0, 1])
    c = confusion_counts(gt, pred, 4)
    assert c[1, 1] == 2 and c[1, 0] == 1 and c[2, 1] == 1 and c[0, 2] == 1 and c[3, 1] == 1
    iou = iou_per_class(c, "semantickitti")
    # class 1: tp 2, fp 2 (gt2->1, gt3->1), fn 1 (pred 0 on a labelled point counts) -> 2/5
    # class 2: tp 1, fp 0 (the gt-0 point predicted 2 is removed), fn 1 -> 1/2; class 3: tp 0 -> 0
    np.testing.assert_allclose(iou, [2 / 5, 1 / 2, 0.0])
    assert mean_iou(iou, "semantickitti") == pytest.approx((0.4 + 0.5 + 0) / 3)
    # accuracy: tp 3 / (tp + fp over classes 1..3 = 3 + 2) = 0.6; the predicted-0 point leaves the denominator
    assert accuracy(c, "semantickitti") == pytest.approx(3 / 5)


def test_hand_computed_nuscenes_semantics():
    gt = np.array([1, 1, 1, 2, 2, 0, 0])
    pred = np.array([1, 1, 0, 2, 1, 2, 0])
    c = confusion_counts(gt, pred, 4)
    iou = iou_per_class(c, "nuscenes")
    # row and column 0 dropped: class 1 tp 2, fp 1, fn 0 -> 2/3; class 2 tp 1, fn 1 -> 1/2; class 3 absent -> NaN
    np.testing.assert_allclose(iou[:2], [2 / 3, 1 / 2])
    assert np.isnan(iou[2])
    assert mean_iou(iou, "nuscenes") == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_matches_api_restatement_on_random_data():
    rng = np.random.default_rng(0)
    cm = ConfusionMatrix(20)
    api = ApiIoUEval(20)
    for _ in range(5):
        gt = rng.integers(0, 20, 5000)
        pred = np.where(rng.random(5000) < 0.6, gt, rng.integers(0, 20, 5000))
        gt[rng.random(5000) < 0.1] = 7 if _ else gt[0]
        cm.add(gt, pred)
        api.add_batch(pred, gt)
    np.testing.assert_array_equal(cm.counts, api.conf.T)
    api_miou, api_iou = api.iou()
    ours = iou_per_class(cm.counts, "semantickitti")
    np.testing.assert_allclose(ours, api_iou[1:], rtol=0, atol=1e-15)
    assert mean_iou(ours, "semantickitti") == pytest.approx(api_miou, abs=1e-15)
    assert accuracy(cm.counts, "semantickitti") == pytest.approx(api.acc(), abs=1e-12)


def test_matches_nuscenes_devkit_confusion_matrix():
    utils = pytest.importorskip("nuscenes.eval.lidarseg.utils", reason="nuscenes-devkit not installed")
    rng = np.random.default_rng(1)
    dev = utils.ConfusionMatrix(17, ignore_idx=0)
    cm = ConfusionMatrix(17)
    for _ in range(4):
        gt = rng.integers(0, 16, 3000)  # class 16 never in GT or predictions -> NaN in both
        pred = np.where(rng.random(3000) < 0.7, gt, rng.integers(1, 16, 3000))
        pred[pred == 0] = 1
        dev.update(gt, pred)
        cm.add(gt, pred)
    ours = iou_per_class(cm.counts, "nuscenes")
    theirs = np.array(dev.get_per_class_iou())[1:]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, equal_nan=True)
    assert mean_iou(ours, "nuscenes") == pytest.approx(dev.get_mean_iou(), rel=1e-6)
    assert frequency_weighted_iou(cm.counts) == pytest.approx(dev.get_freqweighted_iou(), rel=1e-6)


def test_distance_bins_official_drops_boundaries_and_far_points():
    xyz = np.array([[5.0, 0, 0], [10.0, 0, 0], [0, 20.0, 0], [0, 0, 49.9], [50.0, 0, 0], [70.0, 0, 0], [0, 0, 0]])
    assert DistanceBins.make("official").assign(xyz).tolist() == [0, -1, -1, 4, -1, -1, -1]
    assert DistanceBins.make("harness").assign(xyz).tolist() == [0, 1, 2, 4, 5, 5, 0]
    assert DistanceBins.make("harness", "bev").assign(np.array([[3.0, 4.0, 30.0]])).tolist() == [0]


def test_confusion_matrices_merge_like_ranks():
    rng = np.random.default_rng(2)
    gt, pred = rng.integers(0, 5, 1000), rng.integers(0, 5, 1000)
    a, b = ConfusionMatrix(5).add(gt[:400], pred[:400]), ConfusionMatrix(5).add(gt[400:], pred[400:])
    a += b
    np.testing.assert_array_equal(a.counts, confusion_counts(gt, pred, 5))


@pytest.mark.real_data
def test_evaluate_cli_matches_api_on_real_scans(kitti_root, tmp_path):
    """Predictions = real GT with deterministic corruption, in the submission layout (raw ids)."""
    lm = load_label_map("semantickitti")
    root = tmp_path / "root"
    preds = tmp_path / "preds"
    pairs = []
    for frame in ("000000", "000001"):
        src = kitti_root / "sequences/00"
        for sub, ext in (("velodyne", "bin"), ("labels", "label")):
            (root / "sequences/08" / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(src / sub / f"{frame}.{ext}", root / "sequences/08" / sub / f"{frame}.{ext}")
        raw = np.fromfile(src / "labels" / f"{frame}.label", dtype=np.uint32)
        learn = lm.to_learning(raw & 0xFFFF)
        idx = np.arange(learn.shape[0])
        learn = np.where(idx % 7 == 0, (learn + 3) % 20, learn)  # wrong class on every 7th point
        learn = np.where(idx % 11 == 0, 0, learn)                 # "unlabeled" prediction on every 11th
        out = preds / "sequences/08/predictions"
        out.mkdir(parents=True, exist_ok=True)
        lm.to_raw(learn).astype(np.uint32).tofile(out / f"{frame}.label")
        pairs.append((root / "sequences/08/velodyne" / f"{frame}.bin", root / "sequences/08/labels" / f"{frame}.label",
                      out / f"{frame}.label"))
    metrics_path = tmp_path / "metrics.json"
    assert main(["evaluate", "--dataset", "semantickitti", "--root", str(root), "--split", "val",
                 "--predictions", str(preds), "--out", str(metrics_path)]) == 0
    m = json.loads(metrics_path.read_text())
    overall, by_dist = api_evaluate_files(pairs)
    api_miou, api_iou = overall.iou()
    assert m["miou"] == pytest.approx(api_miou, abs=1e-12)
    assert list(m["iou_per_class"].values()) == pytest.approx(api_iou[1:].tolist(), abs=1e-12)
    assert m["accuracy"] == pytest.approx(overall.acc(), abs=1e-12)
    official = m["per_distance"]["official"]["bins"]
    assert [b["miou"] for b in official] == pytest.approx([ev.iou()[0] for ev in by_dist], abs=1e-12)
    assert sum(b["num_points"] for b in m["per_distance"]["harness"]["bins"]) == 124668 + 124605
    assert np.array(m["confusion_matrix"]["counts"]).sum() == 124668 + 124605
