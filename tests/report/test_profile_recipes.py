"""Profile keys ``recipes:`` (per-recipe overrides) and ``seeds:`` (default seeds per run)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import InputError
from harness.reproduce.plan import build_plan
from harness.reproduce.spec import load_experiment, load_profile


def _epochs(plan, run_id: str, seed: int = 0) -> int:
    return plan.lookup("table1", run_id, seed).tree["train"]["epochs"]


@pytest.mark.parametrize("profile", ["demo", "cpu-bench"])
def test_recipes_block_sets_teacher_and_student_schedules(profile):
    prof = load_profile(profile)
    plan = build_plan([load_experiment("table1")], prof, seeds=[0])
    for backbone in ("spvcnn", "minkunet"):
        teacher = prof.recipes[backbone]["train.epochs"]
        student = prof.recipes[f"{backbone}_student"]["train.epochs"]
        assert student < teacher
        assert _epochs(plan, f"{backbone}/teacher") == teacher
        for method in ("student", "kd", "pvd"):   # plain and distilled students share the student schedule
            assert _epochs(plan, f"{backbone}/{method}") == student
        tree = plan.lookup("table1", f"{backbone}/pvd", 0).tree
        assert (tree["optim"]["name"], tree["train"]["global_batch_size"]) == ("adam", 1)


def test_paper_profile_keeps_the_recipes():
    plan = build_plan([load_experiment("table1")], load_profile("paper"), seeds=[0])
    assert _epochs(plan, "minkunet/teacher") == _epochs(plan, "minkunet/student") == 15
    assert plan.lookup("table1", "spvcnn/kd", 0).tree["optim"]["lr"] == 0.24


def test_profile_seeds_is_the_default_of_reproduce(capsys):
    assert load_profile("cpu-bench").seeds == 3 and load_profile("demo").seeds == 1
    assert main(["reproduce", "table1", "--profile", "cpu-bench", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\b48 runs\b", out), out[-400:]          # 16 runs x 3 seeds
    assert main(["reproduce", "table1", "--profile", "cpu-bench", "--seeds", "1", "--dry-run"]) == 0
    assert re.search(r"\b16 runs\b", capsys.readouterr().out)


@pytest.mark.parametrize("text, match", [
    ("seeds: 0\n", "seeds: 0"),
    ("seeds: two\n", "seeds: 'two'"),
    ("recipes: {minkunet_teacher: {train.epochs: 2}}\n", r"unknown recipe\(s\) \['minkunet_teacher'\]"),
    ("recipes: {minkunet: 3}\n", "recipes: must map names to mappings"),
])
def test_bad_profile_keys_are_named(tmp_path: Path, text: str, match: str):
    path = tmp_path / "p.yaml"
    path.write_text("profile: p\noutput_root: o\ntables_dir: t\nfigures_dir: f\nlogs_dir: l\n" + text)
    with pytest.raises(InputError, match=match):
        load_profile(path)
