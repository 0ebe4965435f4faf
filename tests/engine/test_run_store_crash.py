"""Crash-safe run store (issue 11): torn log lines, duplicate steps, the per-run lock, orphan temp files, file modes.

The integration test interrupts a real training run at its first checkpoint write (what ``kill -9`` there
leaves: a log with steps, an orphan ``.last.pt.*.tmp``, no checkpoint) plus a torn last log line (a full disk),
and checks that ``--resume`` drops the torn line, removes the orphan and logs every step exactly once.
"""
from __future__ import annotations

import json
import os
import stat

import pytest

from harness.config.load import load_config
from harness.engine import trainer as trainer_mod
from harness.engine.trainer import Trainer
from harness.errors import InputError
from harness.io import write_text_atomic
from harness.runs.store import RunStore, run_dir_for
from tests.engine.conftest import overrides

RECIPE = "harness/configs/recipes/minkunet_student.yaml"


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_torn_last_line_is_dropped_with_a_note(tmp_path, capsys):
    store = RunStore(tmp_path)
    for step in (1, 2, 3):
        store.append_log({"step": step, "total": 1.0})
    with open(tmp_path / "train_log.jsonl", "ab") as f:
        f.write(b'{"step": 4, "to')          # disk full mid-line
    store.truncate_log(2)
    assert [r["step"] for r in lines(tmp_path / "train_log.jsonl")] == [1, 2]
    assert "dropped a torn last line (15 bytes)" in capsys.readouterr().err
    store.truncate_log(0)                     # a fresh start empties the log
    assert (tmp_path / "train_log.jsonl").read_text() == ""


def test_a_broken_line_inside_the_log_is_named(tmp_path):
    (tmp_path / "train_log.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(InputError, match="train_log.jsonl: line 2 is not JSON"):
        RunStore(tmp_path).truncate_log(5)


def test_atomic_writes_get_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        os.umask(0o027)
        write_text_atomic(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o640


def cfg_for(root, out, name="r", **extra):
    return load_config(RECIPE, overrides(root, out, name, train__epochs=2, train__checkpoint_steps=1,
                                         data__max_scans=3, **extra))


def test_one_trainer_per_run(tmp_path):
    cfg = load_config(None, [f"output_root={tmp_path}", "name=locked", "data.root=/nonexistent"])
    first, second = RunStore(run_dir_for(cfg)), RunStore(run_dir_for(cfg))
    first.prepare(cfg, resume=False, world_size=1, device="cpu")
    with pytest.raises(InputError, match="another harness train is running on this run"):
        second.prepare(cfg, resume=True, world_size=1, device="cpu")
    assert (first.path / "config.yaml").is_file()   # the refused second call removed nothing of the first's
    first.release()
    second.prepare(cfg, resume=True, world_size=1, device="cpu")
    second.release()


def test_refused_fresh_run_leaves_no_folder(tmp_path, monkeypatch):
    cfg = load_config(None, [f"output_root={tmp_path}", "name=fresh", "data.root=/nonexistent"])
    store = RunStore(run_dir_for(cfg))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("harness.runs.store.environment", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.prepare(cfg, resume=False, world_size=1, device="cpu")
    assert not store.path.exists()
    monkeypatch.undo()
    store.path.mkdir(parents=True)
    (store.path / "metrics.json").write_text('{"config_hash": "x"}')
    with pytest.raises(InputError, match="run already finished"):
        store.prepare(cfg, resume=False, world_size=1, device="cpu")
    assert sorted(p.name for p in store.path.iterdir()) == ["metrics.json"]   # an existing folder is never removed


def test_resume_after_a_kill_in_the_first_checkpoint_write_and_a_torn_line(tiny_kitti, tmp_path, monkeypatch, capsys):
    cfg = cfg_for(tiny_kitti, tmp_path)
    real_save = trainer_mod.save_checkpoint

    def killed_mid_write(path, **entries):
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / ".last.pt.abc123.tmp").write_bytes(b"\0" * 4096)   # what the torch.save had written so far
        raise KeyboardInterrupt                                            # the process dies here

    monkeypatch.setattr(trainer_mod, "save_checkpoint", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, device="cpu").fit()
    run = run_dir_for(cfg)
    assert [r["step"] for r in lines(run / "train_log.jsonl")] == [1]
    assert not (run / "checkpoints" / "last.pt").exists()
    with open(run / "train_log.jsonl", "ab") as f:
        f.write(b'{"epoch": 0, "step": 2, "seg.vox')          # torn by a full disk
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real_save)
    metrics = Trainer(cfg, resume=True, device="cpu").fit()
    err = capsys.readouterr().err
    assert "dropped a torn last line" in err and ".last.pt.abc123.tmp" in err
    log = lines(run / "train_log.jsonl")
    assert [r["step"] for r in log if "total" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in log if "val_miou" in r] == [3, 6]  # one validation per epoch, none twice
    assert metrics["global_steps"] == 6
    assert not list((run / "checkpoints").glob("*.tmp"))
