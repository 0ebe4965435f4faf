"""Record a backbone's named tap points with forward hooks, without touching its forward.

mmrazor ``ModuleOutputsRecorder`` / torchdistill ``ForwardHookManager`` pattern: hooks are attached to
the module paths a backbone lists in ``tap_points`` and record only inside ``with recorder:``.
Sparse outputs are *snapshotted* at hook time (features, coordinates, stride): forwards that later
reassign a sparse tensor's features in place cannot change what was recorded
(spconv's in-place ``replace_feature`` pattern). DDP-wrapped models are unwrapped first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn


@dataclass(frozen=True)
class TapValue:
    """What one tap produced: ``feats`` (rows, C) and, for sparse outputs, ``coords`` (rows, 4) and ``stride``."""

    feats: torch.Tensor
    coords: torch.Tensor | None = None
    stride: tuple[int, int, int] | None = None


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def _snapshot(output: Any) -> TapValue:
    if isinstance(output, torch.Tensor):
        return TapValue(output)
    feats = getattr(output, "feats", None)
    if isinstance(feats, torch.Tensor):
        return TapValue(feats, getattr(output, "coords", None), getattr(output, "stride", None))
    if isinstance(output, (tuple, list)) and output:
        return _snapshot(output[0])
    raise TypeError(f"cannot record a tap output of type {type(output).__name__}")


class TapRecorder:
    """``with TapRecorder(model, ["point_logits", "voxel_features"]) as rec: model(batch)``; then ``rec.values``."""

    def __init__(self, model: nn.Module, taps: Iterable[str]) -> None:
        self.model = unwrap(model)
        tap_points: dict[str, str] = getattr(self.model, "tap_points", {})
        self.taps = list(dict.fromkeys(taps))
        missing = [t for t in self.taps if t not in tap_points]
        if missing:
            raise KeyError(f"{type(self.model).__name__} has no tap point(s) {missing}; available: {sorted(tap_points)}")
        modules = dict(self.model.named_modules())
        self.values: dict[str, TapValue] = {}
        self._active = False
        self._handles = []
        for tap in self.taps:
            path = tap_points[tap]
            if path not in modules:
                raise KeyError(f"tap {tap!r} points at {path!r}, which is not a module of {type(self.model).__name__}")
            self._handles.append(modules[path].register_forward_hook(self._hook(tap)))

    def _hook(self, tap: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self._active:
                self.values[tap] = _snapshot(output)
        return hook

    def __enter__(self) -> "TapRecorder":
        self.values = {}
        self._active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self._active = False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
