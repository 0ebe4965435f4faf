"""Atomic file writes: write to a temporary file in the same folder, then rename.

A crash or a bad input half-way never leaves a partial file behind (the rename is atomic on POSIX
when source and target share a file system, which a sibling temp file guarantees).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp creates 0600; results are ordinary files (0644 under umask 022)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_array_atomic(path: str | Path, array: np.ndarray) -> None:
    """Write a flat binary array (``array.tofile``) atomically: the .bin / .label formats."""
    with atomic_path(path) as tmp:
        np.ascontiguousarray(array).tofile(tmp)


def remove_dead_partials(parent: Path, prefix: str) -> list[Path]:
    """Remove ``<prefix><pid>`` folders whose writing process is gone (killed mid-export or mid-generation)."""
    removed = []
    for stale in parent.glob(f"{prefix}*") if parent.is_dir() else []:
        pid = stale.name[len(prefix):]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def staging_dir(target: str | Path) -> Iterator[Path]:
    """A fresh, empty sibling folder ``.<name>.partial-<pid>`` to build ``target`` in; the caller moves the result
    into place inside the block, and the folder is removed afterwards whatever happened. Folders of the same
    target whose process is gone (``kill -9``) are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(target.parent, f".{target.name}.partial-")
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
