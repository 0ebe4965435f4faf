"""Checkpoints for exact resume: model, optimizer, scheduler, AMP scaler, distiller, epoch/step, RNG.

Writes are atomic (temp file + rename), so a SIGKILL mid-write leaves the previous checkpoint intact.
Loading uses ``torch.load(weights_only=True)``: every entry is a tensor, a number, a string or a
container of those (RNG states are stored as uint8 tensors / plain lists).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import InputError
from harness.io import atomic_path


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),  # Mersenne-Twister key, as plain ints
        "python_pos": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(int(x) for x in state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **entries: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save({**entries, "rng": rng_state()}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a directory, not a checkpoint file", "point at the .pt file (checkpoints/last.pt)")
    if not path.is_file():
        raise InputError(path, "checkpoint not found", "train the run first or point at its checkpoints/last.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, foreign pickle
        raise InputError(path, f"cannot load checkpoint ({err.__class__.__name__}: {err})",
                         "use a checkpoint written by harness train (plain tensors, weights_only)") from None
    if not isinstance(state, dict):
        raise InputError(path, f"holds a {type(state).__name__}, not a mapping", "use a checkpoint written by harness train")
    return state


def model_identity(model_cfg: Any, dataset: str) -> dict[str, Any]:
    """What a checkpoint records about the network its weights belong to (checked on load): SPVCNN and MinkUNet
    share every parameter name and shape, so a strict ``load_state_dict`` alone cannot tell them apart."""
    return {"backbone": model_cfg.backbone, "width": float(model_cfg.width), "dataset": dataset}


def load_model_weights(model: torch.nn.Module, path: str | Path, expect: dict[str, Any] | None = None) -> None:
    """Load the ``model`` entry of a harness checkpoint (or a bare state_dict), strictly, weights_only=True.

    ``expect`` (:func:`model_identity` of the config): a checkpoint that records another backbone, width or
    dataset is refused (bare state_dicts and older checkpoints record none; the strict load still applies)."""
    state = load_checkpoint(path)
    for key, want in (expect or {}).items():
        got = state.get(key)
        if got is not None and got != want:
            raise InputError(path, f"the checkpoint holds {key} {got!r} weights, the config asks for {want!r}",
                             f"use a checkpoint of a {want} model, or set the config's model/data to match")
    weights = state.get("model", state)
    if not isinstance(weights, dict) or not weights:
        raise InputError(path, "has no model weights ('model' entry)", "use a checkpoint written by harness train")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise InputError(path, f"weights do not fit the model ({str(err).splitlines()[0]})",
                         "use a checkpoint of the same backbone and width") from None
