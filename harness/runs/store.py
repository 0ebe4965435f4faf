"""The run store: one folder per (dataset, backbone, run name, seed).

``results/runs/<dataset>/<backbone>/<name>/seed<k>/``
    ``config.yaml``       the fully resolved config (its hash is the run's identity)
    ``env.json``          git sha + dirty flag, torch / sparse-backend versions, device, world size
    ``train_log.jsonl``   one JSON object per logged step: every loss term by name
    ``confusion.npz``     overall and per-distance-bin confusion counts of the final evaluation
    ``metrics.json``      schema-versioned results (mIoU, per-class IoU, per-distance mIoU, MACs, params, ...)
    ``checkpoints/``      ``last.pt`` (+ ``teacher`` weights for students); git-ignored

Writes are atomic (:mod:`harness.io`). A finished run (``metrics.json`` present) is never overwritten
silently: re-running it with the same config hash is a no-op, with another config an error.
"""
from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.config.load import config_hash, dump_config
from harness.config.schema import RunConfig
from harness.errors import InputError
from harness.io import atomic_path, write_json_atomic, write_text_atomic

METRICS_SCHEMA_VERSION = 1


def run_dir_for(cfg: RunConfig) -> Path:
    return Path(cfg.output_root) / cfg.data.dataset / cfg.model.backbone / cfg.name / f"seed{cfg.train.seed}"


@dataclass
class RunStore:
    path: Path

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def is_finished(self) -> bool:
        return self.metrics_path.is_file()

    def finished_hash(self) -> str | None:
        if not self.is_finished():
            return None
        return json.loads(self.metrics_path.read_text()).get("config_hash")

    def prepare(self, cfg: RunConfig, resume: bool, world_size: int, device: str) -> None:
        """Create the folder and write config/env; refuse to clobber a finished or foreign run."""
        digest = config_hash(cfg)
        if self.is_finished():
            raise InputError(self.metrics_path, f"run already finished (config hash {self.finished_hash()})",
                             "choose another name= or delete the run folder to retrain")
        cfg_file = self.path / "config.yaml"
        # --resume on a run that never reached its first checkpoint starts it afresh (same config only)
        if cfg_file.is_file() and not resume:
            raise InputError(cfg_file, "a run with this name exists but is unfinished",
                             "pass --resume to continue it, or choose another name=")
        if resume and cfg_file.is_file():
            from harness.config.load import config_from_dict
            import yaml

            old = config_hash(config_from_dict(yaml.safe_load(cfg_file.read_text())))
            if old != digest:
                raise InputError(cfg_file, f"--resume with a different config (hash {old} vs {digest})",
                                 "resume with the run's own config, or start a new run name")
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cfg_file, f"# config_hash: {digest}\n" + dump_config(cfg))
        write_json_atomic(self.path / "env.json", environment(world_size, device, cfg.model.sparse_backend))

    def append_log(self, record: dict) -> None:
        with open(self.path / "train_log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_log(self, after_step: int) -> None:
        """On resume, drop log lines past the checkpoint's step (they were written by the killed process)."""
        log = self.path / "train_log.jsonl"
        if not log.is_file():
            return
        kept = [line for line in log.read_text().splitlines() if line and json.loads(line).get("step", 0) <= after_step]
        write_text_atomic(log, "".join(line + "\n" for line in kept))

    def write_confusion(self, counts: np.ndarray, by_distance: dict[str, np.ndarray]) -> None:
        with atomic_path(self.path / "confusion.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, overall=counts, **{f"distance_{k}": v for k, v in by_distance.items()})

    def write_metrics(self, metrics: dict) -> None:
        write_json_atomic(self.metrics_path, {"schema_version": METRICS_SCHEMA_VERSION, **metrics})


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parents[2]).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def environment(world_size: int, device: str, backend: str) -> dict:
    import torch

    env = {
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": device,
        "cuda_device": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "world_size": world_size,
        "sparse_backend_requested": backend,
    }
    from importlib.metadata import version

    env["spconv"] = next((version(d) for d in ("spconv-cu126", "spconv-cu120", "spconv") if _has_dist(d)), None)
    return env


def _has_dist(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False
