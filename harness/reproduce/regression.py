"""``harness check --profile cpu-bench``: the harness's own CPU regression baseline.

The committed cpu-bench results are the expected values: ``--write-expected`` reads a finished run store and
writes ``<output_root>/../expected.json`` (``results/cpu-bench/expected.json``) with, per run, the mean and sample
std of mIoU over seeds and a hash of the settings it was trained with (:func:`settings_hash`). A later check reads the run store again (a re-run)
and compares every planned run's mean mIoU with the committed one::

    FAIL  when |mean_rerun − mean_expected| > max(K_SIGMA · σ_expected, FLOOR)      (mIoU points)

σ_expected = the committed sample std over seeds (ddof = 1; a committed run with one seed has no σ and gets the
floor). Teachers, plain students and distilled students are all compared (each row says which it is). A run
whose config hash differs from the committed one is a different experiment ("config changed": fail, re-write the
expected values on purpose); a run missing from the store fails unless ``--allow-missing``; a run of the plan that
is not in expected.json is reported and not compared.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InputError
from harness.reproduce.plan import Plan
from harness.report.collect import RunResult, summarize

# Profiles with a committed regression baseline (they are never compared with the paper).
REGRESSION_PROFILES = ("cpu-bench",)
K_SIGMA = 3.0       # allowed drift in committed seed std's
FLOOR = 1.5         # ... but never less than this many mIoU points
EXPECTED_NAME = "expected.json"
SCHEMA = 1


def expected_path(plan: Plan) -> Path:
    """``results/<profile>/expected.json``: next to the run store, outside it (a re-run never overwrites it)."""
    return Path(plan.profile.output_root).parent / EXPECTED_NAME


def settings_hash(plan: Plan, table: str, run_id: str, seed: int) -> str | None:
    """The planned run's config hash made independent of where the run store lives: ``output_root`` dropped and
    ``distill.teacher_run`` taken relative to it (the plain ``config_hash`` covers the teacher's absolute folder,
    so a re-run into another store would always look like a config change)."""
    import hashlib
    import os

    run = plan.lookup(table, run_id, seed)
    if run is None or not run.tree:
        return None
    tree = json.loads(json.dumps(run.tree, default=str))
    root = str(tree.pop("output_root", plan.profile.output_root))
    distill = tree.get("distill") or {}
    if distill.get("teacher_run"):
        distill["teacher_run"] = os.path.relpath(str(distill["teacher_run"]), root)
    tree.get("train", {}).pop("seed", None)          # one hash for every seed of a run
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def role(plan: Plan, table: str, run_id: str) -> str:
    exp = next(e for e in plan.experiments if e.table == table)
    spec = exp.run(run_id)
    if any(r.teacher == run_id for r in exp.runs):
        return "teacher"
    return "distilled student" if spec.teacher else "student"


def _key(table: str, run_id: str) -> str:
    return f"{table}:{run_id}"


def write_expected(plan: Plan, results: list[RunResult], path: Path | None = None) -> Path:
    """Write expected.json from a finished store: every planned run finished with the plan's config, >= 1 seed."""
    path = path or expected_path(plan)
    stale = [f"{r.table}:{r.run_id} seed{r.seed}" for r in results if not r.current]
    if stale:
        raise InputError(plan.profile.output_root, f"{len(stale)} run(s) finished with another config: {', '.join(stale[:5])}",
                         "re-run reproduce (--replace-stale) before writing the expected values")
    summaries = summarize(results)
    runs, missing = {}, []
    for exp in plan.experiments:
        for spec in exp.runs:
            s = summaries.get((exp.table, spec.id))
            if s is None or s.miou_mean is None:
                missing.append(_key(exp.table, spec.id))
                continue
            rs = sorted((r for r in results if r.table == exp.table and r.run_id == spec.id), key=lambda r: r.seed)
            hashes = sorted({h for r in rs if (h := settings_hash(plan, exp.table, spec.id, r.seed))})
            runs[_key(exp.table, spec.id)] = {
                "label": spec.label, "role": role(plan, exp.table, spec.id), "n": s.n,
                "mean": round(s.miou_mean, 4), "std": None if s.miou_std is None else round(s.miou_std, 4),
                "seeds": [r.seed for r in rs], "values": [round(r.miou, 4) for r in rs if r.miou is not None],
                "settings_hashes": hashes}
    if missing:
        raise InputError(plan.profile.output_root, f"{len(missing)} planned run(s) have no finished current run: "
                         f"{', '.join(missing[:5])}", "finish the reproduce run first (it resumes where it stopped)")
    data = {"schema": SCHEMA, "profile": plan.profile.name, "unit": "mIoU %",
            "rule": f"fail when |rerun mean - expected mean| > max({K_SIGMA:g} * expected std, {FLOOR:g}) points",
            "tables": [e.table for e in plan.experiments], "runs": runs}
    from harness.io import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)
    return path


def read_expected(path: Path) -> dict:
    fix = "write it from a finished run store: harness check --profile cpu-bench --write-expected"
    if not path.is_file():
        raise InputError(path, "no committed expected values", fix)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable ({err})", fix) from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
        raise InputError(path, "expected {runs: {table:run: {mean, std, ...}}}", fix)
    for key, row in data["runs"].items():
        if not isinstance(row, dict) or not isinstance(row.get("mean"), (int, float)) or isinstance(row.get("mean"), bool) \
                or not (row.get("std") is None or isinstance(row.get("std"), (int, float))):
            raise InputError(path, f"runs[{key!r}] needs a numeric mean and a numeric or null std", fix)
    return data


@dataclass
class Drift:
    key: str
    label: str
    role: str
    expected: float | None
    expected_std: float | None
    expected_n: int
    ours: float | None
    n: int
    status: str              # ok | FAIL | missing | config changed | stale | not in expected

    @property
    def tolerance(self) -> float:
        return max(K_SIGMA * (self.expected_std or 0.0), FLOOR)

    @property
    def delta(self) -> float | None:
        return None if self.ours is None or self.expected is None else self.ours - self.expected


def compare_expected(plan: Plan, results: list[RunResult], expected: dict) -> list[Drift]:
    summaries = summarize([r for r in results if r.current])
    out = []
    for exp in plan.experiments:
        for spec in exp.runs:
            key = _key(exp.table, spec.id)
            row = expected["runs"].get(key)
            rs = [r for r in results if r.table == exp.table and r.run_id == spec.id]
            s = summaries.get((exp.table, spec.id))
            ours = s.miou_mean if s else None
            d = Drift(key, spec.label, (row or {}).get("role") or role(plan, exp.table, spec.id),
                      None if row is None else float(row["mean"]),
                      None if row is None or row.get("std") is None else float(row["std"]),
                      0 if row is None else int(row.get("n") or 0), ours, s.n if s else 0, "ok")
            planned = {h for k in plan.seeds if (h := settings_hash(plan, exp.table, spec.id, k))}
            if row is None:
                d.status = "not in expected"
            elif any(not r.current for r in rs):
                d.status = "stale"
            elif row.get("settings_hashes") and not planned & set(row["settings_hashes"]):
                d.status = "config changed"
            elif ours is None:
                d.status = "missing"
            elif abs(d.delta) > d.tolerance + 1e-9:
                d.status = "FAIL"
            out.append(d)
    return out


def format_drifts(drifts: list[Drift], path: Path, store: str, allow_missing: bool) -> tuple[str, int]:
    """The report and its exit code (1 on any FAIL, config change, stale run, or missing run without
    ``allow_missing``; 1 also when nothing was compared)."""
    lines = [f"cpu-bench regression check: the run store {store} against the committed expected values {path}",
             f"rule: FAIL when |ours - expected| > max({K_SIGMA:g} x expected seed std, {FLOOR:g}) mIoU points "
             "(means over seeds)",
             f"{'run':<26} {'role':<17} {'expected':>14} {'ours':>7} {'n':>2} {'Δ':>6} {'tol':>5}  status"]
    for d in drifts:
        exp = "—" if d.expected is None else (f"{d.expected:.1f} ± {d.expected_std:.1f}" if d.expected_std is not None
                                              else f"{d.expected:.1f}") + f" ({d.expected_n})"
        ours = "—" if d.ours is None else f"{d.ours:.1f}"
        delta = "—" if d.delta is None else f"{d.delta:+.1f}"
        lines.append(f"{d.key:<26} {d.role:<17} {exp:>14} {ours:>7} {d.n:>2} {delta:>6} {d.tolerance:>5.1f}  {d.status}")
    counts = {s: sum(d.status == s for d in drifts) for s in ("ok", "FAIL", "missing", "config changed", "stale", "not in expected")}
    bad = counts["FAIL"] + counts["config changed"] + counts["stale"] + (0 if allow_missing else counts["missing"])
    compared = counts["ok"] + counts["FAIL"]
    lines.append("")
    if counts["config changed"]:
        lines.append("config changed: the run's settings differ from those the expected values were measured with; "
                     "if that is intended, re-run and write new values with --write-expected")
    if counts["missing"]:
        lines.append("missing: no finished run in the store" + (" (allowed by --allow-missing)" if allow_missing else
                                                                " (pass --allow-missing to accept)"))
    if not compared:
        lines.append(f"FAIL: nothing compared ({len(drifts)} planned run(s), none with a finished current run "
                     "and an expected value)")
        return "\n".join(lines), 1
    verdict = "FAIL" if bad else "PASS"
    extra = ", ".join(f"{v} {k}" for k, v in counts.items() if v and k not in ("ok", "FAIL"))
    lines.append(f"{verdict}: compared {compared} run(s): {counts['ok']} within tolerance, {counts['FAIL']} outside"
                 + (f"; {extra}" if extra else ""))
    return "\n".join(lines), 1 if bad else 0
