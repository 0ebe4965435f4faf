"""What distillation does, measured against the plain student: Δ per method and per class, paired over seeds.

For a run ``m`` of an experiment group and the group's plain student ``s`` (same backbone, no teacher, nobody
distils from it), seed ``k`` of ``m`` is paired with seed ``k`` of ``s`` (a distilled student of seed ``k`` learns
from teacher seed ``k``; the plain student of seed ``k`` shares that seed's initialisation and data order)::

    d_k = mIoU(m, k) − mIoU(s, k)                  (mIoU points, one per seed both runs finished)
    Δ   = mean_k d_k
    t   = Δ / (std_k(d_k, ddof=1) / sqrt(n))       (paired t-test, n − 1 degrees of freedom)

"beyond seed noise" = two-sided paired t-test ``p < ALPHA`` (``scipy.stats.ttest_rel``), needing n >= 2 pairs;
with identical differences over seeds (zero spread) the test is degenerate: p = 0 when they are non-zero, 1 when
they are 0. The same is done per class (IoU_c instead of mIoU).

These tables exist for the profiles on generated data (:data:`harness.report.check.NOT_COMPARED_PROFILES`), whose
numbers are never compared with the paper: there the plain student is the only meaningful reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.config.experiment import Experiment, RunSpec
from harness.report.collect import RunResult, summarize
from harness.report.tables import Cell, TableModel, delta, mean_std, num, text

ALPHA = 0.05  # significance level of the paired t-test over seeds
RULE = (f"\"beyond noise\": two-sided paired t-test over seeds (scipy.stats.ttest_rel), p < {ALPHA:g}; seed k of a "
        "run is paired with seed k of the plain student; needs ≥ 2 paired seeds (n/a otherwise).")


@dataclass(frozen=True)
class Paired:
    """Paired difference ``run − student`` over the seeds both finished (mIoU or IoU points)."""

    n: int
    mean: float | None
    std: float | None           # sample std of the per-seed differences (None with n < 2)
    p: float | None             # two-sided paired t-test p-value (None with n < 2)

    @property
    def beyond(self) -> bool | None:
        return None if self.p is None else self.p < ALPHA


def paired(run: dict[int, float | None], student: dict[int, float | None]) -> Paired:
    """``run`` / ``student``: seed -> value (percent). Seeds missing or None on either side are left out."""
    from scipy import stats

    seeds = sorted(k for k in run if k in student and run[k] is not None and student[k] is not None)
    a = np.array([run[k] for k in seeds], dtype=np.float64)
    b = np.array([student[k] for k in seeds], dtype=np.float64)
    if not seeds:
        return Paired(0, None, None, None)
    d = a - b
    if len(seeds) < 2:
        return Paired(1, float(d[0]), None, None)
    sd = float(np.std(d, ddof=1))
    if np.ptp(d) <= 1e-12:  # zero spread: ttest_rel divides by 0; the difference is exact (or exactly none)
        p = 0.0 if abs(float(d.mean())) > 1e-12 else 1.0
    else:
        p = float(stats.ttest_rel(a, b).pvalue)
    return Paired(len(seeds), float(d.mean()), sd, p)


def plain_student(exp: Experiment, group: str) -> RunSpec | None:
    """The group's run without a teacher that nobody distils from and that sets no distillation method."""
    runs = [r for r in exp.runs if r.group == group]
    teachers = {r.teacher for r in exp.runs if r.teacher}
    found = [r for r in runs if not r.teacher and r.id not in teachers and not r.overrides.get("distill.method")]
    return found[0] if len(found) == 1 else None


def groups(exp: Experiment) -> list[str]:
    out: list[str] = []
    for spec in exp.runs:
        if spec.group not in out:
            out.append(spec.group)
    return out


def _by_seed(results: list[RunResult], table: str, run_id: str) -> list[RunResult]:
    return [r for r in results if r.table == table and r.run_id == run_id]


def _beyond_cell(p: Paired) -> Cell:
    if p.beyond is None:
        return text("n/a")
    return text("yes") if p.beyond else text("no")


def _p_cell(p: Paired) -> Cell:
    if p.p is None:
        return Cell("—", "--")
    s = "<0.001" if p.p < 0.001 else f"{p.p:.3f}"
    return Cell(s, s.replace("<", "$<$"))


def vs_student_table(exp: Experiment, results: list[RunResult], banner: str | None = None) -> TableModel | None:
    """``<table>_vs_student``: every run of every group against that group's plain student (mIoU points)."""
    s = summarize([r for r in results if r.table == exp.table])
    columns = [text("Group"), text("Run"), text("mIoU"), text("n"), text("Δ vs student"), text("σ(Δ)"), text("p"),
               text("beyond noise")]
    rows, starts = [], []
    for group in groups(exp):
        student = plain_student(exp, group)
        if student is None:
            continue
        base = {r.seed: r.miou for r in _by_seed(results, exp.table, student.id)}
        first = True
        for spec in [r for r in exp.runs if r.group == group]:
            summ = s.get((exp.table, spec.id))
            if first:
                starts.append(len(rows))
            gcell = text(exp.groups.get(group, group) if first else "")
            first = False
            cell = mean_std(summ.miou_mean if summ else None, summ.miou_std if summ else None, summ.n if summ else 0)
            n = text(str(summ.n if summ else 0))
            if spec.id == student.id:
                rows.append([gcell, text(f"{spec.label} (plain student)"), cell, n, text("—"), text("—"), text("—"),
                             text("—")])
                continue
            p = paired({r.seed: r.miou for r in _by_seed(results, exp.table, spec.id)}, base)
            rows.append([gcell, text(spec.label), cell, n, delta(p.mean), num(p.std), _p_cell(p), _beyond_cell(p)])
    if not rows:
        return None
    few = sorted({spec.label for spec in exp.runs if (exp.table, spec.id) in s and s[(exp.table, spec.id)].n < 3})
    notes = ["mIoU in %, mean ± sample std over seeds. Δ vs student = mean over seeds of (run − plain student of the "
             "same group and seed), mIoU points; σ(Δ) = sample std of those per-seed differences; the teacher row "
             "shows the room distillation has.",
             RULE,
             "Generated data: these numbers are not the paper's and are not compared with it."]
    if few:
        notes.append(f"Fewer than 3 seeds for {', '.join(few)}: too few for the paired test to separate a gain of a "
                     "few points from seed noise (reproduce --seeds 3).")
    return TableModel(f"{exp.table}_vs_student", f"{exp.title} — against the plain student", columns, rows,
                      "llrrrrrc", starts, notes, banner)


@dataclass(frozen=True)
class ClassDeltas:
    """Per-class Δ IoU (points) of each run against the group's plain student: rows = runs, columns = classes."""

    group: str
    labels: list[str]
    classes: list[str]
    delta: np.ndarray           # (runs, classes), NaN where no paired seed
    beyond: np.ndarray          # (runs, classes) bool
    teacher: list[bool]         # per run: a teacher (the room above the student), not a method

    def methods(self) -> "ClassDeltas":
        """The rows of the distilled runs only (the heatmap's method × class grid)."""
        keep = [i for i, t in enumerate(self.teacher) if not t]
        return ClassDeltas(self.group, [self.labels[i] for i in keep], self.classes, self.delta[keep], self.beyond[keep],
                           [False] * len(keep))


def class_deltas(exp: Experiment, results: list[RunResult]) -> list[ClassDeltas]:
    out = []
    for group in groups(exp):
        student = plain_student(exp, group)
        if student is None:
            continue
        base_runs = _by_seed(results, exp.table, student.id)
        if not base_runs:
            continue
        classes = list(base_runs[0].iou)
        labels, deltas, beyond, teacher = [], [], [], []
        teachers = {r.teacher for r in exp.runs if r.teacher}
        for spec in [r for r in exp.runs if r.group == group and r.id != student.id]:
            runs = _by_seed(results, exp.table, spec.id)
            if not runs:
                continue
            row_d, row_b = [], []
            for c in classes:
                p = paired({r.seed: r.iou.get(c) for r in runs}, {r.seed: r.iou.get(c) for r in base_runs})
                row_d.append(math.nan if p.mean is None else p.mean)
                row_b.append(bool(p.beyond))
            labels.append(spec.label)
            deltas.append(row_d)
            beyond.append(row_b)
            teacher.append(spec.id in teachers)
        if labels:
            out.append(ClassDeltas(group, labels, classes, np.array(deltas, dtype=np.float64), np.array(beyond, dtype=bool),
                                   teacher))
    return out


def per_class_vs_student_tables(exp: Experiment, results: list[RunResult], banner: str | None = None) -> list[TableModel]:
    """``<table>[_<group>]_per_class_vs_student``: classes as rows, one Δ IoU column per run; ``*`` = beyond noise."""
    out = []
    for cd in class_deltas(exp, results):
        columns = [text("Class")] + [text(lb) for lb in cd.labels]
        rows = []
        for j, c in enumerate(cd.classes):
            row = [text(c)]
            for i in range(len(cd.labels)):
                v = cd.delta[i, j]
                cell = delta(None if math.isnan(v) else float(v))
                if cd.beyond[i, j]:
                    cell = Cell(cell.md + "*", cell.tex + "$^*$")
                row.append(cell)
            rows.append(row)
        gname = exp.groups.get(cd.group, cd.group)
        stem = f"{exp.table}_{cd.group}_per_class_vs_student" if cd.group else f"{exp.table}_per_class_vs_student"
        notes = ["Δ IoU per class in points: mean over seeds of (run − plain student of the same seed). "
                 "* = beyond seed noise.", RULE]
        out.append(TableModel(stem, f"{exp.title} — {gname + ': ' if gname else ''}per-class Δ IoU against the plain student",
                              columns, rows, "l" + "r" * len(cd.labels), [0], notes, banner))
    return out
