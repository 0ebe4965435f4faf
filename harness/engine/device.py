"""One place that turns a ``--device`` string into a ``torch.device``, with a named error for anything unusable."""
from __future__ import annotations

import torch

from harness.errors import InputError


def resolve_device(name: str | None, where: str = "--device") -> torch.device:
    """``None``: cuda when available, else cpu. ``cpu``, ``cuda`` or ``cuda:N`` (N < the GPU count) otherwise."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(where, f"{name!r} is not a device", "use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise InputError(where, f"device type {dev.type!r} is not supported here", "use cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise InputError(where, f"{name!r} asked for, but CUDA is not available on this machine", "use --device cpu")
    if dev.index is not None and dev.index >= count:
        raise InputError(where, f"{name!r}: this machine has {count} CUDA device(s)", f"use cuda:0 .. cuda:{count - 1}")
    return dev
