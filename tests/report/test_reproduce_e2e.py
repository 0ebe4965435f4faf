"""End to end on a tiny plan: generated data -> teacher -> distilled student -> tables/figures; a re-run trains nothing.

Two MinkUNet runs of two steps each on 800-point scans (about 20-40 s on a loaded 2-core CPU). Kept in the
default suite (``slow`` only labels it).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_plan_trains_renders_and_rerun_is_a_no_op(tmp_path):
    exp = tmp_path / "tiny.yaml"
    exp.write_text(yaml.safe_dump({
        "table": "tiny", "title": "tiny end-to-end plan", "kind": "methods", "dataset": "semantickitti",
        "groups": {"minkunet": "MinkUNet"},
        "runs": [
            {"id": "minkunet/teacher", "recipe": "minkunet", "name": "teacher", "ref": "t1.minkunet.teacher", "label": "teacher"},
            {"id": "minkunet/kd", "recipe": "minkunet_student", "name": "student_kd", "teacher": "minkunet/teacher",
             "overrides": {"distill.method": "kd"}, "ref": "t1.minkunet.kd", "label": "+ KD"},
        ]}, sort_keys=False))
    profile = tmp_path / "tiny_profile.yaml"
    profile.write_text(yaml.safe_dump({
        "profile": "demo", "output_root": str(tmp_path / "runs"), "tables_dir": str(tmp_path / "tables"),
        "figures_dir": str(tmp_path / "figures"), "logs_dir": str(tmp_path / "logs"), "data_dir": str(tmp_path / "data"),
        "gitignore": str(tmp_path), "device": "cpu", "jobs": 1, "threads_per_job": 1,
        "data": {"semantickitti": {"generate": {"format": "semantickitti", "scans": 2, "sequences": [0, 8], "seed": 3,
                                                "points_scale": 0.03},
                                   "overrides": {"data.train_sequences": [0], "data.val_sequences": [8],
                                                 "data.max_points": 800}}},
        "overrides": {"train.epochs": 1, "train.global_batch_size": 1},
    }, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "harness", "reproduce", str(exp), "--profile", str(profile)]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "[data]    generating semantickitti" in first.stdout
    assert first.stdout.index("train  tiny:minkunet/teacher") < first.stdout.index("train  tiny:minkunet/kd")
    assert "2 done" in first.stdout and "DEMO PROFILE" in first.stdout
    assert (tmp_path / ".gitignore").read_text().strip().endswith("*")
    md = (tmp_path / "tables" / "tiny.md").read_text()
    assert "demo profile — not comparable to the paper" in md and "+ KD" in md
    assert (tmp_path / "figures" / "tiny_minkunet_per_class.png").stat().st_size > 0
    assert (tmp_path / "figures" / "tiny_minkunet_per_distance.pdf").stat().st_size > 0
    assert (tmp_path / "runs" / "semantickitti" / "minkunet" / "student_kd" / "seed0" / "metrics.json").is_file()

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "2 runs: 2 done (skipped), 0 to train" in again.stdout
    assert "train  " not in again.stdout and "generating" not in again.stdout

    check = subprocess.run([sys.executable, "-m", "harness", "check", "--table", str(exp), "--profile", str(profile)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "not applicable" in check.stdout
