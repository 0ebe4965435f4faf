"""More bad inputs (issue 11), each one exit-2 error naming the file or option and the fix, no traceback."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.config.load import load_config
from harness.data.semantickitti import read_calib, read_points, read_poses
from harness.engine.data import build_reader
from harness.errors import InputError

from .test_bad_input import make_root


def evaluate(root, preds, *extra):
    return main(["evaluate", "--dataset", "semantickitti", "--root", str(root), "--predictions", str(preds), *extra])


def test_evaluate_arguments(tmp_path, capsys):
    root, preds = make_root(tmp_path)
    assert evaluate(root, preds, "--sequences", "08", "--out", str(tmp_path)) == 2
    assert f"{tmp_path}: is a directory" in capsys.readouterr().err
    assert evaluate(root, preds, "--sequences", "xx") == 2
    assert "--sequences: ['xx'] are not sequence numbers" in capsys.readouterr().err
    assert evaluate(root, preds, "--split", "bogus") == 2
    assert "--split: unknown split 'bogus'" in capsys.readouterr().err


def test_absurd_coordinates_are_bad_input(tmp_path, capsys):
    scan = tmp_path / "000000.bin"
    pts = np.c_[np.random.default_rng(0).uniform(-30, 30, (500, 3)), np.zeros(500)].astype(np.float32)
    pts[7, 0] = 1e30                                  # finite in float32, absurd in metres
    pts.tofile(scan)
    with pytest.raises(InputError, match="1 point\\(s\\) have a coordinate beyond 1000 m \\(largest \\|value\\| 1e\\+30\\)"):
        read_points(scan)
    assert main(["profile", "data", "--backbone", "minkunet", "--scan", str(scan), "--repeat", "1"]) == 2
    assert "beyond 1000 m" in capsys.readouterr().err
    pts[7, 0] = 999.0                                 # far but possible: accepted
    pts.tofile(scan)
    assert read_points(scan).shape == (500, 4)


def test_profile_model_backend_and_device(tmp_path, capsys):
    scan = tmp_path / "s.bin"
    np.c_[np.random.default_rng(0).uniform(-30, 30, (300, 3)), np.zeros(300)].astype(np.float32).tofile(scan)
    with pytest.raises(SystemExit) as err:         # argparse: usage + "invalid choice", exit 2
        main(["profile", "model", "--backbone", "minkunet", "--scan", str(scan), "--backend", "bogus"])
    assert err.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["profile", "model", "--backbone", "minkunet", "--scan", str(scan), "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_non_utf8_poses_and_calib(tmp_path):
    bad = tmp_path / "poses.txt"
    bad.write_bytes(b"1 0 0 0 0 1 0 0 0 0 1 0\n\xff\xfe garbage\n")
    with pytest.raises(InputError, match="poses.txt: poses.txt is not text \\(undecodable byte at offset 24\\)"):
        read_poses(bad, np.eye(4))
    calib = tmp_path / "calib.txt"
    calib.write_bytes(b"Tr: \xe9\n")
    with pytest.raises(InputError, match="calib.txt is not text"):
        read_calib(calib)


def test_missing_labels_folder_is_named_for_training(tmp_path):
    root, _ = make_root(tmp_path)
    for f in (root / "sequences/08/labels").iterdir():
        f.unlink()
    (root / "sequences/08/labels").rmdir()
    cfg = load_config(None, [f"data.root={root}", "data.train_sequences=[8]", "data.val_sequences=[8]"])
    with pytest.raises(InputError, match="000000.label: label file missing for a labelled split"):
        build_reader(cfg, "train")


def test_corrupt_nuscenes_table_is_named(tmp_path, capsys):
    pytest.importorskip("nuscenes", reason="nuscenes-devkit not installed")
    from harness.data.generate import generate_nuscenes

    generate_nuscenes(tmp_path / "nus", 2, seed=1, sweeps_per_sample=0)
    table = tmp_path / "nus" / "v1.0-mini" / "sample_data.json"
    table.write_text(table.read_text()[: len(table.read_text()) // 2])     # cut mid-file
    preds = tmp_path / "p"
    preds.mkdir()
    assert main(["evaluate", "--dataset", "nuscenes", "--root", str(tmp_path / "nus"), "--version", "v1.0-mini",
                 "--split", "mini_val", "--predictions", str(preds)]) == 2
    err = capsys.readouterr().err
    assert f"{table}: the devkit cannot read the nuScenes tables (JSONDecodeError" in err and "Traceback" not in err
