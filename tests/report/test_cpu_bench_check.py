"""``harness check --profile cpu-bench``: expected values written from a finished store, then a re-run compared
with them under max(3σ, 1.5 points). Run stores are hand-built metrics.json files in tmp dirs."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.reproduce.plan import build_plan
from harness.reproduce.spec import load_experiment, load_profile

from .conftest import fabricate, write_profile

# (seed 0, 1, 2) mIoU fractions of the committed store
COMMITTED = {"spvcnn/teacher": [0.700, 0.705, 0.710],     # 70.5 ± 0.5: tolerance max(1.5, 1.5) = 1.5
             "minkunet/teacher": [0.600, 0.610, 0.620]}   # 61.0 ± 1.0: tolerance max(3.0, 1.5) = 3.0
BASE = 0.50                                               # every other run: 50.0, 50.1, 50.2 (std 0.1: tol 1.5)


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    return write_profile(tmp_path, "cpu-bench")


def fill(profile: Path, root: Path | None = None, shift: dict[str, float] | None = None, skip: tuple = ()) -> None:
    """Fabricate every table1 run for seeds 0-2 (``shift``: run id -> points added; ``skip``: runs left out)."""
    prof = load_profile(profile)
    if root is not None:
        prof = dataclasses.replace(prof, output_root=str(root))
    plan = build_plan([load_experiment("table1")], prof, seeds=[0, 1, 2])
    for spec in plan.experiments[0].runs:
        if spec.id in skip:
            continue
        values = COMMITTED.get(spec.id, [BASE, BASE + 0.001, BASE + 0.002])
        for seed, v in enumerate(values):
            fabricate(plan.lookup("table1", spec.id, seed), v + (shift or {}).get(spec.id, 0.0) / 100, profile="demo")


def check(profile: Path, *extra: str) -> int:
    return main(["check", "--table", "table1", "--profile", str(profile), *extra])


def test_write_expected_then_the_committed_store_passes(bench, tmp_path, capsys):
    fill(bench)
    assert check(bench, "--write-expected") == 0
    expected = json.loads((tmp_path / "expected.json").read_text())
    t = expected["runs"]["table1:spvcnn/teacher"]
    assert (t["role"], t["n"], t["mean"], t["std"], t["seeds"]) == ("teacher", 3, 70.5, 0.5, [0, 1, 2])
    assert expected["runs"]["table1:spvcnn/student"]["role"] == "student"
    assert expected["runs"]["table1:spvcnn/pvd"]["role"] == "distilled student"
    assert len(expected["runs"]) == 16
    capsys.readouterr()
    assert check(bench) == 0
    out = capsys.readouterr().out
    assert "PASS: compared 16 run(s): 16 within tolerance, 0 outside" in out
    assert "max(3 x expected seed std, 1.5)" in out and str(tmp_path / "expected.json") in out


def test_rerun_within_and_outside_max_3sigma_floor(bench, tmp_path, capsys):
    fill(bench)
    assert check(bench, "--write-expected") == 0
    rerun = tmp_path / "rerun"
    # spvcnn teacher +1.6 > 1.5 (3σ = 1.5): FAIL; minkunet teacher +2.0 < 3σ = 3.0: ok; plain student −1.4: ok;
    # KD −1.6: a drop beyond the floor fails too
    fill(bench, rerun, shift={"spvcnn/teacher": 1.6, "minkunet/teacher": 2.0, "spvcnn/student": -1.4, "spvcnn/kd": -1.6})
    capsys.readouterr()
    assert check(bench, "--store", str(rerun)) == 1
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("table1:spvcnn/teacher"))
    assert row.split()[-1] == "FAIL" and "+1.6" in row and "70.5 ± 0.5 (3)" in row
    assert next(ln for ln in out.splitlines() if ln.startswith("table1:minkunet/teacher")).split()[-1] == "ok"
    assert next(ln for ln in out.splitlines() if ln.startswith("table1:spvcnn/student")).split()[-1] == "ok"
    assert next(ln for ln in out.splitlines() if ln.startswith("table1:spvcnn/kd")).split()[-1] == "FAIL"
    assert "FAIL: compared 16 run(s): 14 within tolerance, 2 outside" in out
    fill(bench, rerun, shift={"spvcnn/teacher": 1.4, "minkunet/teacher": -2.9})
    assert check(bench, "--store", str(rerun)) == 0


def test_missing_runs_and_missing_expected_values(bench, tmp_path, capsys):
    fill(bench)
    assert check(bench) == 2                                       # no expected.json yet: named, exit 2
    assert "expected.json" in capsys.readouterr().err
    assert check(bench, "--write-expected") == 0
    rerun = tmp_path / "rerun"
    fill(bench, rerun, skip=("minkunet/pvd",))
    capsys.readouterr()
    assert check(bench, "--store", str(rerun)) == 1
    out = capsys.readouterr().out
    assert next(ln for ln in out.splitlines() if ln.startswith("table1:minkunet/pvd")).split()[-1] == "missing"
    assert check(bench, "--store", str(rerun), "--allow-missing") == 0
    shutil.rmtree(rerun)
    rerun.mkdir()
    assert check(bench, "--store", str(rerun), "--allow-missing") == 1  # nothing compared
    assert "nothing compared" in capsys.readouterr().out


def test_write_expected_refuses_an_unfinished_store(bench, tmp_path, capsys):
    fill(bench, skip=("spvcnn/kd",))
    assert check(bench, "--write-expected") == 2
    assert "table1:spvcnn/kd" in capsys.readouterr().err and not (tmp_path / "expected.json").exists()


def test_changed_settings_are_not_compared_as_a_rerun(bench, tmp_path, capsys):
    fill(bench)
    assert check(bench, "--write-expected") == 0
    path = tmp_path / "expected.json"
    data = json.loads(path.read_text())
    data["runs"]["table1:spvcnn/kd"]["settings_hashes"] = ["0" * 16]   # measured with other settings
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert check(bench) == 1
    assert "config changed" in capsys.readouterr().out


def test_other_profiles_refuse_write_expected(paper_profile):
    assert main(["check", "--table", "table1", "--profile", str(paper_profile), "--write-expected"]) == 2


def test_seed_count_from_the_flag_then_the_profile(bench):
    from harness.errors import InputError
    from harness.reproduce.cli import seed_count

    prof = load_profile(bench)
    assert seed_count(None, prof) == 1                   # no seeds: key (yet): one seed
    assert seed_count(2, prof) == 2
    object.__setattr__(prof, "seeds", 3)                 # what a profile's `seeds: 3` sets
    assert seed_count(None, prof) == 3 and seed_count(1, prof) == 1
    for bad in (0, -1):
        with pytest.raises(InputError):
            seed_count(bad, prof)
    object.__setattr__(prof, "seeds", "3")
    with pytest.raises(InputError, match="seeds"):
        seed_count(None, prof)


def test_reproduce_dry_run_plans_the_profile_seeds(bench, capsys, monkeypatch):
    import harness.reproduce.cli as cli

    real = cli.load_profile

    def with_seeds(name, directory=None):
        prof = real(name, directory)
        object.__setattr__(prof, "seeds", 3)
        return prof

    monkeypatch.setattr(cli, "load_profile", with_seeds)
    assert main(["reproduce", "table1", "--profile", str(bench), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "48 runs:" in out                              # 16 runs x seeds 0, 1, 2
    assert main(["reproduce", "table1", "--profile", str(bench), "--dry-run", "--seeds", "1"]) == 0
    assert "16 runs:" in capsys.readouterr().out
