"""Read finished runs (``metrics.json`` + ``config.yaml`` + ``env.json``) into tidy records (the plan that
lists them is :func:`harness.reproduce.collect.collect`'s business: report takes run records).

Units: every IoU here is in **percent** (metrics.json stores fractions); MACs are **GMACs per scan** (the trainer
records ``macs_per_scan`` on the first validation scan).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from harness.runs.store import SEED_DIR


@dataclass
class RunResult:
    table: str
    run_id: str
    group: str
    label: str
    ref: str | None
    seed: int
    run_dir: Path
    metrics: dict[str, Any]
    current: bool                   # finished with the config the experiment defines now
    miou: float | None              # percent
    macs_g: float | None            # GMACs per scan
    iou: dict[str, float | None] = field(default_factory=dict)        # percent
    per_distance: list[tuple[str, float | None]] = field(default_factory=list)  # (bin label, mIoU %)
    planned_profile: str | None = None  # the profile tag the plan writes into this run's config (None: unknown)

    @property
    def profile(self) -> str:
        return str(self.metrics.get("profile", "paper"))

    @property
    def method(self) -> str | None:
        return self.metrics.get("method")

    @property
    def released_checkpoint(self) -> bool:
        """An evaluation of given weights (no training step): the tight tolerance applies."""
        return int(self.metrics.get("global_steps", 1) or 0) == 0


FOREIGN_METRICS_FIX = "this metrics.json was not written by harness train: delete the run folder and retrain it"


def _pct(x: Any, where: str | Path = "metrics.json", key: str = "") -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        from harness.errors import InputError

        raise InputError(where, f"{key or 'an IoU'} is {x!r}, not a number", FOREIGN_METRICS_FIX)
    x = float(x)
    return None if math.isnan(x) else 100.0 * x


def read_metrics(path: Path) -> dict[str, Any] | None:
    """A ``metrics.json`` as a mapping; None when it is unreadable (a torn write); a named error when it is
    valid JSON of the wrong shape (a list, a string IoU): tables and check must never crash on it."""
    from harness.errors import InputError

    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    fix = FOREIGN_METRICS_FIX
    if not isinstance(metrics, dict):
        raise InputError(path, f"expected a JSON object, got a {type(metrics).__name__}", fix)
    for key in ("miou", "accuracy", "macs_per_scan"):
        _pct(metrics.get(key), path, key)
    iou = metrics.get("iou_per_class")
    if iou is not None and not isinstance(iou, dict):
        raise InputError(path, f"iou_per_class is a {type(iou).__name__}, not a mapping", fix)
    for name, value in (iou or {}).items():
        _pct(value, path, f"iou_per_class[{name!r}]")
    pd = metrics.get("per_distance")
    mode = distance_mode(metrics)
    if pd is not None and not (isinstance(pd, dict) and isinstance(pd.get(mode, {}), dict)
                               and isinstance(pd.get(mode, {}).get("bins", []), list)
                               and all(isinstance(b, dict) for b in pd.get(mode, {}).get("bins", []))):
        raise InputError(path, f"per_distance is not {{{mode}: {{bins: [{{bin, miou}}, ...]}}}}", fix)
    for b in (pd or {}).get(mode, {}).get("bins", []):
        _pct(b.get("miou"), path, f"per_distance bin {b.get('bin')!r}")
    return metrics


def distance_mode(metrics: dict) -> str:
    """The distance-bin mode a run's config chose (``eval.distance_bins``; runs older than the field: harness)."""
    return str(metrics.get("distance_bins") or "harness")


def rescore(metrics: dict, run_dir: Path) -> dict:
    """``metrics`` with mIoU, per-class IoU and per-distance mIoU recomputed from ``confusion.npz`` under the
    dataset's current convention (:mod:`harness.evaluate.metrics`): a change of metric convention reaches the
    tables without retraining. Unchanged when the run has no confusion counts (or no known dataset)."""
    from harness.data.datasets import DATASETS
    from harness.evaluate.metrics import iou_per_class, mean_iou, scores

    path = run_dir / "confusion.npz"
    if not path.is_file() or metrics.get("dataset") not in DATASETS:
        return metrics
    spec = DATASETS.get(metrics["dataset"])
    try:
        with np.load(path) as npz:
            overall = npz["overall"]
            mode = distance_mode(metrics)
            by_distance = npz[f"distance_{mode}"] if f"distance_{mode}" in npz.files else None
    except (OSError, ValueError, KeyError):
        return metrics  # a torn or foreign file: the recorded scores stand
    names = spec.label_map.class_names
    if overall.shape != (len(names), len(names)):
        return metrics
    out = dict(metrics)
    out.update({k: v for k, v in scores(overall, spec.convention, names).items() if k != "convention"})
    bins = ((metrics.get("per_distance") or {}).get(mode) or {}).get("bins") or []
    if by_distance is not None and len(bins) == by_distance.shape[0]:
        block = dict(out["per_distance"][mode])
        block["bins"] = [{**b, "miou": mean_iou(iou_per_class(conf, spec.convention), spec.convention)}
                         for b, conf in zip(bins, by_distance)]
        out["per_distance"] = {**out["per_distance"], mode: block}
    return out


def macs_per_scan(metrics: dict, run_dir: Path) -> float | None:
    """MACs of one scan as the trainer records them (``macs_per_scan``, on the first val scan)."""
    macs = metrics.get("macs_per_scan")
    return float(macs) / 1e9 if macs else None


def read_run(plan_table: str, spec, seed: int, run_dir: Path, expected_hash: str | None) -> RunResult | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    metrics = read_metrics(path)
    if metrics is None:
        return None
    metrics = rescore(metrics, run_dir)
    bins = (metrics.get("per_distance") or {}).get(distance_mode(metrics), {}).get("bins", [])
    return RunResult(
        table=plan_table, run_id=spec.id, group=spec.group, label=spec.label, ref=spec.ref, seed=seed, run_dir=run_dir,
        metrics=metrics, current=expected_hash is None or metrics.get("config_hash") == expected_hash,
        miou=_pct(metrics.get("miou")), macs_g=macs_per_scan(metrics, run_dir),
        iou={k: _pct(v) for k, v in (metrics.get("iou_per_class") or {}).items()},
        per_distance=[(str(b.get("bin")), _pct(b.get("miou"))) for b in bins])


def all_runs(output_root: str | Path) -> list[dict]:
    """Every finished ``metrics.json`` under a run store (for the coefficient table), with its folder.

    Only ``seed<k>`` folders are results: ``seed<k>.replaced-<hash>`` folders (moved aside by ``--replace-stale``)
    are history and never counted."""
    out = []
    for path in sorted(Path(output_root).glob("*/*/*/seed*/metrics.json")):
        if not SEED_DIR.match(path.parent.name):
            continue
        m = read_metrics(path)
        if m is None:
            continue
        m["_run_dir"] = str(path.parent)
        out.append(m)
    return out


@dataclass
class Summary:
    """Mean and spread over seeds of one experiment run."""

    n: int
    miou_mean: float | None
    miou_std: float | None        # sample std (ddof=1); None with one seed
    macs_mean: float | None
    iou_mean: dict[str, float | None]
    per_distance_mean: list[tuple[str, float | None]]
    all_current: bool
    profiles: set[str]
    released: bool
    iou_std: dict[str, float | None] = field(default_factory=dict)                  # sample std over seeds
    per_distance_std: list[tuple[str, float | None]] = field(default_factory=list)  # over the seeds with data


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _std(values: Iterable[float | None]) -> float | None:
    """Sample std (ddof=1) of the values that exist; None with fewer than two."""
    vals = [v for v in values if v is not None]
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else None


def summarize(results: list[RunResult]) -> dict[tuple[str, str], Summary]:
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.table, r.run_id), []).append(r)
    out = {}
    for key, rs in groups.items():
        mious = [r.miou for r in rs if r.miou is not None]
        classes = list(rs[0].iou)
        bins = [b for b, _ in rs[0].per_distance]
        out[key] = Summary(
            n=len(rs), miou_mean=float(np.mean(mious)) if mious else None,
            miou_std=float(np.std(mious, ddof=1)) if len(mious) > 1 else None,
            macs_mean=_mean(r.macs_g for r in rs),
            iou_mean={c: _mean(r.iou.get(c) for r in rs) for c in classes},
            per_distance_mean=[(b, _mean(dict(r.per_distance).get(b) for r in rs)) for b in bins],
            all_current=all(r.current for r in rs), profiles={r.profile for r in rs},
            released=all(r.released_checkpoint for r in rs),
            iou_std={c: _std(r.iou.get(c) for r in rs) for c in classes},
            per_distance_std=[(b, _std(dict(r.per_distance).get(b) for r in rs)) for b in bins])
    return out
