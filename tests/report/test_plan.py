"""Planner and scheduler on fabricated run stores (no training: a fake ``harness train`` writes the run files)."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.errors import InputError
from harness.reproduce.execute import execute
from harness.reproduce.plan import build_plan, inspect_run
from harness.config.experiment import available, load_experiment, load_profile, EXPERIMENT_DIR, RECIPE_DIR

from .conftest import fabricate


def _recipe_backbone(recipe: str) -> str:
    """``model.backbone`` of a recipe, following its ``base:`` chain (read with plain YAML, not the config loader)."""
    data = yaml.safe_load((RECIPE_DIR / f"{recipe}.yaml").read_text())
    backbone = (data.get("model") or {}).get("backbone")
    if backbone is None and data.get("base"):
        return _recipe_backbone(Path(data["base"]).stem)
    return backbone


def distinct_run_folders() -> set[tuple[str, str, str]]:
    """(dataset, backbone, run name) of every run of every experiment file: the run store's folder identity."""
    out = set()
    for path in sorted(EXPERIMENT_DIR.glob("*.yaml")):
        exp = yaml.safe_load(path.read_text())
        for run in exp["runs"]:
            out.add((run.get("dataset", exp.get("dataset", "semantickitti")), _recipe_backbone(run["recipe"]), run["name"]))
    return out



@pytest.mark.parametrize("profile", ["paper", "demo"])
def test_every_experiment_plans_and_validates_against_the_code(profile):
    exps = [load_experiment(t) for t in available(EXPERIMENT_DIR)]
    assert {e.table for e in exps} >= {"table1", "table2", "table3", "table4", "main"}
    plan = build_plan(exps, load_profile(profile), seeds=[0, 1])
    keys = [r.key for r in plan.runs]
    assert len(keys) == len(set(keys))
    # shared runs are planned once: main's PVD run is Table 2's last row, the teachers are shared too
    assert plan.lookup("main", "semantickitti/pvd", 0).key == plan.lookup("table2", "r6", 0).key
    assert plan.lookup("table3", "none", 1).key == plan.lookup("main", "semantickitti/student", 1).key
    by_key = plan.by_key()
    # one planned run per distinct run folder (dataset, backbone, name) per seed, counted from the experiment
    # YAML files themselves (table2 and table3 reuse main's teacher, student and pvd runs)
    assert len(plan.runs) == 2 * len(distinct_run_folders())
    assert len(distinct_run_folders()) >= 16 + 6 + 5 + 4 + 3
    for i, run in enumerate(plan.runs):
        if run.teacher:
            assert keys.index(run.teacher) < i, f"{run.display} is planned before its teacher"
            assert by_key[run.teacher].seed == run.seed
            assert f"distill.teacher_run={run.teacher}" in run.overrides
    t1 = plan.lookup("table1", "spvcnn/pvd", 0)
    assert (t1.backbone, t1.dataset, t1.method) == ("spvcnn", "semantickitti", "pvd")
    assert "model.width" not in " ".join(t1.overrides)  # the width comes from the recipe


def test_bad_experiment_fails_before_anything_trains(tmp_path, paper_profile):
    bad = tmp_path / "bad.yaml"
    bad.write_text("table: bad\nruns:\n  - {id: a, recipe: minkunet, name: a, overrides: {train.epoch: 3}}\n")
    with pytest.raises(InputError, match="train.epoch.*Did you mean: epochs"):
        build_plan([load_experiment(bad)], load_profile(paper_profile))
    bad.write_text("table: bad\nruns:\n  - {id: t, recipe: minkunet, name: t}\n"
                   "  - {id: s, recipe: minkunet_student, name: s, teacher: t, overrides: {distill.method: pvd, "
                   "distill.coefficients: {alpha1: 0.1}}}\n")
    with pytest.raises(InputError, match="unknown pvd coefficient"):
        build_plan([load_experiment(bad)], load_profile(paper_profile))
    bad.write_text("table: bad\nruns:\n  - {id: s, recipe: minkunet_student, name: s, teacher: nobody}\n")
    with pytest.raises(InputError, match="teacher 'nobody'"):
        load_experiment(bad)
    assert main(["reproduce", "table9", "--dry-run"]) == 2  # no such experiment: named, exit 2


def test_states_of_fabricated_run_store(paper_profile):
    exp = load_experiment("table1")
    prof = load_profile(paper_profile)
    plan = build_plan([exp], prof)
    assert all(r.status == "new" for r in plan.runs)
    fabricate(plan.lookup("table1", "spvcnn/teacher", 0), 0.6)                          # same hash: done
    fabricate(plan.lookup("table1", "spvcnn/student", 0), 0.6, config_hash="0" * 16)    # other hash: stale
    resume = plan.lookup("table1", "spvcnn/kd", 0).run_dir
    (resume / "checkpoints").mkdir(parents=True)
    (resume / "config.yaml").write_text(f"# config_hash: {plan.lookup('table1', 'spvcnn/kd', 0).config_hash}\n")
    (resume / "checkpoints" / "last.pt").write_bytes(b"x")
    restart = plan.lookup("table1", "spvcnn/cd", 0).run_dir
    restart.mkdir(parents=True)
    (restart / "config.yaml").write_text(f"# config_hash: {plan.lookup('table1', 'spvcnn/cd', 0).config_hash}\n")
    plan = build_plan([exp], prof)
    status = {r.spec.id: r.status for r in plan.runs}
    assert status["spvcnn/teacher"] == "done"
    assert status["spvcnn/student"] == "stale"
    assert status["spvcnn/kd"] == "resume"
    assert status["spvcnn/cd"] == "restart"
    assert status["minkunet/pvd"] == "new"
    kd = plan.lookup("table1", "spvcnn/kd", 0)
    assert kd.train_command("python")[-1] == "--resume"
    assert plan.counts() == {"done": 1, "stale": 1, "resume": 1, "restart": 1, "new": 12}


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, paper_profile, capsys):
    rc = main(["reproduce", "table1", "--profile", str(paper_profile), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "16 runs: 0 done (skipped), 16 to train" in out and "dry run: nothing" in out
    assert out.index("table1:spvcnn/teacher") < out.index("table1:spvcnn/kd")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tables").exists()


def test_demo_dry_run_is_the_default_without_dataset_roots(monkeypatch, capsys):
    monkeypatch.delenv("SEMANTICKITTI_ROOT", raising=False)
    assert main(["reproduce", "table1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "profile demo" in out and "NOT comparable to the paper" in out
    assert "results/demo/runs/semantickitti/minkunet/teacher/seed0" in out


FAKE_TRAIN = '''#!{python}
"""Stands in for `python -m harness train`: writes a finished run for the planned folder, or fails."""
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
assert args[:3] == ["-m", "harness", "train"], args
config = args[args.index("--config") + 1]
ov = dict(a.split("=", 1) for a in args if "=" in a)
table = json.loads(Path(os.environ["FAKE_PLAN"]).read_text())
run_dir, digest = table["|".join([config, ov["name"], ov["train.seed"]])]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps([ov["name"], run_dir, "--resume" in args]) + "\\n")
if ov["name"] in os.environ.get("FAKE_FAIL", "").split(","):
    print("Traceback: boom", file=sys.stderr)
    sys.exit(3)
d = Path(run_dir)
d.mkdir(parents=True, exist_ok=True)
(d / "config.yaml").write_text("# config_hash: %s\\n" % digest)
(d / "metrics.json").write_text(json.dumps({{"config_hash": digest, "miou": 0.5, "profile": "paper"}}))
'''


def test_scheduler_isolates_a_failure_and_rerun_finishes_the_rest(tmp_path, paper_profile, monkeypatch):
    exp = load_experiment("table1")
    prof = load_profile(paper_profile)
    plan = build_plan([exp], prof)
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    table = {"|".join([str(r.spec.recipe_path), r.spec.name, str(r.seed)]): [str(r.run_dir), r.config_hash] for r in plan.runs}
    (tmp_path / "plan.json").write_text(json.dumps(table))
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_PLAN", str(tmp_path / "plan.json"))
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_FAIL", "teacher")  # both teachers are named "teacher": fail the first one only below
    # fail only SPVCNN's teacher: give MinkUNet's teacher a finished run already
    fabricate(plan.lookup("table1", "minkunet/teacher", 0), 0.6)
    plan = build_plan([exp], prof)
    messages: list[str] = []
    outcomes = execute(plan, jobs=2, python=str(fake), echo=messages.append, heartbeat_s=1e9)
    status = {o.display.split(":", 1)[1]: o.status for o in outcomes}
    assert status["spvcnn/teacher"] == "failed"
    assert all(status[f"spvcnn/{m}"] == "blocked" for m in ("kd", "cd", "ifv", "skd", "ka", "pvd"))
    assert status["spvcnn/student"] == "done"            # does not depend on the failed teacher
    assert status["minkunet/teacher"] == "skipped"
    assert all(status[f"minkunet/{m}"] == "done" for m in ("student", "kd", "cd", "ifv", "skd", "ka", "pvd"))
    assert any("[FAILED]" in m and "boom" in m for m in messages)
    log = Path(prof.logs_dir) / "semantickitti" / "spvcnn" / "teacher" / "seed0.log"
    assert "boom" in log.read_text()
    # re-run: only the failed teacher and its students train; nothing finished is touched
    monkeypatch.setenv("FAKE_FAIL", "")
    calls.write_text("")
    plan = build_plan([exp], prof)
    assert plan.counts()["done"] == 9
    outcomes = execute(plan, jobs=2, python=str(fake), echo=messages.append, heartbeat_s=1e9)
    trained = [json.loads(line)[0] for line in calls.read_text().splitlines()]
    assert sorted(trained) == sorted(["teacher", "student_kd", "student_cd", "student_ifv", "student_skd", "student_ka", "student_pvd"])
    assert trained[0] == "teacher"
    assert {o.status for o in outcomes} == {"done", "skipped"}
    # a third run trains nothing
    calls.write_text("")
    outcomes = execute(build_plan([exp], prof), jobs=2, python=str(fake), echo=messages.append)
    assert calls.read_text() == "" and {o.status for o in outcomes} == {"skipped"}


def test_restart_and_stale_handling(tmp_path, paper_profile, monkeypatch):
    from harness.reproduce.execute import prepare_folder

    exp = load_experiment("table1")
    plan = build_plan([exp], load_profile(paper_profile))
    run = plan.lookup("table1", "minkunet/student", 0)
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.yaml").write_text(f"# config_hash: {run.config_hash}\n")
    (run.run_dir / "train_log.jsonl").write_text("{}\n")
    assert inspect_run(run.run_dir, run.config_hash)[0] == "restart"
    assert prepare_folder(run, replace_stale=False, echo=print)
    assert not (run.run_dir / "config.yaml").exists() and run.status == "new"
    fabricate(run, 0.5, config_hash="f" * 16)
    assert not prepare_folder(run, replace_stale=False, echo=print)
    assert (run.run_dir / "metrics.json").is_file()          # never deleted
    assert prepare_folder(run, replace_stale=True, echo=print)
    moved = run.run_dir.with_name("seed0.replaced-" + "f" * 16)
    assert (moved / "metrics.json").is_file() and not run.run_dir.exists()


def test_students_of_a_retrained_teacher_are_stale(paper_profile):
    exp = load_experiment("table1")
    prof = load_profile(paper_profile)
    plan = build_plan([exp], prof)
    kd = fabricate(plan.lookup("table1", "minkunet/kd", 0), 0.5)
    assert {r.spec.id: r.status for r in build_plan([exp], prof).runs}["minkunet/kd"] == "stale"   # teacher not done
    teacher = fabricate(plan.lookup("table1", "minkunet/teacher", 0), 0.6)
    os.utime(teacher / "metrics.json", (1, 1))
    status = {r.spec.id: (r.status, r.detail) for r in build_plan([exp], prof).runs}
    assert status["minkunet/kd"][0] == "done"
    os.utime(kd / "metrics.json", (0, 0))     # the teacher finished after the student: retrained since
    status = {r.spec.id: (r.status, r.detail) for r in build_plan([exp], prof).runs}
    assert status["minkunet/kd"][0] == "stale" and "finished after it" in status["minkunet/kd"][1]


def test_store_lock_refuses_a_second_reproduce(tmp_path):
    from harness.reproduce.execute import store_lock

    with store_lock(tmp_path):
        with pytest.raises(InputError, match="another reproduce"):
            with store_lock(tmp_path):
                pass
    with store_lock(tmp_path):
        pass


def test_torchrun_command_for_several_gpus(paper_profile):
    plan = build_plan([load_experiment("table1")], load_profile(paper_profile))
    cmd = plan.runs[0].train_command("py", device="cuda", gpus=4)
    assert cmd[:6] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert cmd[6:9] == ["harness", "train", "--config"] and cmd[-2:] == ["--device", "cuda"]
    assert plan.runs[0].train_command("py")[:4] == ["py", "-m", "harness", "train"]


def test_runs_finished_before_a_schema_field_was_added_stay_done(paper_profile):
    """config_hash covers every schema field: a new field at its default must not force a retrain."""
    import yaml

    from harness.config.load import config_to_dict
    from harness.config.schema import RunConfig
    from harness.reproduce.plan import _flatten

    plan = build_plan([load_experiment("table1")], load_profile(paper_profile))
    run = plan.lookup("table1", "minkunet/kd", 0)
    defaults = _flatten(config_to_dict(RunConfig()))
    section, key = next(k for k, v in _flatten(run.tree).items() if k in defaults and defaults[k] == v
                        and "." in k and k.split(".")[0] in ("eval", "data")).split(".", 1)
    old_tree = yaml.safe_load(yaml.safe_dump(run.tree))
    del old_tree[section][key]                                   # the config as an older schema wrote it
    fabricate(run, 0.5, config_hash="0" * 16)
    (run.run_dir / "config.yaml").write_text("# config_hash: " + "0" * 16 + "\n" + yaml.safe_dump(old_tree))
    status, detail = inspect_run(run.run_dir, run.config_hash, run.tree)
    assert status == "done" and f"{section}.{key}" in detail
    old_tree["train"]["epochs"] = run.tree["train"]["epochs"] + 1   # a real difference: stale
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(old_tree))
    assert inspect_run(run.run_dir, run.config_hash, run.tree)[0] == "stale"
    assert inspect_run(run.run_dir, run.config_hash)[0] == "stale"


SLEEPY_TRAIN = '''#!{python}
import os, sys, time
with open(os.environ["FAKE_PIDS"], "a") as f:
    f.write(f"{{os.getpid()}}\\n")
time.sleep(60)
'''

DRIVER = '''
import sys
from harness.reproduce.execute import execute
from harness.reproduce.plan import build_plan
from harness.config.experiment import load_experiment, load_profile
plan = build_plan([load_experiment("table1")], load_profile(sys.argv[1]))
try:
    execute(plan, jobs=2, python=sys.argv[2], heartbeat_s=1e9)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    sys.exit(130)
'''


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_stopping_reproduce_stops_its_training_processes(tmp_path, paper_profile, how):
    """Ctrl-C / kill: the children stop too (SIGKILL of the parent reaches them through PR_SET_PDEATHSIG on Linux)."""
    import signal
    import subprocess
    import time

    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG and /proc are Linux-only")
    fake = tmp_path / "sleepy.py"
    fake.write_text(SLEEPY_TRAIN.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    pids = tmp_path / "pids"
    env = {**os.environ, "FAKE_PIDS": str(pids)}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(paper_profile), str(fake)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while (not pids.is_file() or len(pids.read_text().split()) < 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2                       # two runs at once (jobs=2): both teachers
    proc.send_signal(getattr(signal, how))
    out, _ = proc.communicate(timeout=60)
    if how == "SIGINT":
        assert proc.returncode == 130 and "INTERRUPTED" in out and "re-run the same command" in out

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split()[2] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 20
    while any(alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in children), "training subprocesses outlived reproduce"
