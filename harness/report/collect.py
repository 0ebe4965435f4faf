"""Read finished runs (``metrics.json`` + ``config.yaml`` + ``env.json``) of a plan into tidy records.

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

from harness.reproduce.plan import Plan


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


def _pct(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else 100.0 * x


def macs_per_scan(metrics: dict, run_dir: Path) -> float | None:
    """MACs of one scan as the trainer records them (``macs_per_scan``, on the first val scan)."""
    macs = metrics.get("macs_per_scan")
    return float(macs) / 1e9 if macs else None


def read_run(plan_table: str, spec, seed: int, run_dir: Path, expected_hash: str | None) -> RunResult | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    bins = (metrics.get("per_distance") or {}).get("harness", {}).get("bins", [])
    return RunResult(
        table=plan_table, run_id=spec.id, group=spec.group, label=spec.label, ref=spec.ref, seed=seed, run_dir=run_dir,
        metrics=metrics, current=expected_hash is None or metrics.get("config_hash") == expected_hash,
        miou=_pct(metrics.get("miou")), macs_g=macs_per_scan(metrics, run_dir),
        iou={k: _pct(v) for k, v in (metrics.get("iou_per_class") or {}).items()},
        per_distance=[(str(b.get("bin")), _pct(b.get("miou"))) for b in bins])


def collect(plan: Plan) -> list[RunResult]:
    """Finished runs of every (experiment, run, seed) in the plan (a shared folder appears once per experiment)."""
    by_key = plan.by_key()
    out = []
    for exp in plan.experiments:
        for spec in exp.runs:
            for seed in plan.seeds:
                key = plan.index.get((exp.table, spec.id, seed))
                if key is None:
                    continue
                run = by_key[key]
                result = read_run(exp.table, spec, seed, run.run_dir, run.config_hash)
                if result is not None and not result.current:
                    from harness.reproduce.plan import inspect_run

                    result.current = inspect_run(run.run_dir, run.config_hash, run.tree)[0] == "done"
                if result is not None:
                    out.append(result)
    return out


def all_runs(output_root: str | Path) -> list[dict]:
    """Every finished ``metrics.json`` under a run store (for the coefficient table), with its folder."""
    out = []
    for path in sorted(Path(output_root).glob("*/*/*/seed*/metrics.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
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


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


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
            released=all(r.released_checkpoint for r in rs))
    return out
