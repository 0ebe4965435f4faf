"""The run store: one folder per (dataset, backbone, run name, seed).

``results/runs/<dataset>/<backbone>/<name>/seed<k>/``
    ``config.yaml``       the fully resolved config (its hash is the run's identity)
    ``env.json``          git sha + dirty flag, torch / sparse-backend versions, device, world size
    ``train_log.jsonl``   one JSON object per logged step: every loss term by name
    ``confusion.npz``     overall and per-distance-bin confusion counts of the final evaluation
    ``metrics.json``      schema-versioned results (mIoU, per-class IoU, per-distance mIoU, MACs, params, ...)
    ``checkpoints/``      ``last.pt`` (resume state) and ``best.pt`` (best validation weights); git-ignored

Writes are atomic (:mod:`harness.io`). A finished run (``metrics.json`` present) is never overwritten
silently: re-running it with the same config hash is a no-op, with another config an error.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.config.load import config_hash, dump_config
from harness.config.schema import RunConfig
from harness.errors import InputError
from harness.io import atomic_path, write_json_atomic, write_text_atomic

# Descriptors of the run locks this process holds. A forked child (a DataLoader worker) inherits them, and an
# flock lives until every descriptor of it is closed: after a kill -9 of the trainer its orphaned workers would
# keep the run locked until they notice. Children close their copies at once (this never unlocks the parent).
_HELD_LOCK_FDS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in list(_HELD_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)

METRICS_SCHEMA_VERSION = 1
SEED_DIR = re.compile(r"^seed(\d+)$")  # a result folder; ``seed<k>.replaced-<hash>`` is history


def run_dir_for(cfg: RunConfig) -> Path:
    return Path(cfg.output_root) / cfg.data.dataset / cfg.model.backbone / cfg.name / f"seed{cfg.train.seed}"


@dataclass
class RunStore:
    path: Path
    _lock_handle: Any = field(default=None, repr=False, compare=False)  # open lock file while this process trains

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best_path(self) -> Path:
        """Weights of the best validation so far (train.eval_every), beside last.pt."""
        return self.path / "checkpoints" / "best.pt"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def is_finished(self) -> bool:
        return self.metrics_path.is_file()

    def finished_hash(self) -> str | None:
        if not self.is_finished():
            return None
        try:
            data = json.loads(self.metrics_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return "unreadable"
        return data.get("config_hash") if isinstance(data, dict) else "unreadable"

    @property
    def lock_path(self) -> Path:
        # inside checkpoints/ (git-ignored); flock is released by the kernel when the process dies, even on kill -9
        return self.path / "checkpoints" / ".train.lock"

    def prepare(self, cfg: RunConfig, resume: bool, world_size: int, device: str, recipe: dict | None = None) -> None:
        """Lock the run, create the folder and write config/env; refuse to clobber a finished or foreign run.

        A folder this call created is removed again when it refuses (nothing is left behind)."""
        self._refuse_finished()  # read-only: answered before the lock, which a finished run never needs
        created = not self.path.exists()
        self._lock()  # a refusal here removes nothing: the folder belongs to the process holding the lock
        try:
            self._prepare(cfg, resume, world_size, device, recipe)
        except BaseException:
            self.release()
            if created:
                import shutil

                shutil.rmtree(self.path, ignore_errors=True)
            raise

    def _refuse_finished(self) -> None:
        if self.is_finished():
            raise InputError(self.metrics_path, f"run already finished (config hash {self.finished_hash()})",
                             "choose another name= or delete the run folder to retrain")

    def _lock(self) -> None:
        import fcntl

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise InputError(self.path, "another harness train is running on this run",
                             "wait for it to finish (or stop it), then --resume") from None
        self._lock_handle = handle
        _HELD_LOCK_FDS.add(handle.fileno())

    def release(self) -> None:
        handle = getattr(self, "_lock_handle", None)
        if handle is not None:
            _HELD_LOCK_FDS.discard(handle.fileno())
            handle.close()  # closing the descriptor drops the flock
            self._lock_handle = None

    def _prepare(self, cfg: RunConfig, resume: bool, world_size: int, device: str, recipe: dict | None = None) -> None:
        digest = config_hash(cfg)
        self._refuse_finished()
        cfg_file = self.path / "config.yaml"
        # --resume on a run that never reached its first checkpoint starts it afresh (same config only)
        if cfg_file.is_file() and not resume:
            raise InputError(cfg_file, "a run with this name exists but is unfinished",
                             "pass --resume to continue it, or choose another name=")
        if resume and cfg_file.is_file():
            from harness.config.load import config_from_dict, read_yaml_file

            old = config_hash(config_from_dict(read_yaml_file(cfg_file)))
            if old != digest:
                raise InputError(cfg_file, f"--resume with a different config (hash {old} vs {digest})",
                                 "resume with the run's own config, or start a new run name")
        self.clean_orphans()
        write_text_atomic(cfg_file, f"# config_hash: {digest}\n" + dump_config(cfg))
        env = environment(world_size, device, cfg.model.sparse_backend)
        if recipe is not None:  # batch and lr on this world size, "original" or "scaled" (harness/engine/recipe.py)
            env["recipe"] = recipe
        write_json_atomic(self.path / "env.json", env)

    def clean_orphans(self) -> list[Path]:
        """Remove temp files of atomic writes a killed process left (``.last.pt.*.tmp`` can be as large as a
        checkpoint). Only under the run lock: no live writer owns them then."""
        removed = []
        for folder in (self.path, self.path / "checkpoints"):
            for tmp in folder.glob(".*.tmp"):
                if tmp.is_file():
                    tmp.unlink()
                    removed.append(tmp)
        if removed:
            print(f"[run store] removed {len(removed)} temp file(s) left by an interrupted write: "
                  + ", ".join(p.name for p in removed), file=sys.stderr)
        return removed

    def append_log(self, record: dict) -> None:
        with open(self.path / "train_log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_log(self, after_step: int, validated_at_step: bool = True) -> None:
        """On resume, drop log lines past the checkpoint's step (they were written by the killed process);
        ``after_step=0`` on a fresh start. ``validated_at_step`` False: the checkpoint was written before the
        validation of its step, so a ``val_miou`` line at that step is dropped too (the resumed run writes it). A torn last line (killed or disk full mid-write) is dropped with a note;
        a broken line elsewhere is an error naming the file."""
        log = self.path / "train_log.jsonl"
        if not log.is_file():
            return
        lines = log.read_bytes().split(b"\n")
        kept = []
        for i, raw in enumerate(lines):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                if i == len(lines) - 1:  # no newline after it: the write was cut
                    print(f"[run store] {log}: dropped a torn last line ({len(raw)} bytes) left by an interrupted "
                          "write", file=sys.stderr)
                    continue
                raise InputError(log, f"line {i + 1} is not JSON", "delete the run folder and retrain") from None
            step = record.get("step", 0)
            if step < after_step or (step == after_step and (validated_at_step or "val_miou" not in record)):
                kept.append(raw.decode() + "\n")
        write_text_atomic(log, "".join(kept))

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
