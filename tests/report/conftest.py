"""Fabricated run stores for the report/reproduce tests: profiles pointing into tmp dirs and metrics.json writers.

Nothing here writes into the repository's results/ tree.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.reproduce.plan import Plan, PlannedRun


def write_profile(tmp: Path, name: str = "paper", **extra) -> Path:
    """A profile like the real one, with every output under ``tmp``."""
    data = {
        "profile": name,
        "output_root": str(tmp / "runs"),
        "tables_dir": str(tmp / "tables"),
        "figures_dir": str(tmp / "figures"),
        "logs_dir": str(tmp / "logs"),
        "jobs": 1,
        "data": {"semantickitti": {"root": "${SEMANTICKITTI_ROOT}"},
                 "nuscenes": {"root": "${NUSCENES_ROOT}", "overrides": {"data.version": "v1.0-trainval"}}},
        "overrides": {},
    }
    data.update(extra)
    path = tmp / f"{name}_profile.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


CLASSES = ["car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist", "road",
           "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
           "traffic-sign"]
NUSC_CLASSES = ["barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian", "traffic_cone",
                "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain", "manmade", "vegetation"]


def fabricate(run: PlannedRun, miou: float, profile: str = "paper", config_hash: str | None = None,
              global_steps: int = 100, coefficients: dict | None = None, overrides: list[str] | None = None,
              macs: float | None = 1.0e9, batch_size: int = 2) -> Path:
    """Write a finished run (config.yaml + env.json + metrics.json) for a planned run; ``miou`` is a fraction,
    ``macs`` the MACs of one scan (the trainer's ``macs_per_scan``)."""
    d = run.run_dir
    d.mkdir(parents=True, exist_ok=True)
    digest = config_hash or run.config_hash
    (d / "config.yaml").write_text(f"# config_hash: {digest}\ntrain: {{batch_size: {batch_size}}}\n")
    (d / "env.json").write_text(json.dumps({"world_size": 1}))
    classes = NUSC_CLASSES if run.dataset == "nuscenes" else CLASSES
    iou = {c: miou + (0.01 if i % 2 else -0.01) for i, c in enumerate(classes)}
    metrics = {
        "schema_version": 1, "miou": miou, "accuracy": 0.9, "iou_per_class": iou,
        "per_distance": {"harness": {"bins": [{"bin": "0-10", "miou": miou + 0.05}, {"bin": "10-20", "miou": miou},
                                              {"bin": "20-30", "miou": miou - 0.05}, {"bin": ">50", "miou": None}]}},
        "num_scans": 4, "config_hash": digest, "run": run.spec.name, "seed": run.seed, "profile": profile,
        "backbone": run.backbone, "width": 0.5, "method": run.method, "teacher_run": run.teacher,
        "coefficients": coefficients or {}, "coefficient_overrides": overrides or [], "params": 1000,
        "macs_per_scan": macs, "epochs": 1, "global_steps": global_steps,
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def fabricate_plan(plan: Plan, values: dict[str, float | list[float]], **kw) -> None:
    """``values``: run id -> mIoU fraction (or one per seed, in plan.seeds order) for the first experiment."""
    table = plan.experiments[0].table
    for run_id, v in values.items():
        per_seed = v if isinstance(v, list) else [v] * len(plan.seeds)
        for seed, value in zip(plan.seeds, per_seed):
            fabricate(plan.lookup(table, run_id, seed), value, **kw)


@pytest.fixture
def paper_profile(tmp_path: Path) -> Path:
    return write_profile(tmp_path, "paper")


@pytest.fixture
def demo_profile(tmp_path: Path) -> Path:
    return write_profile(tmp_path, "demo")
