"""Teachers trained on generated data, scored on real labelled SemanticKITTI scans: a sanity check of the
generator's realism (``harness real-eval``; ``reproduce --profile cpu-bench`` runs it after the tables).

Real scans: every labelled SemanticKITTI scan under ``$PVKD_REAL_DATA`` (a setting; no default) --
``<dir>/velodyne/<frame>.bin`` with ``<dir>/labels/<frame>.label`` in the ``semantickitti*``
folders, at least :data:`MIN_POINTS` points (the 50-point mmdet3d excerpt is left out). Without them the step is
skipped with the reason printed.

How a real scan is fed (``--crop``): a real HDL-64 scan holds ~120k points, a generated cpu-bench scan far fewer
(the generator fires a fraction of the sensor's azimuth steps), so the same metric range holds more points.

* ``train`` (default): the crop the teacher was trained and validated with -- the nearest ``data.max_points``
  points, labelled ones first (:func:`harness.engine.data.nearest_points`); on a denser real scan this covers a
  smaller radius, but the network sees the point count and voxel occupancy it was trained on.
* ``full``: the whole scan (every range; slower, and far from the generated training distribution).

Score: confusion counts summed over the real scans (semantic-kitti-api semantics); mIoU = mean IoU over the
classes *present* in the evaluated real points (ground-truth count > 0). Always labelled "trained on generated
data": these are not SemanticKITTI results.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.reproduce.plan import Plan

REPO_ROOT = Path(__file__).resolve().parents[2]
MIN_POINTS = 1000
CROPS = ("train", "full")
LABEL = "trained on generated data"
RESULT_NAME = "real_scans"


def real_data_root() -> Path | None:
    """``$PVKD_REAL_DATA`` (the folder holding ``semantickitti/``), or None when the setting is absent."""
    value = os.environ.get("PVKD_REAL_DATA")
    return Path(value) if value else None


def real_scans(root: Path) -> list[tuple[Path, Path]]:
    """(scan .bin, .label) pairs of labelled SemanticKITTI scans under ``root`` with >= MIN_POINTS points."""
    out = []
    for scan in sorted(root.glob("semantickitti*/**/velodyne/*.bin")):
        label = scan.parent.parent / "labels" / f"{scan.stem}.label"
        if label.is_file() and scan.stat().st_size // 16 >= MIN_POINTS:
            out.append((scan, label))
    return out


@dataclass
class TeacherScore:
    table: str
    run_id: str
    label: str
    seed: int
    run_dir: str
    config_hash: str
    miou_present: float          # percent, over the classes present in the evaluated real points
    classes_present: list[str]
    iou: dict[str, float]        # percent, classes present only
    points: int                  # evaluated real points (ground truth not ignored)
    generated_val_miou: float | None   # percent: the same run on the generated validation scans


def teachers(plan: Plan) -> list:
    """The plan's teacher runs (some student distils from them), in plan order."""
    needed = {r.teacher for r in plan.runs if r.teacher}
    return [r for r in plan.runs if r.key in needed]


def skip_reason(plan: Plan, root: Path | None) -> str | None:
    if root is None:
        return "PVKD_REAL_DATA is not set (set it to the folder holding semantickitti/)"
    if not root.is_dir():
        return f"no real data at {root} (set PVKD_REAL_DATA to the folder holding semantickitti/)"
    if not real_scans(root):
        return f"no labelled SemanticKITTI scan with >= {MIN_POINTS} points under {root}"
    runs = teachers(plan)
    if not runs:
        return "the plan has no teacher run"
    if not any((r.run_dir / "checkpoints" / "last.pt").is_file() and (r.run_dir / "metrics.json").is_file() for r in runs):
        return ("no finished teacher with its checkpoint (checkpoints are not committed: run reproduce for this "
                "profile first)")
    return None


def score_teacher(run, scans: list[tuple[Path, Path]], crop: str = "train") -> TeacherScore:
    """Evaluate one finished teacher run on the real scans."""
    import json

    import torch

    from harness.config.load import config_from_dict, read_yaml_file
    from harness.data.labelmap import load_label_map
    from harness.data.semantickitti import read_label_file, read_points, split_label
    from harness.engine.checkpoint import load_model_weights, model_identity
    from harness.engine.data import nearest_points
    from harness.engine.inference import predict_scan
    from harness.engine.trainer import build_model
    from harness.evaluate.confusion import confusion_counts
    from harness.evaluate.metrics import iou_per_class

    if crop not in CROPS:
        raise ValueError(f"crop {crop!r}: use one of {CROPS}")
    cfg = config_from_dict(read_yaml_file(run.run_dir / "config.yaml"))
    model = build_model(cfg.model, cfg.data.dataset)
    load_model_weights(model, run.run_dir / "checkpoints" / "last.pt", model_identity(cfg.model, cfg.data.dataset))
    model.eval()
    lm = load_label_map("semantickitti")
    counts = np.zeros((lm.num_classes, lm.num_classes), dtype=np.int64)
    for scan_path, label_path in scans:
        points = read_points(scan_path)
        sem, _ = split_label(read_label_file(label_path, num_points=points.shape[0]))
        labels = lm.to_learning(sem, label_path)
        if crop == "train" and cfg.data.max_points is not None and points.shape[0] > cfg.data.max_points:
            keep = nearest_points(points, labels, cfg.data.max_points)
            points, labels = points[keep], labels[keep]
        pred = predict_scan(model, cfg.model.backbone, np.ascontiguousarray(points[:, :4]), "semantickitti", False,
                            torch.device("cpu"))
        counts += confusion_counts(labels, pred, lm.num_classes)
    iou = iou_per_class(counts, "semantickitti")
    names = list(lm.class_names[1:])
    gt = counts[1:, :].sum(axis=1)
    present = [i for i in range(len(names)) if gt[i] > 0]
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    return TeacherScore(run.table, run.spec.id, run.spec.label, run.seed, str(run.run_dir), run.config_hash,
                        float(100 * np.mean(iou[present])) if present else float("nan"),
                        [names[i] for i in present], {names[i]: float(100 * iou[i]) for i in present},
                        int(counts[1:, :].sum()),
                        None if metrics.get("miou") is None else 100 * float(metrics["miou"]))


def evaluate_real(plan: Plan, root: Path | None = None, crop: str = "train", echo=print) -> dict | None:
    """Score every finished teacher of the plan (each seed) on the real scans; None (reason echoed) when skipped."""
    root = Path(root) if root is not None else real_data_root()
    reason = skip_reason(plan, root)
    if reason is not None:
        echo(f"[real-eval] skipped: {reason}")
        return None
    scans = real_scans(root)
    scores = []
    for run in teachers(plan):
        if not ((run.run_dir / "checkpoints" / "last.pt").is_file() and (run.run_dir / "metrics.json").is_file()):
            echo(f"[real-eval] {run.display} seed{run.seed}: not finished, left out")
            continue
        s = score_teacher(run, scans, crop)
        echo(f"[real-eval] {run.display} seed{run.seed}: {s.miou_present:.1f} % mIoU over {len(s.classes_present)} "
             f"classes present ({LABEL})")
        scores.append(s)
    return {"label": LABEL, "crop": crop, "profile": plan.profile.name,
            "scans": [str(p.relative_to(root)) for p, _ in scans], "min_points": MIN_POINTS,
            "teachers": [s.__dict__ for s in scores]}


def real_table(result: dict, banner: str | None = None):
    """Markdown/LaTeX model: one row per teacher run (mean ± std over seeds)."""
    from harness.report.tables import TableModel, mean_std, num, text

    rows, groups = [], {}
    for s in result["teachers"]:
        groups.setdefault((s["table"], s["run_id"], s["label"]), []).append(s)
    for (table, run_id, label), ss in groups.items():
        real = [s["miou_present"] for s in ss]
        gen = [s["generated_val_miou"] for s in ss if s["generated_val_miou"] is not None]
        present = sorted({c for s in ss for c in s["classes_present"]})
        rows.append([text(f"{table}:{run_id}"), text(label), text(str(len(ss))),
                     mean_std(float(np.mean(real)), float(np.std(real, ddof=1)) if len(real) > 1 else None, len(real)),
                     num(float(np.mean(gen)) if gen else None), text(str(len(present)))])
    columns = [text("Run"), text("Teacher"), text("n"), text("Real scans mIoU (classes present)"),
               text("Generated val mIoU"), text("classes present")]
    notes = [f"Teachers {LABEL} (the profile's generated SemanticKITTI-format scans), scored on "
             f"{len(result['scans'])} real labelled SemanticKITTI scans: {', '.join(result['scans'])}.",
             "mIoU in % over the classes present in the evaluated real points (semantic-kitti-api IoU from summed "
             "confusion counts), mean ± sample std over seeds.",
             f"Crop: {result['crop']} ("
             + ("the nearest data.max_points points, as in training; a real scan is denser than a generated one, so "
                "this covers a smaller radius" if result["crop"] == "train" else "the whole real scan") + ").",
             "A sanity check of the generator's realism, not a SemanticKITTI result."]
    return TableModel(RESULT_NAME, f"Teachers {LABEL}, on real SemanticKITTI scans", columns, rows, "llrrrr", [0],
                      notes, banner)


def write_real(plan: Plan, result: dict) -> list[Path]:
    """``<tables_dir>/real_scans.{json,md,tex}``."""
    import json

    from harness.io import write_json_atomic
    from harness.report.tables import banner_for, write_tables

    out = Path(plan.profile.tables_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{RESULT_NAME}.json"
    write_json_atomic(path, json.loads(json.dumps(result, default=str)))
    return [path] + write_tables([real_table(result, banner_for(plan.profile.name))], out)


def up_to_date(plan: Plan, crop: str = "train") -> bool:
    """The written result covers exactly the plan's finished teachers (same folders, seeds and config hashes)."""
    import json

    path = Path(plan.profile.tables_dir) / f"{RESULT_NAME}.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    have = {(t["run_dir"], t["config_hash"]) for t in old.get("teachers", [])}
    want = {(str(r.run_dir), r.config_hash) for r in teachers(plan) if (r.run_dir / "metrics.json").is_file()}
    return old.get("crop") == crop and bool(want) and have == want
