"""Figures (matplotlib, Agg backend): per-class IoU bars and per-distance mIoU curves, PNG + PDF.

One figure per (table, group): ``<table>[_<group>]_per_class.{png,pdf}`` with one bar per run (teacher, student,
each method) for every class, and ``<table>[_<group>]_per_distance.{png,pdf}`` with one line per run over the
harness distance bins (a bin without an evaluated point is "no data": absent from the line, never drawn at 0).
Profiles on generated data add ``<table>[_<group>]_per_class_vs_student.{png,pdf}``: a method × class heatmap of
Δ IoU against the plain student (:mod:`harness.report.effects`). Their figures carry the "not comparable to the
paper" banner in their title.
"""
from __future__ import annotations

from pathlib import Path

from harness.config.experiment import Experiment
from harness.report.collect import RunResult, summarize
from harness.report.tables import DEMO_BANNER, banner_for


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _series(exp: Experiment, results: list[RunResult]):
    """{group: [(label, Summary)]} in the experiment's run order."""
    s = summarize([r for r in results if r.table == exp.table])
    groups: dict[str, list] = {}
    for spec in exp.runs:
        summ = s.get((exp.table, spec.id))
        if summ is not None:
            groups.setdefault(spec.group, []).append((spec.label, summ))
    return groups


def _paper_bars(exp: Experiment, group: str, ref) -> list[tuple[str, dict[str, float], float | None]]:
    """The paper's per-class rows for this group (nuScenes in ``main``): (label, {class: IoU %}, mIoU)."""
    out = []
    for spec in exp.runs:
        if spec.group != group or not spec.ref or ref is None:
            continue
        rows = ref.metrics(spec.ref, "iou.")
        if rows:
            out.append((f"{spec.label} (paper)", {m.split(".", 1)[1]: r.value for m, r in rows.items()}, ref.value(spec.ref)))
    return out


def _colors(n: int):
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in (".png", ".pdf"):
        path = stem.with_suffix(ext)
        fig.savefig(path, dpi=130 if ext == ".png" else None, bbox_inches="tight")
        out.append(path)
    _pyplot().close(fig)
    return out


def _title(exp: Experiment, group: str, what: str, demo: "bool | str") -> str:
    """``demo``: True (the demo banner), a banner text, or False."""
    g = exp.groups.get(group, group)
    head = f"{exp.table}{' — ' + g if g else ''}: {what}"
    banner = demo if isinstance(demo, str) else (DEMO_BANNER if demo else "")
    return head + (f"\n{banner}" if banner else "")


def per_class_figure(exp: Experiment, group: str, series: list, out_dir: Path, demo: bool,
                     paper: list | None = None) -> list[Path]:
    """Grouped bars per class: one bar per run (solid) and per paper row where the paper has per-class numbers
    (hatched, drawn next to ours)."""
    import numpy as np

    plt = _pyplot()
    classes = list(series[0][1].iou_mean)
    bars = [(f"{label} ({summ.miou_mean:.1f})" if summ.miou_mean is not None else label, summ.iou_mean, False)
            for label, summ in series]
    bars += [(f"{label} ({miou:.1f})" if miou is not None else label, values, True) for label, values, miou in (paper or [])]
    n = len(bars)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(10.0, 0.75 * len(classes) + 2), 4.8))
    x = np.arange(len(classes))
    colors = _colors(len(series)) + ["0.55", "0.8", "0.35", "0.65"][: len(paper or [])]
    for i, ((label, values, is_paper), color) in enumerate(zip(bars, colors)):
        heights = [np.nan if values.get(c) is None else values.get(c) for c in classes]
        ax.bar(x - 0.4 + width * (i + 0.5), heights, width=width, label=label, color=color,
               edgecolor="black" if is_paper else "white", linewidth=0.3, hatch="///" if is_paper else None)
    ax.set_xticks(x)
    ax.set_xticklabels(classes, rotation=40, ha="right", fontsize=9)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(title="run (mIoU %)", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0),
              frameon=False)
    ax.set_title(_title(exp, group, "IoU per class", demo), fontsize=11)
    stem = out_dir / (f"{exp.table}_{group}_per_class" if group else f"{exp.table}_per_class")
    return _save(fig, stem)


def per_distance_figure(exp: Experiment, group: str, series: list, out_dir: Path, demo: bool) -> list[Path] | None:
    plt = _pyplot()
    bins = [b for b, _ in series[0][1].per_distance_mean]
    if not bins:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    markers = "osD^v<>pXh*"
    for i, ((label, summ), color) in enumerate(zip(series, _colors(len(series)))):
        vals = dict(summ.per_distance_mean)
        ys = [vals.get(b) for b in bins]
        # NaN for "no data": matplotlib leaves the point out and breaks the line there (never drawn at 0)
        ax.plot(range(len(bins)), [float("nan") if y is None else y for y in ys], marker=markers[i % len(markers)],
                color=color, label=label, linewidth=1.6, markersize=5)
    empty = {b for b in bins if all(dict(summ.per_distance_mean).get(b) is None for _, summ in series)}
    ax.set_xticks(range(len(bins)))
    ax.set_xticklabels([f"{b}\n(no data)" if b in empty else b for b in bins], fontsize=9)
    ax.set_xlabel("distance from the sensor (harness bins)")
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(_title(exp, group, "mIoU per distance", demo), fontsize=11)
    stem = out_dir / (f"{exp.table}_{group}_per_distance" if group else f"{exp.table}_per_distance")
    return _save(fig, stem)


def per_class_delta_figure(exp: Experiment, cd, out_dir: Path, banner: "bool | str") -> list[Path]:
    """Heatmap, distilled runs × classes, of Δ IoU against the plain student (points; diverging colours centred on 0,
    symmetric range); each cell is annotated with its value, ``*`` where the paired test says beyond seed noise,
    "—" where no seed is paired."""
    import math

    import numpy as np

    from harness.report.effects import ALPHA

    plt = _pyplot()
    d = cd.delta
    finite = np.abs(d[np.isfinite(d)])
    lim = max(1.0, float(finite.max())) if finite.size else 1.0
    fmt = "{:+.1f}" if lim < 10 else "{:+.0f}"
    fig, ax = plt.subplots(figsize=(max(8.0, 0.62 * len(cd.classes) + 3), 0.45 * len(cd.labels) + 2.2))
    img = ax.imshow(np.ma.masked_invalid(d), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            v = d[i, j]
            label = "—" if math.isnan(v) else fmt.format(v) + ("*" if cd.beyond[i, j] else "")
            ax.text(j, i, label, ha="center", va="center", fontsize=7,
                    color="white" if (not math.isnan(v) and abs(v) > 0.6 * lim) else "black")
    ax.set_xticks(range(len(cd.classes)))
    ax.set_xticklabels(cd.classes, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(cd.labels)))
    ax.set_yticklabels(cd.labels, fontsize=8)
    fig.colorbar(img, ax=ax, fraction=0.03, pad=0.01).set_label("Δ IoU vs plain student (points)")
    ax.set_title(_title(exp, cd.group, f"Δ IoU per class vs the plain student (* paired t-test p < {ALPHA:g})", banner),
                 fontsize=10)
    stem = out_dir / (f"{exp.table}_{cd.group}_per_class_vs_student" if cd.group else f"{exp.table}_per_class_vs_student")
    return _save(fig, stem)


def write_figures(exp: Experiment, results: list[RunResult], out_dir: str | Path, demo: bool | None = None,
                  ref=None, profile: str | None = None) -> list[Path]:
    """All figures of one experiment; ``ref`` (a :class:`~harness.report.reference.Reference`) adds the paper's
    per-class rows where there are some; ``profile`` on generated data adds the Δ-vs-student heatmaps."""
    from harness.report.check import NOT_COMPARED_PROFILES

    if exp.kind == "coefficient_table":
        return []
    out = Path(out_dir)
    written: list[Path] = []
    generated = profile in NOT_COMPARED_PROFILES
    is_demo: bool | str = banner_for(str(profile)) if generated else (
        demo if demo is not None else any(r.profile == "demo" for r in results))
    for group, series in _series(exp, results).items():
        written += per_class_figure(exp, group, series, out, is_demo, _paper_bars(exp, group, ref))
        written += per_distance_figure(exp, group, series, out, is_demo) or []
    if generated:
        from harness.report.effects import class_deltas

        for cd in class_deltas(exp, results):
            methods = cd.methods()  # the teacher's row (its room over the student) stays in the table only
            if methods.labels:
                written += per_class_delta_figure(exp, methods, out, is_demo)
    return written
