"""Every bad input gives one clear error naming the file, CLI exit code 2, and no partial output."""
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.data.semantickitti import read_label_file, read_points, read_poses
from harness.errors import InputError


def make_root(tmp_path: Path, n: int = 200, seed: int = 0) -> tuple[Path, Path]:
    """A tiny official-layout root (sequence 08, two frames) and a matching prediction folder."""
    rng = np.random.default_rng(seed)
    root = tmp_path / "kitti"
    preds = tmp_path / "preds"
    for frame in range(2):
        pts = np.c_[rng.uniform(-30, 30, (n, 2)), rng.uniform(-2, 1, n), rng.uniform(0, 1, n)].astype(np.float32)
        raw = rng.choice([10, 40, 48, 50, 70, 72], n).astype(np.uint32) | (np.uint32(7) << 16)
        for folder, arr, ext in ((root / "sequences/08/velodyne", pts, "bin"), (root / "sequences/08/labels", raw, "label"),
                                 (preds / "sequences/08/predictions", raw & 0xFFFF, "label")):
            folder.mkdir(parents=True, exist_ok=True)
            arr.tofile(folder / f"{frame:06d}.{ext}")
    return root, preds


def run_eval(root: Path, preds: Path, out: Path) -> int:
    return main(["evaluate", "--dataset", "semantickitti", "--root", str(root), "--sequences", "08",
                 "--predictions", str(preds), "--out", str(out)])


def test_clean_input_evaluates_perfectly(tmp_path, capsys):
    root, preds = make_root(tmp_path)
    out = tmp_path / "m.json"
    assert run_eval(root, preds, out) == 0
    import json
    metrics = json.loads(out.read_text())
    present = [v for v in metrics["iou_per_class"].values() if v > 0]
    assert len(present) == 6 and all(v == pytest.approx(1.0) for v in present)


def corrupt_truncated(root, preds):
    f = root / "sequences/08/velodyne/000001.bin"
    f.write_bytes(f.read_bytes()[:-5])
    return f, "not a multiple of 16"


def corrupt_label_count(root, preds):
    f = root / "sequences/08/labels/000001.label"
    f.write_bytes(f.read_bytes()[:-8])
    return f, "has 198 labels but the scan has 200 points"


def corrupt_nan(root, preds):
    f = root / "sequences/08/velodyne/000001.bin"
    pts = np.fromfile(f, dtype=np.float32).reshape(-1, 4)
    pts[3, 1] = np.nan
    pts[7, 0] = np.inf
    pts.tofile(f)
    return f, "2 point(s) have NaN/inf values"


def corrupt_empty(root, preds):
    f = root / "sequences/08/velodyne/000001.bin"
    f.write_bytes(b"")
    return f, "empty"


def corrupt_unknown_raw_id(root, preds):
    f = root / "sequences/08/labels/000001.label"
    lab = np.fromfile(f, dtype=np.uint32)
    lab[5] = 123
    lab.tofile(f)
    return f, "raw label id(s) [123] are not in the semantickitti learning_map"


def corrupt_prediction_length(root, preds):
    f = preds / "sequences/08/predictions/000001.label"
    f.write_bytes(f.read_bytes()[:-4])
    return f, "has 199 labels but the scan has 200 points"


def corrupt_train_ids_in_predictions(root, preds):
    f = preds / "sequences/08/predictions/000001.label"
    np.full(200, 9, dtype=np.uint32).tofile(f)  # train id 9 (road) is not a raw id
    return f, "learning_map_inv"


def corrupt_missing_sequence(root, preds):
    import shutil
    shutil.rmtree(root / "sequences/08")
    return root / "sequences/08", "sequence folder (with velodyne/) not found"


@pytest.mark.parametrize("corrupt", [corrupt_truncated, corrupt_label_count, corrupt_nan, corrupt_empty,
                                     corrupt_unknown_raw_id, corrupt_prediction_length,
                                     corrupt_train_ids_in_predictions, corrupt_missing_sequence])
def test_bad_input_exit_code_2_names_file_and_writes_nothing(tmp_path, capsys, corrupt):
    root, preds = make_root(tmp_path)
    bad_file, problem = corrupt(root, preds)
    out = tmp_path / "metrics.json"
    assert run_eval(root, preds, out) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and str(bad_file) in err and problem in err and "Fix:" in err
    assert not out.exists() and not list(tmp_path.glob(".metrics.json*"))


def test_profile_data_on_truncated_scan_exits_2(tmp_path, capsys):
    f = tmp_path / "x.bin"
    f.write_bytes(b"\0" * 18)
    assert main(["profile", "data", "--backbone", "cylinder3d", "--scan", str(f)]) == 2
    assert "not a multiple of 16" in capsys.readouterr().err


def test_reader_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="scan file not found"):
        read_points(tmp_path / "nope.bin")
    bad = tmp_path / "l.label"
    bad.write_bytes(b"\0" * 6)
    with pytest.raises(InputError, match="not a multiple of 4"):
        read_label_file(bad)


@pytest.mark.parametrize("content, problem", [("1 0 0 0 0 1 0 0 0 0 1\n", "line 1 has 11 numbers, expected 12"),
                                              ("1 0 0 0 0 1 0 0 0 0 1 x\n", "line 1 of poses.txt is not numeric")])
def test_bad_pose_file(tmp_path, content, problem):
    f = tmp_path / "poses.txt"
    f.write_text(content)
    with pytest.raises(InputError, match=problem):
        read_poses(f, np.eye(4))
    f.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(InputError, match="has 1 poses but frame ids go up to 4"):
        read_poses(f, np.eye(4), min_count=5)
