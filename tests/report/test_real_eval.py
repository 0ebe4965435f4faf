"""Teachers trained on generated data, scored on the real labelled scans (``harness real-eval`` and the cpu-bench
reproduce hook). One tiny plan is trained for real (MinkUNet teacher + KD student, 1 epoch on 2 generated scans of
~800 points: ~30-60 s on a loaded 2-core CPU); the scores are then checked against counts computed here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.cli import main
from harness.data.labelmap import load_label_map
from harness.data.semantickitti import read_label_file, read_points, split_label
from harness.engine.data import nearest_points
from harness.reproduce.real_eval import MIN_POINTS, real_scans

REPO = Path(__file__).resolve().parents[2]
MAX_POINTS = 800


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_data):
    tmp = tmp_path_factory.mktemp("bench")
    exp = tmp / "tiny.yaml"
    exp.write_text(yaml.safe_dump({
        "table": "tiny", "title": "tiny", "kind": "methods", "dataset": "semantickitti", "groups": {"minkunet": "MinkUNet"},
        "runs": [{"id": "minkunet/teacher", "recipe": "minkunet", "name": "teacher", "label": "teacher"},
                 {"id": "minkunet/kd", "recipe": "minkunet_student", "name": "student_kd", "teacher": "minkunet/teacher",
                  "overrides": {"distill.method": "kd"}, "label": "+ KD"}]}, sort_keys=False))
    profile = tmp / "cpu-bench.yaml"
    profile.write_text(yaml.safe_dump({
        "profile": "cpu-bench", "output_root": str(tmp / "runs"), "tables_dir": str(tmp / "tables"),
        "figures_dir": str(tmp / "figures"), "logs_dir": str(tmp / "logs"), "data_dir": str(tmp / "data"),
        "gitignore": str(tmp), "device": "cpu", "jobs": 1, "threads_per_job": 1,
        "data": {"semantickitti": {"generate": {"format": "semantickitti", "scans": 2, "sequences": [0, 8], "seed": 3,
                                                "points_scale": 0.03},
                                   "overrides": {"data.train_sequences": [0], "data.val_sequences": [8],
                                                 "data.max_points": MAX_POINTS}}},
        "overrides": {"train.epochs": 1, "train.global_batch_size": 1, "optim.warmup_iters": 0}}, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PVKD_REAL_DATA": str(real_data)}
    run = subprocess.run([sys.executable, "-m", "harness", "reproduce", str(exp), "--profile", str(profile)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return tmp, exp, profile, run.stdout


@pytest.mark.slow
def test_reproduce_hook_scores_the_teacher_on_the_real_scans(trained, real_data):
    tmp, _, _, out = trained
    assert "[real-eval] tiny:minkunet/teacher seed0:" in out and "trained on generated data" in out
    result = json.loads((tmp / "tables" / "real_scans.json").read_text())
    assert result["label"] == "trained on generated data" and result["crop"] == "train"
    (t,) = result["teachers"]                                  # the teacher only, not the KD student
    assert t["run_id"] == "minkunet/teacher" and t["seed"] == 0
    # independent counts on the same crop: which classes are present, how many points are scored
    lm = load_label_map("semantickitti")
    scans = real_scans(real_data)
    assert len(scans) >= 2 and result["scans"] == [str(p.relative_to(real_data)) for p, _ in scans]
    present, scored = set(), 0
    for scan, label in scans:
        pts = read_points(scan)
        assert pts.shape[0] >= MIN_POINTS
        lab = lm.to_learning(split_label(read_label_file(label))[0])
        lab = lab[nearest_points(pts, lab, MAX_POINTS)]
        present |= {lm.class_names[c] for c in np.unique(lab) if c != 0}
        scored += int((lab != 0).sum())
    assert set(t["classes_present"]) == present and t["points"] == scored
    assert t["miou_present"] == pytest.approx(np.mean(list(t["iou"].values())), abs=1e-9)
    assert set(t["iou"]) == present and 0.0 <= t["miou_present"] <= 100.0
    md = (tmp / "tables" / "real_scans.md").read_text()
    assert "trained on generated data" in md and "tiny:minkunet/teacher" in md and "classes present" in md


@pytest.mark.slow
def test_real_eval_skips_visibly_and_is_up_to_date(trained, tmp_path, capsys, monkeypatch):
    tmp, exp, profile, _ = trained
    monkeypatch.setenv("PVKD_REAL_DATA", str(tmp_path / "nowhere"))
    before = (tmp / "tables" / "real_scans.json").read_text()
    assert main(["real-eval", "--table", str(exp), "--profile", str(profile)]) == 0
    assert "[real-eval] skipped: no real data at" in capsys.readouterr().out
    assert (tmp / "tables" / "real_scans.json").read_text() == before        # nothing overwritten by a skip
    assert main(["real-eval", "--table", str(exp), "--profile", str(profile), "--real", str(tmp_path / "x")]) == 2
    from harness.reproduce.cli import real_eval_step
    from harness.reproduce.plan import build_plan
    from harness.reproduce.spec import load_experiment, load_profile

    lines: list[str] = []
    plan = build_plan([load_experiment(exp)], load_profile(profile), discover_seeds=True)
    assert real_eval_step(plan, echo=lines.append) == [] and lines[0].startswith("[real-eval] up to date")
