"""`harness evaluate --dataset nuscenes` equals nuscenes-devkit's LidarSegEval on generated tables."""
import json

import numpy as np
import pytest

pytest.importorskip("nuscenes", reason="nuscenes-devkit not installed (pip install 'pvkd-harness[nuscenes]')")

from harness.cli import main  # noqa: E402
from harness.data.generate import generate_nuscenes  # noqa: E402
from harness.data.nuscenes import NuScenesLidarSeg  # noqa: E402


@pytest.fixture(scope="module")
def nusc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nusc")
    generate_nuscenes(root, scans=6, seed=3, version="v1.0-mini")
    return root


def write_predictions(dataset: NuScenesLidarSeg, out_dir, seed=0):
    rng = np.random.default_rng(seed)
    folder = out_dir / "lidarseg" / dataset.split
    folder.mkdir(parents=True, exist_ok=True)
    for i, ref in enumerate(dataset.frames):
        gt = dataset[i].labels
        pred = np.where(rng.random(gt.shape[0]) < 0.75, gt, rng.integers(1, 17, gt.shape[0]))
        pred[pred == 0] = rng.integers(1, 17, int((pred == 0).sum()))
        pred.astype(np.uint8).tofile(folder / f"{ref.sd_token}_lidarseg.bin")


def test_reader_loads_every_mini_val_key_frame(nusc_root):
    ds = NuScenesLidarSeg(nusc_root, "v1.0-mini", "val")
    assert ds.split == "mini_val" and len(ds) > 0
    scan = ds[0]
    assert scan.points.shape[1] == 5 and scan.labels.shape[0] == scan.points.shape[0]
    assert scan.labels.max() <= 16


def test_matches_lidarseg_eval(nusc_root, tmp_path):
    from nuscenes import NuScenes
    from nuscenes.eval.lidarseg.evaluate import LidarSegEval

    ds = NuScenesLidarSeg(nusc_root, "v1.0-mini", "val")
    preds = tmp_path / "results"
    write_predictions(ds, preds)
    nusc = NuScenes("v1.0-mini", str(nusc_root), verbose=False)
    official = LidarSegEval(nusc, str(preds), "mini_val", verbose=False).evaluate()
    out = tmp_path / "m.json"
    assert main(["evaluate", "--dataset", "nuscenes", "--root", str(nusc_root), "--version", "v1.0-mini",
                 "--split", "mini_val", "--predictions", str(preds), "--out", str(out)]) == 0
    ours = json.loads(out.read_text())
    assert ours["miou"] == pytest.approx(official["miou"], abs=1e-6)
    assert ours["freq_weighted_iou"] == pytest.approx(official["freq_weighted_iou"], abs=1e-6)
    for name, iou in official["iou_per_class"].items():
        if name == "ignore" or name not in ours["iou_per_class"]:
            continue
        if np.isnan(iou):
            assert ours["iou_per_class"][name] is None
        else:
            assert ours["iou_per_class"][name] == pytest.approx(iou, abs=1e-6)


def test_prediction_of_zero_is_rejected(nusc_root, tmp_path, capsys):
    ds = NuScenesLidarSeg(nusc_root, "v1.0-mini", "val")
    preds = tmp_path / "results"
    write_predictions(ds, preds)
    f = preds / "lidarseg/mini_val" / f"{ds.frames[0].sd_token}_lidarseg.bin"
    arr = np.fromfile(f, dtype=np.uint8)
    arr[0] = 0
    arr.tofile(f)
    assert main(["evaluate", "--dataset", "nuscenes", "--root", str(nusc_root), "--version", "v1.0-mini",
                 "--split", "mini_val", "--predictions", str(preds)]) == 2
    assert str(f) in capsys.readouterr().err
