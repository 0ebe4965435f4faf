"""Empty distance bins are "no data" (never 0); effects against the plain student (paired t-test over seeds).

Expected p-values come from the closed form of Student's t with 2 degrees of freedom (3 seeds):
two-sided p = 1 − |t| / sqrt(2 + t²), independent of scipy.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.data.labelmap import load_label_map
from harness.evaluate.runner import Accumulator, format_table
from harness.reproduce.plan import build_plan
from harness.config.experiment import load_experiment, load_profile
from harness.report import figures
from harness.reproduce.collect import collect
from harness.report.effects import class_deltas, paired, plain_student
from harness.report.reference import load_reference
from harness.report.tables import build_tables, to_latex, to_markdown

from .conftest import fabricate, write_profile
from .test_tables_check_figures import cells, check_latex


def md_cells(md: str, first: str, col: int = 0) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > col and cells[col] == first:
            return cells
    raise AssertionError(f"row {first!r} not in\n{md}")


def p_df2(t: float) -> float:
    return 1.0 - abs(t) / math.sqrt(2.0 + t * t)


# ---------------------------------------------------------------------------------------------- empty bins
def test_bin_without_evaluated_points_is_null_not_zero():
    acc = Accumulator(load_label_map("semantickitti"), "semantickitti")
    xyz = np.array([[5.0, 0, 0], [6.0, 0, 0], [25.0, 0, 0], [35.0, 0, 0]])   # bins 0-10, 0-10, 20-30, 30-40
    gt = np.array([1, 9, 9, 0])       # car, road, road, unlabelled (ignored ground truth)
    pred = np.array([1, 9, 1, 9])
    acc.add(xyz, gt, pred)
    result = json.loads(json.dumps(acc.result()))                           # what metrics.json holds
    bins = {b["bin"]: b for b in result["per_distance"]["harness"]["bins"]}
    assert bins["10-20m"]["miou"] is None and bins["10-20m"]["num_points"] == 0
    assert bins["10-20m"]["miou_nanmean"] is None
    # a bin whose only point has ignored ground truth: one point, nothing evaluated -> no data either
    assert bins["30-40m"]["num_points"] == 1 and bins["30-40m"]["num_evaluated"] == 0 and bins["30-40m"]["miou"] is None
    # scored bins keep the semantic-kitti-api mean over all 19 classes: 0-10 m has car 1/1 and road 1/1
    assert bins["0-10m"]["miou"] == pytest.approx(2 / 19, abs=1e-9)
    assert bins["20-30m"]["miou"] == pytest.approx(0.0, abs=1e-12)            # road missed, car false positive: a real 0
    assert bins["20-30m"]["num_evaluated"] == 1
    assert "10-20m no data" in format_table(result)


@pytest.fixture
def bench_profile(tmp_path: Path) -> Path:
    return write_profile(tmp_path, "cpu-bench")


def _set(run_dir: Path, **changes) -> None:
    path = run_dir / "metrics.json"
    m = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "iou":
            m["iou_per_class"].update(value)
        else:
            m[key] = value
    path.write_text(json.dumps(m))


def _bins(*values):
    return {"harness": {"bins": [{"bin": b, "miou": v} for b, v in zip(("0-10m", "10-20m", "20-30m"), values)]}}


def test_per_distance_table_and_figure_show_no_data(paper_profile, monkeypatch, tmp_path):
    plan = build_plan([load_experiment("table1")], load_profile(paper_profile), seeds=[0, 1])
    for seed, (near, mid) in enumerate(((0.60, None), (0.70, 0.40))):
        d = fabricate(plan.lookup("table1", "spvcnn/teacher", seed), 0.6)
        _set(d, per_distance=_bins(near, mid, None))     # 20-30 m: no point in either seed
    md = to_markdown(next(m for m in build_tables(plan.experiments[0], collect(plan), load_reference(),
                                                  plan.profile.output_root) if m.name == "table1_spvcnn_per_distance"))
    assert md_cells(md, "0-10m")[1] == "65.0 ± 7.1"    # mean and sample std of 60 and 70
    assert md_cells(md, "10-20m")[1] == "40.0"         # the seed with data only
    assert md_cells(md, "20-30m")[1] == "—"            # never 0.0
    captured = []
    monkeypatch.setattr(figures, "_save", lambda fig, stem: captured.append(fig) or [])
    figures.write_figures(plan.experiments[0], collect(plan), tmp_path / "fig", demo=False)
    ax = captured[1].axes[0]                           # [per-class, per-distance] of the spvcnn group
    y = ax.lines[0].get_ydata()
    assert y[:2].tolist() == pytest.approx([65.0, 40.0]) and math.isnan(y[2])   # absent from the line
    assert "(no data)" in ax.get_xticklabels()[2].get_text()


# ---------------------------------------------------------------------------------------------- paired statistics
def test_paired_t_test_against_the_closed_form():
    student = {0: 50.0, 1: 52.0, 2: 51.0}
    p = paired({0: 55.0, 1: 56.0, 2: 57.0}, student)          # d = 5, 4, 6: mean 5, sd 1, t = 5 sqrt(3)
    assert (p.n, p.mean, p.std) == (3, pytest.approx(5.0), pytest.approx(1.0))
    assert p.p == pytest.approx(p_df2(5 * math.sqrt(3)), rel=1e-9) and p.beyond is True
    q = paired({0: 51.0, 1: 50.0, 2: 53.0}, student)          # d = 1, -2, 2: mean 1/3, sd sqrt(13/3)
    t = (1 / 3) / (math.sqrt(13 / 3) / math.sqrt(3))
    assert q.p == pytest.approx(p_df2(t), rel=1e-9) and q.beyond is False
    assert paired({0: 55.0}, student).p is None                # one pair: no test
    assert paired({0: 55.0, 5: 1.0}, student).n == 1          # seed 5 has no student: not paired
    assert paired({0: 51.0, 1: 53.0, 2: 52.0}, student).beyond is True   # identical d = 1: exact, p = 0
    assert paired(dict(student), student).beyond is False


def test_plain_student_is_found_from_the_teacher_links():
    t1, t3 = load_experiment("table1"), load_experiment("table3")
    assert plain_student(t1, "spvcnn").id == "spvcnn/student"
    assert plain_student(t1, "minkunet").id == "minkunet/student"
    assert plain_student(t3, "").id == "none"


def test_vs_student_tables_for_a_generated_profile(bench_profile, tmp_path):
    plan = build_plan([load_experiment("table1")], load_profile(bench_profile), seeds=[0, 1, 2])
    values = {"spvcnn/teacher": [0.70, 0.72, 0.71], "spvcnn/student": [0.50, 0.52, 0.51],
              "spvcnn/pvd": [0.55, 0.56, 0.57], "spvcnn/kd": [0.51, 0.50, 0.53]}
    for run_id, per_seed in values.items():
        for seed, v in enumerate(per_seed):
            d = fabricate(plan.lookup("table1", run_id, seed), v, profile="demo")
            if run_id == "spvcnn/student":
                _set(d, iou={"car": 0.30 + 0.01 * seed})
            if run_id == "spvcnn/pvd":                          # car: +9, +10, +11 points over the student
                _set(d, iou={"car": 0.30 + 0.01 * seed + (0.09, 0.10, 0.11)[seed]})
    models = {m.name: m for m in build_tables(plan.experiments[0], collect(plan), load_reference(),
                                              plan.profile.output_root, profile="cpu-bench")}
    assert {"table1_vs_student", "table1_spvcnn_per_class_vs_student"} <= set(models)
    assert "table1_minkunet_per_class_vs_student" not in models      # no MinkUNet run finished
    md = to_markdown(models["table1_vs_student"])
    assert "cpu-bench profile — generated data, not comparable to the paper" in md
    # | Group | Run | mIoU | n | Δ vs student | σ(Δ) | p | beyond noise |
    assert md_cells(md, "+ PVD", 1)[2:8] == ["56.0 ± 1.0", "3", "+5.0", "1.0", f"{p_df2(5 * math.sqrt(3)):.3f}", "yes"]
    assert md_cells(md, "+ KD", 1)[4:8][0] == "+0.3" and md_cells(md, "+ KD", 1)[7] == "no"
    assert md_cells(md, "SPVNAS", 1)[4] == "+20.0"                    # the teacher's room over the student
    assert md_cells(md, "SPVNAS_0.5× (plain student)", 1)[2] == "51.0 ± 1.0"
    assert md_cells(md, "+ CD", 1)[2:5] == ["—", "0", "—"]            # not run
    assert "paired t-test" in md and "p < 0.05" in md and "Fewer than 3 seeds" not in md
    plain = to_markdown(models["table1_spvcnn_per_class"])              # per-class IoU: mean ± sample std
    assert md_cells(plain, "car")[md_cells(plain, "Class").index("SPVNAS_0.5×")] == "31.0 ± 1.0"
    pc = to_markdown(models["table1_spvcnn_per_class_vs_student"])
    header = md_cells(pc, "Class")
    car = md_cells(pc, "car")
    assert car[header.index("+ PVD")] == "+10.0*"                    # d = 9, 10, 11: p ≈ 0.003
    road = md_cells(pc, "road")                                       # fabricate: road = mIoU − 1 in every run
    assert road[header.index("+ PVD")] == "+5.0*" and road[header.index("+ KD")] == "+0.3"
    tex = to_latex(models["table1_vs_student"])
    assert "$+5.0$" in tex
    check_latex(tex, n_cols=8, n_rows=16, n_groups=2)                 # both groups, a \midrule between them
    pc_tex = to_latex(models["table1_spvcnn_per_class_vs_student"])
    check_latex(pc_tex, n_cols=4, n_rows=19, n_groups=1)              # Class + teacher, KD, PVD
    engine = shutil.which("pdflatex")
    if engine is not None:
        doc = tmp_path / "t.tex"
        doc.write_text("\\documentclass{article}\n\\usepackage[margin=1cm,landscape]{geometry}\n\\usepackage{booktabs}\n"
                       "\\begin{document}\n" + tex + "\n" + pc_tex + "\n\\end{document}\n")
        proc = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:]
    cds = class_deltas(plan.experiments[0], collect(plan))
    assert [c.group for c in cds] == ["spvcnn"] and cds[0].delta.shape == (3, 19)   # teacher, KD, PVD × classes
    assert cds[0].teacher == [True, False, False] and cds[0].methods().labels == ["+ KD", "+ PVD"]  # heatmap rows


def test_paper_profile_tables_have_no_effects_tables(paper_profile):
    plan = build_plan([load_experiment("table1")], load_profile(paper_profile), seeds=[0])
    fabricate(plan.lookup("table1", "spvcnn/student", 0), 0.5)
    names = [m.name for m in build_tables(plan.experiments[0], collect(plan), load_reference(), plan.profile.output_root,
                                           profile="paper")]
    assert not any("vs_student" in n for n in names)


def test_generated_profile_writes_the_heatmap(bench_profile, tmp_path):
    plan = build_plan([load_experiment("table1")], load_profile(bench_profile), seeds=[0, 1, 2])
    for run_id in ("minkunet/student", "minkunet/pvd"):
        for seed in range(3):
            fabricate(plan.lookup("table1", run_id, seed), 0.5 + 0.01 * seed + (0.05 if run_id.endswith("pvd") else 0),
                      profile="demo")
    files = figures.write_figures(plan.experiments[0], collect(plan), tmp_path / "fig", profile="cpu-bench")
    one_seed = [r for r in collect(plan) if r.seed == 0]
    md = to_markdown(next(m for m in build_tables(plan.experiments[0], one_seed, load_reference(),
                                                  plan.profile.output_root, profile="cpu-bench")
                          if m.name == "table1_vs_student"))
    pvd = [ln for ln in md.splitlines() if "+ PVD" in cells(ln)][-1]               # the MinkowskiNet block
    assert cells(pvd)[4:8] == ["+5.0", "—", "—", "n/a"]
    assert "Fewer than 3 seeds for" in md
    names = sorted(p.name for p in files)
    assert "table1_minkunet_per_class_vs_student.png" in names and "table1_minkunet_per_class_vs_student.pdf" in names
    png = tmp_path / "fig" / "table1_minkunet_per_class_vs_student.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
