"""``harness eval`` (issue 11): split names are checked, a label-free split writes predictions only, and a
predictions export replaces the folder only when complete. The model is a freshly initialised MinkUNet 0.5x
saved as a harness checkpoint (no training needed: these tests are about files, not accuracy)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.config.load import dump_config, load_config
from harness.data.generate import generate_semantickitti
from harness.engine import inference
from harness.engine.checkpoint import model_identity, save_checkpoint
from harness.engine.trainer import build_model
from harness.runs.store import run_dir_for


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti_8_11")
    generate_semantickitti(root, scans_per_sequence=2, sequences=(8, *range(11, 22)), seed=3, points_scale=0.02)
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config("harness/configs/recipes/minkunet_student.yaml",
                      [f"data.root={root}", "data.val_sequences=[8]", f"output_root={out}", "name=ev"])
    d = run_dir_for(cfg)
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(dump_config(cfg))
    torch.manual_seed(0)
    model = build_model(cfg.model)
    save_checkpoint(d / "checkpoints" / "last.pt", model=model.state_dict(), **model_identity(cfg.model, "semantickitti"))
    return d


def test_bogus_split_and_device_are_named(run, capsys):
    assert main(["eval", "--run", str(run), "--split", "bogus", "--device", "cpu"]) == 2
    assert "--split: 'bogus' is not a split. Fix: use one of train, val, test" in capsys.readouterr().err
    assert main(["eval", "--run", str(run), "--device", "tpu"]) == 2
    assert "--device: 'tpu' is not a device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["eval", "--run", str(run), "--device", "cuda"]) == 2
        assert "CUDA is not available on this machine" in capsys.readouterr().err


def test_label_free_test_split_writes_predictions_only(run, tmp_path, capsys):
    assert main(["eval", "--run", str(run), "--split", "test", "--device", "cpu"]) == 2
    assert "the test split has no labels" in capsys.readouterr().err
    preds = tmp_path / "test_preds"
    assert main(["eval", "--run", str(run), "--split", "test", "--device", "cpu", "--predictions-out", str(preds)]) == 0
    assert sorted(p.name for p in (preds / "sequences").iterdir()) == [f"{s:02d}" for s in range(11, 22)]
    labels = np.fromfile(preds / "sequences/11/predictions/000000.label", dtype=np.uint32)
    assert labels.size > 0
    assert not (run / "eval_test.json").exists()      # nothing scored, nothing saved as if scored


def test_failed_export_keeps_the_previous_predictions(run, tmp_path, monkeypatch):
    preds = tmp_path / "preds"
    inference.run_eval(run, predictions_out=preds, device="cpu")
    files = sorted((preds / "sequences/08/predictions").glob("*.label"))
    before = {f.name: f.read_bytes() for f in files}
    assert len(before) == 2
    real = inference.predict_scan
    calls = {"n": 0}

    def other_model_then_crash(model, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated) on the second scan")
        return np.zeros_like(real(model, *args, **kwargs)) + 1   # a different "model": all class 1

    monkeypatch.setattr(inference, "predict_scan", other_model_then_crash)
    with pytest.raises(RuntimeError, match="simulated"):
        inference.run_eval(run, predictions_out=preds, device="cpu")
    after = {f.name: f.read_bytes() for f in sorted((preds / "sequences/08/predictions").glob("*.label"))}
    assert after == before                              # no blend of two models
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds"]   # no temp folder left


def test_predictions_out_must_be_a_free_folder(run, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["eval", "--run", str(run), "--device", "cpu", "--predictions-out", str(f)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("keep me")
    assert main(["eval", "--run", str(run), "--device", "cpu", "--predictions-out", str(tmp_path / "home")]) == 2
    assert (tmp_path / "home" / "notes.txt").read_text() == "keep me"


def test_dead_partial_export_folder_is_cleaned(run, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()                                          # its pid is now free: a killed export's signature
    orphan = tmp_path / f".preds.partial-{dead.pid}"
    (orphan / "sequences").mkdir(parents=True)
    inference.run_eval(run, predictions_out=tmp_path / "preds", device="cpu")
    assert not orphan.exists() and (tmp_path / "preds" / "sequences" / "08").is_dir()
