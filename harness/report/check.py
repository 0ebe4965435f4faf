"""``harness check``: our runs against the reported numbers and the paper's ordering claims.

Tolerances (detectron2 ``EXPECTED_RESULTS`` tiers): ±1.0 mIoU for retrained runs, ±0.1 for runs that only
evaluate released weights (no training step); ``--tolerance`` sets one value for both. A row passes when
``|Ours − Paper| <= tolerance`` (Ours = mean over seeds). Claims from ``results/reference/claims.yaml`` with
severity ``error`` fail the check when violated on our numbers; ``warn`` claims are only reported.

Only runs of the profile asked for (default: the one ``reproduce`` would pick) whose config hash matches that
profile's plan are compared. Stale runs (another config hash), runs of another profile (e.g. a demo-tagged
``metrics.json`` in a paper folder) and missing runs are listed by name and fail the check; ``--allow-missing``
lets missing runs (only those) pass.

Exit codes: 0 pass; 1 any failure (or nothing to compare). "Not applicable" (exit 0) only for a profile whose runs
are never compared with the paper (:data:`NOT_COMPARED_PROFILES`: demo, cpu-bench).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from harness.config.experiment import Experiment
from harness.report.collect import RunResult, summarize
from harness.report.reference import Reference

RETRAINED_TOL = 1.0
RELEASED_TOL = 0.1
# Profiles whose runs are never compared with the paper (generated data, minute-long schedules).
NOT_COMPARED_PROFILES = ("demo", "cpu-bench")


def not_applicable_message(profile_name: str, why: str = "") -> str | None:
    """The one place that decides "not applicable": None for a profile that is compared with the paper, else the
    message to print (exit 0). A profile with its own regression check dispatches from here."""
    if profile_name not in NOT_COMPARED_PROFILES:
        return None
    return (f"not applicable: profile {profile_name}" + (f" ({why})" if why else "") + " -- its runs (generated data, "
            "minute-long schedules) are never compared with the paper. Run the paper profile on the real datasets "
            "(set the dataset roots, or pass --profile paper).")


@dataclass
class Comparison:
    table: str
    run_id: str
    label: str
    paper: float
    ours: float | None
    n: int
    tolerance: float
    kind: str              # retrained | released

    @property
    def delta(self) -> float | None:
        return None if self.ours is None else self.ours - self.paper

    @property
    def status(self) -> str:
        if self.ours is None:
            return "missing"
        return "ok" if abs(self.delta) <= self.tolerance + 1e-9 else "FAIL"


@dataclass
class ClaimResult:
    claim: dict
    status: str            # ok | VIOLATED | warn | incomplete
    detail: str


@dataclass
class Excluded:
    """A finished run that is not compared: stale (another config hash) or of another profile."""

    table: str
    run_id: str
    seed: int
    run_dir: str
    reason: str


@dataclass
class CheckReport:
    comparisons: list[Comparison]
    claims: list[ClaimResult]
    not_applicable: bool = False
    message: str = ""
    excluded: list[Excluded] = field(default_factory=list)
    allow_missing: bool = False

    @property
    def missing(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.status == "missing"]

    @property
    def failed(self) -> bool:
        if self.not_applicable:
            return False
        compared = [c for c in self.comparisons if c.status != "missing"]
        if not compared or self.excluded or (self.missing and not self.allow_missing):
            return True
        return any(c.status == "FAIL" for c in compared) or any(c.status == "VIOLATED" for c in self.claims)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def compare(experiments: list[Experiment], results: list[RunResult], ref: Reference, claims: list[dict],
            tolerance: float | None = None, profile: str = "paper", allow_missing: bool = False) -> CheckReport:
    """Compare the runs of ``profile`` whose config hash matches the plan (``RunResult.current``); every other
    finished run is listed in ``excluded`` and fails the report."""
    message = not_applicable_message(profile)
    if message is not None:
        return CheckReport([], [], not_applicable=True, message=message)
    usable: list[RunResult] = []
    excluded: list[Excluded] = []
    for r in results:
        expected = r.planned_profile or profile
        if r.profile != expected:
            reason = f"a {r.profile}-profile run where the {profile} plan expects a {expected} run"
        elif not r.current:
            reason = (f"stale: finished with config hash {r.metrics.get('config_hash')}, "
                      f"which is not the {profile} plan's config")
        else:
            usable.append(r)
            continue
        excluded.append(Excluded(r.table, r.run_id, r.seed, str(r.run_dir), reason))
    summaries = summarize(usable)
    comparisons = []
    for exp in experiments:
        for spec in exp.runs:
            paper = ref.value(spec.ref, "miou")
            if paper is None:
                continue
            summ = summaries.get((exp.table, spec.id))
            released = bool(summ and summ.released)
            tol = tolerance if tolerance is not None else (RELEASED_TOL if released else RETRAINED_TOL)
            comparisons.append(Comparison(exp.table, spec.id, spec.label, paper, summ.miou_mean if summ else None,
                                          summ.n if summ else 0, tol, "released" if released else "retrained"))
    tables = {e.table for e in experiments}
    claim_results = [evaluate_claim(c, lambda rid, t=c["table"]: _mean(summaries, t, rid))
                     for c in claims if c["table"] in tables]
    return CheckReport(comparisons, claim_results, excluded=excluded, allow_missing=allow_missing)


def _mean(summaries, table: str, run_id: str) -> float | None:
    s = summaries.get((table, run_id))
    return None if s is None else s.miou_mean


def evaluate_claim(claim: dict, value: Callable[[str], float | None]) -> ClaimResult:
    """Evaluate one claim with ``value(run_id) -> mIoU`` (ours, or the paper's for the self-test)."""
    subject = value(claim["subject"])
    if claim["kind"] == "ge_all":
        others = {o: value(o) for o in claim["others"]}
        if subject is None or any(v is None for v in others.values()):
            missing = [k for k, v in {claim["subject"]: subject, **others}.items() if v is None]
            return ClaimResult(claim, "incomplete", f"missing runs: {', '.join(missing)}")
        worse = {o: v for o, v in others.items() if v > subject}
        if not worse:
            return ClaimResult(claim, "ok", f"{claim['subject']} {subject:.1f} >= " + ", ".join(f"{o} {v:.1f}" for o, v in others.items()))
        detail = f"{claim['subject']} {subject:.1f} < " + ", ".join(f"{o} {v:.1f}" for o, v in worse.items())
    else:
        reference = value(claim["reference"])
        if subject is None or reference is None:
            return ClaimResult(claim, "incomplete", "missing runs")
        gap = reference - subject
        if gap <= float(claim.get("margin", 0.5)) + 1e-9:
            return ClaimResult(claim, "ok", f"{claim['subject']} {subject:.1f} vs {claim['reference']} {reference:.1f} (gap {gap:+.1f})")
        detail = f"{claim['subject']} {subject:.1f} is {gap:.1f} below {claim['reference']} {reference:.1f} (allowed {claim.get('margin', 0.5)})"
    return ClaimResult(claim, "VIOLATED" if claim["severity"] == "error" else "warn", detail)


def format_report(report: CheckReport) -> str:
    if report.not_applicable:
        return report.message
    lines = [f"{'table':<7} {'run':<18} {'paper':>6} {'ours':>7} {'Δ':>6} {'tol':>5} {'n':>2}  status"]
    order = sorted(report.comparisons, key=lambda c: (c.delta is None, -abs(c.delta or 0.0)))
    for c in order:
        ours = "—" if c.ours is None else f"{c.ours:.1f}"
        d = "—" if c.delta is None else f"{c.delta:+.1f}"
        lines.append(f"{c.table:<7} {c.run_id:<18} {c.paper:>6.1f} {ours:>7} {d:>6} {c.tolerance:>5.1f} {c.n:>2}  {c.status}"
                     + (" (released weights)" if c.kind == "released" and c.ours is not None else ""))
    if report.claims:
        lines.append("")
        lines.append("ordering claims:")
        for r in report.claims:
            lines.append(f"  [{r.status}] {r.claim['id']}: {r.claim['text']} -- {r.detail} ({r.claim['source']})")
    if report.excluded:
        lines.append("")
        lines.append(f"not compared ({len(report.excluded)} finished run(s) that are not the plan's; they fail the check):")
        for e in report.excluded:
            lines.append(f"  {e.table}:{e.run_id} seed{e.seed} ({e.run_dir}): {e.reason}")
    if report.missing:
        lines.append("")
        lines.append(f"missing ({len(report.missing)} reported number(s) without a finished current run"
                     + ("; allowed by --allow-missing" if report.allow_missing else "; pass --allow-missing to accept")
                     + "): " + ", ".join(f"{c.table}:{c.run_id}" for c in report.missing))
    ok = sum(c.status == "ok" for c in report.comparisons)
    fail = sum(c.status == "FAIL" for c in report.comparisons)
    missing = len(report.missing)
    violated = sum(r.status == "VIOLATED" for r in report.claims)
    lines.append("")
    if ok + fail == 0:
        lines.append(f"FAIL: nothing to compare ({missing} reported numbers without a finished current run)")
    else:
        lines.append(f"{'FAIL' if report.failed else 'PASS'}: {ok} within tolerance, {fail} outside, {missing} missing, "
                     f"{violated} claim(s) violated, {len(report.excluded)} not compared (stale or other profile)")
    return "\n".join(lines)
