"""``harness check``: our runs against the reported numbers and the paper's ordering claims.

Tolerances (detectron2 ``EXPECTED_RESULTS`` tiers): ±1.0 mIoU for retrained runs, ±0.1 for runs that only
evaluate released weights (no training step); ``--tolerance`` sets one value for both. A row passes when
``|Ours − Paper| <= tolerance`` (Ours = mean over seeds). Claims from ``results/reference/claims.yaml`` with
severity ``error`` fail the check when violated on our numbers; ``warn`` claims are only reported.

Exit codes: 0 pass; 1 any failure (or nothing to compare); demo-profile runs are "not applicable" (exit 0): they
are never compared with the paper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from harness.reproduce.spec import Experiment
from harness.report.collect import RunResult, summarize
from harness.report.reference import Reference

RETRAINED_TOL = 1.0
RELEASED_TOL = 0.1


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
class CheckReport:
    comparisons: list[Comparison]
    claims: list[ClaimResult]
    not_applicable: bool = False
    message: str = ""

    @property
    def failed(self) -> bool:
        if self.not_applicable:
            return False
        compared = [c for c in self.comparisons if c.status != "missing"]
        if not compared:
            return True
        return any(c.status == "FAIL" for c in compared) or any(c.status == "VIOLATED" for c in self.claims)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def compare(experiments: list[Experiment], results: list[RunResult], ref: Reference, claims: list[dict],
            tolerance: float | None = None) -> CheckReport:
    if any(r.profile == "demo" for r in results):
        return CheckReport([], [], not_applicable=True,
                           message="not applicable: these are demo-profile runs (generated data, minute-long schedules); "
                                   "they are never compared with the paper. Run the paper profile on the real datasets.")
    summaries = summarize(results)
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
    return CheckReport(comparisons, claim_results)


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
    ok = sum(c.status == "ok" for c in report.comparisons)
    fail = sum(c.status == "FAIL" for c in report.comparisons)
    missing = sum(c.status == "missing" for c in report.comparisons)
    violated = sum(r.status == "VIOLATED" for r in report.claims)
    lines.append("")
    if ok + fail == 0:
        lines.append(f"FAIL: nothing to compare ({missing} reported numbers without a finished run)")
    else:
        lines.append(f"{'FAIL' if report.failed else 'PASS'}: {ok} within tolerance, {fail} outside, {missing} missing, "
                     f"{violated} claim(s) violated")
    return "\n".join(lines)
