"""Render "Paper | Ours | Δ" tables (Markdown and LaTeX) from collected runs and the reported numbers.

One table model, two renderers: Markdown (a pipe table, written here: pandas' ``to_markdown`` needs the optional
``tabulate`` package) and LaTeX through pandas' ``Styler.to_latex`` with booktabs rules (``\\toprule``,
``\\midrule`` between groups, ``\\bottomrule``). The LaTeX output is pure ASCII (``$\\pm$``, ``$\\Delta$``, ...),
so it compiles with pdflatex + booktabs and nothing else.

Conventions (stated under every table): Δ = Ours − Paper in mIoU points; with n ≥ 2 seeds Ours is
mean ± sample std and "|Δ| > 2σ" says whether the gap exceeds twice the seed std; MACs are GMACs per scan
(ours on the evaluated scans: the demo's scans are ~50x smaller than real ones).
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from harness.config.experiment import Experiment
from harness.report.collect import RunResult, Summary, all_runs, summarize
from harness.report.reference import Reference

DEMO_BANNER = "demo profile — not comparable to the paper"


def banner_for(profile: str) -> str:
    """The banner of a profile on generated data (:data:`harness.report.check.NOT_COMPARED_PROFILES`)."""
    return DEMO_BANNER if profile == "demo" else f"{profile} profile — generated data, not comparable to the paper"
DASH_MD, DASH_TEX = "—", "--"


@dataclass
class Cell:
    md: str
    tex: str


@dataclass
class TableModel:
    name: str                      # file stem
    title: str
    columns: list[Cell]
    rows: list[list[Cell]]
    align: str                     # LaTeX column spec, one letter per column
    group_starts: list[int] = field(default_factory=list)  # row indices that start a new group (a \midrule before)
    notes: list[str] = field(default_factory=list)          # plain-text notes (Markdown; LaTeX gets them as comments)
    banner: str | None = None

    def column_names(self) -> list[str]:
        return [c.md for c in self.columns]


# ---------------------------------------------------------------------------------------------- cell formatting
def tex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
            "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "×": r"$\times$", "±": r"$\pm$", "Δ": r"$\Delta$",
            "—": "---", "–": "--", "−": "-", "§": r"\S{}", "✗": "x", "✓": r"$\surd$", "†": r"$^\dagger$", "α": r"$\alpha$", "β": r"$\beta$",
            "λ": r"$\lambda$", "σ": r"$\sigma$", "≥": r"$\geq$", "≤": r"$\leq$", "≠": r"$\neq$", "·": r"$\cdot$"}
    out = []
    for ch in text:
        if ch in repl:
            out.append(repl[ch])
        elif ch.isascii():
            out.append(ch)
        else:  # anything else non-ASCII: its ASCII decomposition (é -> e), else '?', so the output stays pdflatex-safe
            out.append(unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "?")
    return "".join(out)


def text(s: str) -> Cell:
    return Cell(s, tex_escape(s))


def bold(s: str) -> Cell:
    return Cell(f"**{s}**", rf"\textbf{{{tex_escape(s)}}}")


def num(x: float | None, nd: int = 1) -> Cell:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return Cell(DASH_MD, DASH_TEX)
    s = f"{x:.{nd}f}"
    return Cell(s, s)


def delta(d: float | None, nd: int = 1) -> Cell:
    if d is None:
        return Cell(DASH_MD, DASH_TEX)
    s = f"{d:+.{nd}f}"
    if s in ("-0.0", "+0.0") or float(s) == 0:
        s = f"{0:.{nd}f}"
    return Cell(s, f"${s}$" if s[0] in "+-" else s)


def mean_std(mean: float | None, std: float | None, n: int, stale: bool = False, nd: int = 1) -> Cell:
    mark_md, mark_tex = ("†", r"$^\dagger$") if stale else ("", "")
    if mean is None:
        return Cell(DASH_MD, DASH_TEX)
    if n > 1 and std is not None:
        return Cell(f"{mean:.{nd}f} ± {std:.{nd}f}{mark_md}", f"${mean:.{nd}f} \\pm {std:.{nd}f}$" + mark_tex)
    return Cell(f"{mean:.{nd}f}{mark_md}", f"{mean:.{nd}f}{mark_tex}")


def beyond_spread(d: float | None, std: float | None, n: int) -> Cell:
    """Whether |Δ| exceeds twice the seed std (needs n >= 2)."""
    if d is None or n < 2 or std is None:
        return Cell("n/a", "n/a")
    return Cell("yes", "yes") if abs(d) > 2 * std else Cell("no", "no")


def diff(ours: float | None, paper: float | None) -> float | None:
    return None if ours is None or paper is None else ours - paper


# ---------------------------------------------------------------------------------------------- table models
def _demo(results: Iterable[RunResult], demo: bool | None) -> bool:
    if demo is not None:
        return demo
    return any(r.profile == "demo" for r in results)


def recipe_notes(results: Iterable[RunResult]) -> list[str]:
    """Which checkpoint the rows score, and the runs whose recipe was rescaled for their GPU count (metrics.json
    ``recipe``, :mod:`harness.engine.recipe`): their global batch and learning rate are not the original's."""
    results = list(results)
    notes = []
    scored = sorted({str(r.metrics.get("scored_checkpoint")) for r in results if r.metrics.get("scored_checkpoint")})
    if scored:
        notes.append(f"Scored checkpoint: {' / '.join(scored)} (eval.checkpoint; best = highest val mIoU over the "
                     "validations, as both originals keep it).")
    scaled = [r for r in results if (r.metrics.get("recipe") or {}).get("status") == "scaled"]
    for r in scaled:
        rc = r.metrics["recipe"]
        notes.append(f"Scaled recipe: {r.label} (seed {r.seed}) trained on {rc['world_size']} GPUs at global batch "
                     f"{rc['global_batch']} (recipe {rc['recipe_global_batch']}) with lr {rc['lr']:g} (recipe "
                     f"{rc['recipe_lr']:g}, {rc['rule']} rule, epochs kept).")
    return notes


def _common_notes(ref: Reference, exp: Experiment, stale_any: bool, results: Iterable[RunResult] = ()) -> list[str]:
    notes = ["Δ = Ours − Paper (mIoU points). Ours = mean over seeds, ± sample std when n ≥ 2; "
             "\"|Δ| > 2σ\" says whether the gap exceeds twice the seed std.",
             "Paper numbers: results/reference/pvkd_reported.csv (sources and confidence tags there)."]
    if stale_any:
        notes.append("† finished with a config that differs from the current experiment file (re-run reproduce to refresh).")
    if exp.note:
        notes.append(exp.note)
    notes += recipe_notes(results)
    return notes


@dataclass(frozen=True)
class Ours:
    """Our side of one row: mean / std over seeds, seed count, stale flag and Δ = Ours − Paper."""

    mean: float | None
    std: float | None
    n: int
    stale: bool
    d: float | None

    @classmethod
    def of(cls, summ: "Summary | None", paper: float | None) -> "Ours":
        mean = summ.miou_mean if summ else None
        return cls(mean, summ.miou_std if summ else None, summ.n if summ else 0,
                   bool(summ and not summ.all_current), diff(mean, paper))

    def miou(self) -> Cell:
        return mean_std(self.mean, self.std, self.n, self.stale)

    def spread(self) -> Cell:
        return beyond_spread(self.d, self.std, self.n)


def methods_table(exp: Experiment, results: list[RunResult], ref: Reference, demo: bool | None = None) -> TableModel:
    s = summarize([r for r in results if r.table == exp.table])
    columns = [text("Group"), text("Method"), text("Paper mIoU"), text("Ours mIoU"), text("Δ mIoU"),
               text("Paper MACs (G)"), text("Ours MACs (G)"), text("n"), Cell("|Δ| > 2σ", r"$|\Delta| > 2\sigma$")]
    rows, starts, last_group, stale_any = [], [], None, False
    for spec in exp.runs:
        summ: Summary | None = s.get((exp.table, spec.id))
        paper = ref.value(spec.ref, "miou")
        paper_macs = ref.value(spec.ref, "macs_g")
        ours = Ours.of(summ, paper)
        stale_any |= ours.stale
        group = spec.group
        if group != last_group:
            starts.append(len(rows))
            last_group = group
            gcell = text(exp.groups.get(group, group))
        else:
            gcell = text("")
        rows.append([gcell, text(spec.label), num(paper), ours.miou(), delta(ours.d), num(paper_macs),
                     num(summ.macs_mean if summ else None, 2 if (summ and summ.macs_mean and summ.macs_mean < 10) else 1),
                     text(str(ours.n)), ours.spread()])
    notes = _common_notes(ref, exp, stale_any, results)
    notes.append("MACs: GMACs per scan. Paper: Table 1 prints MACs only for the teachers and the plain 0.5× students. "
                 "Ours: counted on the first validation scan (kernel-map pairs x C_in x C_out), so they scale with its size.")
    for key, label in exp.reference_only.items():
        v = ref.get(key)
        if v is not None:
            notes.append(f"Reference only (not reproduced by a val run): {label} {v.text} "
                         f"({v.row['source']}, {v.row['table']}).")
    notes += exp.table_notes
    return TableModel(exp.table, exp.title, columns, rows, "llrrrrrrc", starts, notes, DEMO_BANNER if _demo(results, demo) else None)


def coefficients_table(exp: Experiment, results: list[RunResult], ref: Reference, demo: bool | None = None) -> TableModel:
    s = summarize([r for r in results if r.table == exp.table])
    terms = [("out_point", "α_1"), ("out_voxel", "α_2"), ("aff_point", "β_1"), ("aff_voxel", "β_2")]
    columns = [text(sym) for _, sym in terms] + [text("Paper mIoU"), text("Ours mIoU"), text("Δ mIoU"), text("n"),
                                                Cell("|Δ| > 2σ", r"$|\Delta| > 2\sigma$"), text("coefficients used")]
    rows, stale_any = [], False
    for spec in exp.runs:
        if not spec.ref:
            continue
        summ = s.get((exp.table, spec.id))
        paper = ref.value(spec.ref)
        ours = Ours.of(summ, paper)
        stale_any |= ours.stale
        used = _used_coefficients([r for r in results if r.table == exp.table and r.run_id == spec.id], [t for t, _ in terms])
        paper_coefs = [ref.value(spec.ref, f"coef.{t}") for t, _ in terms]
        check = "" if used is None else ("= paper" if all(
            u is not None and p is not None and math.isclose(u, p) for u, p in zip(used, paper_coefs)) else "≠ paper")
        rows.append([num(v, 2) if v is not None else text("—") for v in paper_coefs]
                    + [num(paper), ours.miou(), delta(ours.d), text(str(ours.n)), ours.spread(), text(check)])
    notes = _common_notes(ref, exp, stale_any, results)
    notes.append("α_1, α_2, β_1, β_2 = coefficients of L_out.p, L_out.v, L_aff.p, L_aff.v (the paper's values); "
                 "\"coefficients used\" compares them with the coefficients recorded in our runs' metrics.json.")
    return TableModel(exp.table, exp.title, columns, rows, "rrrrrrrrcl", [0], notes, DEMO_BANNER if _demo(results, demo) else None)


def _used_coefficients(rs: list[RunResult], terms: list[str]) -> list[float | None] | None:
    if not rs:
        return None
    coefs = rs[0].metrics.get("coefficients") or {}
    return [None if t not in coefs else float(coefs[t]) for t in terms]


def components_table(exp: Experiment, results: list[RunResult], ref: Reference, demo: bool | None = None) -> TableModel:
    s = summarize([r for r in results if r.table == exp.table])
    terms = [("out_point", "L_out.p"), ("out_voxel", "L_out.v"), ("aff_point", "L_aff.p"), ("aff_voxel", "L_aff.v")]
    columns = [text(sym) for _, sym in terms] + [text("Paper mIoU"), text("Ours mIoU"), text("Δ mIoU"), text("n"),
                                                Cell("|Δ| > 2σ", r"$|\Delta| > 2\sigma$")]
    rows, stale_any = [], False
    for spec in exp.runs:
        if not spec.ref:
            continue
        summ = s.get((exp.table, spec.id))
        paper = ref.value(spec.ref)
        ours = Ours.of(summ, paper)
        stale_any |= ours.stale
        coefs = (spec.overrides.get("distill.coefficients") or {}) if spec.overrides.get("distill.method") else {}
        if spec.overrides.get("distill.method") and not coefs:
            active = {t for t, _ in terms}
        else:
            active = {t for t, v in coefs.items() if float(v) != 0.0}
        rows.append([Cell("✓", r"$\surd$") if t in active else text("") for t, _ in terms]
                    + [num(paper), ours.miou(), delta(ours.d), text(str(ours.n)), ours.spread()])
    notes = _common_notes(ref, exp, stale_any, results)
    notes.append("A ✓ term keeps its Table 4 (Cylinder3D) coefficient; the others are set to 0.")
    return TableModel(exp.table, exp.title, columns, rows, "ccccrrrrc", [0], notes, DEMO_BANNER if _demo(results, demo) else None)


def coefficient_table(exp: Experiment, ref: Reference, output_root: str | Path, demo: bool | None = None) -> TableModel:
    """Table 4 from the coefficients our runs used, diffed against the paper."""
    import yaml

    from harness.backbones.base import backbone_family
    from harness.distill.base import COEFFICIENT_FILE

    code = yaml.safe_load(COEFFICIENT_FILE.read_text())["coefficients"]
    runs = [m for m in all_runs(output_root) if m.get("method")]
    columns = [text("Model"), text("Method"), text("Term"), text("Paper"), text("coefficients.yaml"), text("Used in runs"),
               text("Match")]
    rows, starts = [], []
    paper_rows = [r for r in ref.rows if r["table"] == "Supplement Table 4"]
    order = []
    for r in paper_rows:
        if r["backbone"] not in order:
            order.append(r["backbone"])
    mismatches = 0
    for bb in order:
        starts.append(len(rows))
        first = True
        for r in [x for x in paper_rows if x["backbone"] == bb]:
            method, term = r["method"], r["metric"].split(".", 1)[1]
            paper = float(r["value"])
            family = backbone_family(bb)
            code_v = code.get(method, {}).get(family, {}).get(term)
            used = sorted({float(m["coefficients"][term]) for m in runs
                           if m.get("backbone") == bb and m.get("method") == method and term in (m.get("coefficients") or {})
                           and term not in (m.get("coefficient_overrides") or [])})
            n_used = sum(1 for m in runs if m.get("backbone") == bb and m.get("method") == method
                         and term not in (m.get("coefficient_overrides") or []))
            ok = code_v is not None and math.isclose(float(code_v), paper) and all(math.isclose(u, paper) for u in used)
            mismatches += not ok
            used_txt = "—" if not used else ", ".join(f"{u:g}" for u in used) + f" ({n_used} run{'s' if n_used != 1 else ''})"
            rows.append([text(r["row"] if first else ""), text(method.upper()), text(r["column"].split(" ")[-1]), num(paper, 2),
                         num(float(code_v), 2) if code_v is not None else text("missing"), text(used_txt),
                         Cell("✓", r"$\surd$") if ok else Cell("✗ differs", "differs")])
            first = False
    overridden = sorted({f"{m.get('backbone')}/{m.get('run')}" for m in runs if m.get("coefficient_overrides")})
    notes = [f"Paper: supplementary Table 4 (results/reference/pvkd_reported.csv). coefficients.yaml: what the distillers "
             f"use by default. Used in runs: distinct values recorded in finished runs under {output_root} that keep the "
             f"default (runs that override a term on purpose, e.g. Tables 2-3, are left out: {', '.join(overridden) or 'none'}).",
             f"{mismatches} term(s) differ from the paper." if mismatches else "Every term matches the paper."]
    any_demo = any(m.get("profile") == "demo" for m in runs)
    return TableModel(exp.table, exp.title, columns, rows, "lllrrlc", starts, notes,
                      DEMO_BANNER if (demo if demo is not None else any_demo) else None)


def run_groups(exp: Experiment) -> list[str]:
    """The experiment's run groups (backbone or dataset id prefixes) in the order of its runs."""
    return list(dict.fromkeys(spec.group for spec in exp.runs))


def per_class_tables(exp: Experiment, results: list[RunResult], ref: Reference, demo: bool | None = None) -> list[TableModel]:
    """Classes as rows, one table per group (backbone or dataset) with one column per run (mean over seeds), plus
    Paper and Δ columns where the paper has per-class numbers (the nuScenes rows of ``main``)."""
    s = summarize([r for r in results if r.table == exp.table])
    out = []
    for group in run_groups(exp):
        columns = [text("Class")]
        getters = []          # (kind, function of class)
        classes: list[str] = []
        for spec in [sp for sp in exp.runs if sp.group == group]:
            summ = s.get((exp.table, spec.id))
            paper_iou = ref.metrics(spec.ref, "iou.") if spec.ref else {}
            if summ is None and not paper_iou:
                continue
            for c in (list(summ.iou_mean) if summ else [m.split(".", 1)[1] for m in paper_iou]):
                if c not in classes:
                    classes.append(c)

            def ours(c, summ=summ):
                return summ.iou_mean.get(c) if summ else None

            def ours_cell(c, summ=summ):  # mean ± sample std over seeds
                if summ is None:
                    return num(None)
                vals = [v for v in [summ.iou_mean.get(c)] if v is not None]
                return mean_std(vals[0] if vals else None, summ.iou_std.get(c), summ.n)

            if paper_iou:
                def paper(c, p=paper_iou):
                    return p[f"iou.{c}"].value if f"iou.{c}" in p else None

                columns += [text(f"{spec.label} (paper)"), text(f"{spec.label} (ours)"), text("Δ")]
                getters += [("num", paper), ("cell", ours_cell), ("delta", lambda c, o=ours, p=paper: diff(o(c), p(c)))]
            else:
                columns.append(text(spec.label))
                getters.append(("cell", ours_cell))
        if not getters:
            continue
        highlight = set(exp.highlight_classes)
        render = {"delta": delta, "num": num, "cell": lambda cell: cell}
        rows = [[bold(c) if c in highlight else text(c)] + [render[kind](get(c)) for kind, get in getters]
                for c in classes]
        notes = ["IoU per class in %, mean over seeds, ± sample std with ≥ 2 seeds (SemanticKITTI convention: a class "
                 "absent from the evaluated scans scores 0; nuScenes: no IoU, shown as —)."]
        if highlight:
            notes.append(f"Bold: {', '.join(c for c in classes if c in highlight)} (highlighted by the experiment).")
        if any(kind == "delta" for kind, _ in getters):
            notes.append("Paper per-class rows: nuScenes val, confidence \"corroborated\" (third-party copies of PVKD's "
                         "table). Δ = Ours − Paper.")
        gname = exp.groups.get(group, group)
        out.append(TableModel(f"{exp.table}_{group}_per_class" if group else f"{exp.table}_per_class",
                              f"{exp.title} — {gname + ': ' if gname else ''}IoU per class", columns, rows,
                              "l" + "r" * (len(columns) - 1), [0], notes, DEMO_BANNER if _demo(results, demo) else None))
    return out


def per_distance_tables(exp: Experiment, results: list[RunResult], demo: bool | None = None) -> list[TableModel]:
    """Distance bins as rows, one column per run (mIoU %, mean over the seeds that have points in the bin); a bin
    without an evaluated point is "no data" (—), never 0."""
    s = summarize([r for r in results if r.table == exp.table])
    out = []
    for group in run_groups(exp):
        series = [(spec.label, s[(exp.table, spec.id)]) for spec in exp.runs
                  if spec.group == group and (exp.table, spec.id) in s]
        bins: list[str] = []
        for _, summ in series:
            bins += [b for b, _ in summ.per_distance_mean if b not in bins]
        if not bins:
            continue
        columns = [text("Distance")] + [text(label) for label, _ in series]
        rows = [[text(b)] + [mean_std(dict(summ.per_distance_mean).get(b), dict(summ.per_distance_std).get(b),
                                      summ.n) for _, summ in series] for b in bins]
        gname = exp.groups.get(group, group)
        notes = ["mIoU in % per distance bin (harness bins, 3-D range from the sensor), mean over the seeds with data "
                 "in the bin, ± sample std with ≥ 2 of them. — = no data: no evaluated point in that bin (never 0)."]
        out.append(TableModel(f"{exp.table}_{group}_per_distance" if group else f"{exp.table}_per_distance",
                              f"{exp.title} — {gname + ': ' if gname else ''}mIoU per distance", columns, rows,
                              "l" + "r" * len(series), [0], notes, DEMO_BANNER if _demo(results, demo) else None))
    return out


def build_tables(exp: Experiment, results: list[RunResult], ref: Reference, output_root: str | Path,
                 demo: bool | None = None, profile: str | None = None) -> list[TableModel]:
    """Every table of one experiment. ``profile``: the plan's profile; for a profile on generated data
    (never compared with the paper) every table carries its banner and the effects tables against the plain
    student are added (:mod:`harness.report.effects`)."""
    from harness.report.check import NOT_COMPARED_PROFILES

    generated = profile in NOT_COMPARED_PROFILES
    if generated:
        demo = True
    if exp.kind == "coefficient_table":
        models = [coefficient_table(exp, ref, output_root, demo)]
    else:
        main = {"methods": methods_table, "coefficients": coefficients_table, "components": components_table}[exp.kind]
        models = [main(exp, results, ref, demo)] + per_class_tables(exp, results, ref, demo)
        models += per_distance_tables(exp, results, demo)
        if generated:
            from harness.report.effects import per_class_vs_student_tables, vs_student_table

            models += [t for t in [vs_student_table(exp, results)] if t is not None]
            models += per_class_vs_student_tables(exp, results)
    if generated:
        for t in models:
            t.banner = banner_for(str(profile))
    return models


# ---------------------------------------------------------------------------------------------- renderers
def _escape_md(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(t: TableModel) -> str:
    import pandas as pd

    lines = [f"## {t.title}", ""]
    if t.banner == DEMO_BANNER:
        lines += [f"> **{t.banner}.** Generated data and minute-long schedules: these numbers only show that the "
                  "pipeline runs end to end.", ""]
    elif t.banner:
        lines += [f"> **{t.banner}.** These numbers measure what each method does at CPU scale on the harness's "
                  "generated scans; they are never the paper's.", ""]
    frame = pd.DataFrame([[_escape_md(c.md) for c in row] for row in t.rows],
                         columns=[_escape_md(c.md) for c in t.columns])
    aligns = ["left" if a == "l" else ("center" if a == "c" else "right") for a in t.align]
    # tabulate's "pipe" format; every cell is already text (numbers formatted by the table model)
    lines.append(frame.to_markdown(index=False, tablefmt="pipe", colalign=aligns, disable_numparse=True))
    lines.append("")
    lines += [f"- {n}" for n in t.notes]
    return "\n".join(lines) + "\n"


def to_latex(t: TableModel) -> str:
    import pandas as pd

    frame = pd.DataFrame([[c.tex for c in row] for row in t.rows], columns=[c.tex for c in t.columns])
    caption = tex_escape(t.title) + (f" ({tex_escape(t.banner)}.)" if t.banner else "")
    body = frame.style.hide(axis="index").to_latex(hrules=True, column_format=t.align, caption=caption,
                                                   label=f"tab:{t.name}", position_float="centering")
    # booktabs \midrule between groups: Styler writes one data row per line after the header \midrule
    lines = body.splitlines()
    first_data = lines.index(r"\midrule") + 1
    for offset, start in enumerate(sorted(set(t.group_starts) - {0})):
        lines.insert(first_data + start + offset, r"\midrule")
    head = [f"% {tex_escape(t.banner)}" if t.banner else "% PVKD reproduction: paper vs ours",
            "% generated by `harness tables`; needs only \\usepackage{booktabs}"]
    head += [f"% {tex_escape(n)}" for n in t.notes]
    return "\n".join(head + lines) + "\n"


def write_tables(models: list[TableModel], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for t in models:
        for suffix, render in ((".md", to_markdown), (".tex", to_latex)):
            path = out / f"{t.name}{suffix}"
            path.write_text(render(t), encoding="utf-8")
            written.append(path)
    return written
