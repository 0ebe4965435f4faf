"""``harness check`` must never pass falsely (issue 11): each test reproduces one way it used to say PASS / exit 0.

Fabricated run stores (tests/report/conftest.py); the paper values are Table 1's (see test_tables_check_figures.py).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.reproduce.plan import build_plan
from harness.config.experiment import load_experiment, load_profile
from harness.report.collect import all_runs

from .conftest import fabricate, fabricate_plan
from .test_tables_check_figures import MINK_OURS, SPV_OURS

ALL = {**SPV_OURS, **MINK_OURS}


def plan_for(table: str, profile: Path):
    return build_plan([load_experiment(table)], load_profile(profile), seeds=[0])


def check(profile: Path | None, *extra: str) -> int:
    return main(["check", "--table", "table1", *(["--profile", str(profile)] if profile else []), *extra])


def test_all_current_runs_pass(paper_profile, capsys):  # the baseline the failures below differ from by one run
    fabricate_plan(plan_for("table1", paper_profile), ALL)
    assert check(paper_profile) == 0
    assert "0 not compared" in capsys.readouterr().out


def test_one_demo_tagged_run_in_a_paper_folder_fails_and_is_named(paper_profile, capsys):
    plan = plan_for("table1", paper_profile)
    fabricate_plan(plan, ALL)
    fabricate(plan.lookup("table1", "spvcnn/kd", 0), 0.612, profile="demo")  # same hash, demo tag
    assert check(paper_profile) == 1
    out = capsys.readouterr().out
    assert "not applicable" not in out
    assert "table1:spvcnn/kd seed0" in out and "demo-profile run" in out
    assert "FAIL: 15 within tolerance, 0 outside, 1 missing" in out


def test_a_run_with_another_config_hash_is_stale_not_ok(paper_profile, capsys):
    plan = plan_for("table1", paper_profile)
    fabricate_plan(plan, ALL)
    fabricate(plan.lookup("table1", "minkunet/pvd", 0), 0.618, config_hash="0123456789abcdef")
    assert check(paper_profile) == 1
    out = capsys.readouterr().out
    assert "table1:minkunet/pvd seed0" in out and "stale: finished with config hash 0123456789abcdef" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("table1 ") and " minkunet/pvd " in ln)
    assert row.endswith("missing")          # not compared as if current
    # --allow-missing does not excuse a stale run
    assert check(paper_profile, "--allow-missing") == 1


def test_missing_runs_fail_unless_allowed(paper_profile, capsys):
    fabricate_plan(plan_for("table1", paper_profile), SPV_OURS)   # MinkUNet half missing
    assert check(paper_profile) == 1
    out = capsys.readouterr().out
    assert "FAIL: 8 within tolerance, 0 outside, 8 missing" in out
    assert "table1:minkunet/teacher" in out and "pass --allow-missing" in out
    assert check(paper_profile, "--allow-missing") == 0
    assert "PASS: 8 within tolerance, 0 outside, 8 missing" in capsys.readouterr().out


def test_default_profile_is_reproduces_not_the_demo_store(tmp_path, monkeypatch, capsys):
    """Dataset root set, no paper run finished, demo runs in the store: 'nothing to compare', exit 1."""
    monkeypatch.chdir(tmp_path)                     # the shipped profiles' output roots are relative: results/...
    demo = load_profile("demo")
    plan = build_plan([load_experiment("table1")], demo, seeds=[0])
    fabricate_plan(plan, ALL, profile="demo")
    assert list(Path("results/demo/runs").rglob("metrics.json"))
    monkeypatch.setenv("SEMANTICKITTI_ROOT", str(tmp_path / "kitti"))
    assert check(None) == 1
    out = capsys.readouterr().out
    assert "profile paper" in out and "nothing to compare" in out and "not applicable" not in out
    # without the dataset root, reproduce would pick the demo profile: not applicable, exit 0, and it says why
    monkeypatch.delenv("SEMANTICKITTI_ROOT")
    assert check(None) == 0
    assert "not applicable: profile demo" in capsys.readouterr().out


def test_explicit_demo_profile_is_not_applicable(demo_profile, capsys):
    assert check(demo_profile) == 0
    assert "not applicable" in capsys.readouterr().out


def test_replaced_folders_are_history_not_results(paper_profile):
    plan = plan_for("table1", paper_profile)
    kd = plan.lookup("table1", "spvcnn/kd", 0)
    fabricate(kd, 0.6, coefficients={"kd": 0.1})
    shutil.move(str(kd.run_dir), str(kd.run_dir.with_name("seed0.replaced-0123456789abcdef")))
    fabricate(plan.lookup("table1", "minkunet/kd", 0), 0.6, coefficients={"kd": 0.2})
    found = all_runs(plan.profile.output_root)
    assert [Path(m["_run_dir"]).name for m in found] == ["seed0"]
    assert found[0]["backbone"] == "minkunet"


@pytest.mark.parametrize("payload, problem", [
    ([0.5], "expected a JSON object, got a list"),
    ("IOU", "expected a JSON object, got a str"),
    ({"miou": 0.6, "iou_per_class": {"car": "high"}, "config_hash": "x"}, "iou_per_class['car'] is 'high', not a number"),
    ({"miou": "0.6", "config_hash": "x"}, "miou is '0.6', not a number"),
])
def test_malformed_metrics_is_one_clear_error(paper_profile, capsys, payload, problem):
    plan = plan_for("table1", paper_profile)
    fabricate_plan(plan, ALL)
    path = plan.lookup("table1", "spvcnn/cd", 0).run_dir / "metrics.json"
    if isinstance(payload, dict):
        payload = {**json.loads(path.read_text()), **payload}
    path.write_text(json.dumps(payload))
    assert check(paper_profile) == 2
    err = capsys.readouterr().err
    assert str(path) in err and problem in err and "Fix:" in err
    assert main(["tables", "--table", "table1", "--profile", str(paper_profile)]) == 2
    assert str(path) in capsys.readouterr().err
