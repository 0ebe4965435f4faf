"""Checkpoints record which network their weights belong to; loading checks it (issue 11).

SPVCNN and MinkUNet share every parameter name and shape (the official layouts keep MinkUNet's unused point
transforms), so a strict ``load_state_dict`` alone accepts SPVCNN weights in a MinkUNet: the test shows that first.
"""
from __future__ import annotations

import pytest
import torch

from harness.cli import main
from harness.config.load import load_config
from harness.config.schema import ModelConfig
from harness.engine.checkpoint import load_checkpoint, load_model_weights, model_identity, save_checkpoint
from harness.engine.trainer import build_model, load_teacher
from harness.errors import InputError


def models():
    spv, mink = ModelConfig(backbone="spvcnn", width=0.5), ModelConfig(backbone="minkunet", width=0.5)
    return (spv, build_model(spv)), (mink, build_model(mink))


def test_spvcnn_weights_are_refused_by_a_minkunet_config(tmp_path):
    (spv_cfg, spv), (mink_cfg, mink) = models()
    mink.load_state_dict(spv.state_dict(), strict=True)      # what made the mix-up silent
    path = tmp_path / "spv.pt"
    save_checkpoint(path, model=spv.state_dict(), **model_identity(spv_cfg, "semantickitti"))
    with pytest.raises(InputError, match="holds backbone 'spvcnn' weights, the config asks for 'minkunet'"):
        load_model_weights(mink, path, model_identity(mink_cfg, "semantickitti"))
    load_model_weights(spv, path, model_identity(spv_cfg, "semantickitti"))    # its own config loads
    with pytest.raises(InputError, match="holds width 0.5 weights, the config asks for 1.0"):
        load_model_weights(spv, path, model_identity(ModelConfig(backbone="spvcnn", width=1.0), "semantickitti"))


def test_directory_and_foreign_checkpoints_are_named(tmp_path):
    (_, spv), _ = models()
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(InputError, match="dir.pt: is a directory, not a checkpoint file"):
        load_checkpoint(tmp_path / "dir.pt")
    torch.save({"epoch": 3}, tmp_path / "nomodel.pt")
    with pytest.raises(InputError, match="nomodel.pt: weights do not fit the model"):
        load_model_weights(spv, tmp_path / "nomodel.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(InputError, match="list.pt: holds a list, not a mapping"):
        load_checkpoint(tmp_path / "list.pt")


def test_eval_with_a_directory_checkpoint_exits_2(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints" / "last.pt").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {backbone: minkunet, width: 0.5}\ndata: {root: /nonexistent}\n")
    assert main(["eval", "--run", str(run)]) == 2
    assert "is a directory, not a checkpoint file" in capsys.readouterr().err


def test_unfinished_teacher_run_is_refused(tmp_path):
    teacher = tmp_path / "teacher"
    (teacher / "checkpoints").mkdir(parents=True)
    (teacher / "config.yaml").write_text("model: {backbone: minkunet}\ndata: {root: /nonexistent}\n")
    (teacher / "checkpoints" / "last.pt").write_bytes(b"")
    cfg = load_config(None, ["model.backbone=minkunet", "model.width=0.5", "distill.method=kd",
                             f"distill.teacher_run={teacher}"])
    with pytest.raises(InputError, match="the teacher run is unfinished \\(no metrics.json\\)"):
        load_teacher(cfg, torch.device("cpu"))
    (teacher / "metrics.json").write_text("{}")
    (teacher / "config.yaml").write_text("model: {backbone: spvcnn}\ndata: {root: /nonexistent}\n")
    with pytest.raises(InputError, match="the teacher is a spvcnn backbone, this student a minkunet one"):
        load_teacher(cfg, torch.device("cpu"))


def test_resume_from_a_checkpoint_without_rng_or_optimizer_is_named(tmp_path):
    from types import SimpleNamespace

    from harness.engine.trainer import Trainer
    from harness.runs.store import RunStore

    fake = SimpleNamespace(store=RunStore(tmp_path))
    with pytest.raises(InputError, match=r"last.pt: not a resumable harness checkpoint \(lacks \['optimizer', .*'rng'\]\)"):
        Trainer._restore(fake, {"model": {}, "epoch": 0})
