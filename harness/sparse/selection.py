"""Switch the backend of every sparse conv in a model, and report which one ran.

    set_backend(model, "torchref")            # persistent
    with use_backend(model, "spconv"): ...    # temporary, restored on exit
    describe_backend(model, device)           # "torchref" -> write it into run metadata
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from harness.sparse.backends import AUTO, BACKEND_NAMES, resolve_backend
from harness.sparse.conv import SparseConvModule


def sparse_conv_modules(model: nn.Module) -> list[tuple[str, SparseConvModule]]:
    """(qualified name, module) for every sparse conv in ``model`` (``model`` itself included)."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, SparseConvModule)]


def set_backend(model: nn.Module, name: str) -> nn.Module:
    """Make every sparse conv in ``model`` use backend ``name`` (``auto`` or a concrete name).

    Parameters are untouched, so the state_dict is unchanged. Returns ``model``.

    Raises:
        ValueError: unknown backend name.
    """
    if name != AUTO and name not in BACKEND_NAMES:
        raise ValueError(f"unknown sparse backend {name!r}; choose one of {(AUTO, *BACKEND_NAMES)}")
    for _, module in sparse_conv_modules(model):
        module.backend = name
    return model


@contextmanager
def use_backend(model: nn.Module, name: str) -> Iterator[nn.Module]:
    """Temporarily switch every sparse conv of ``model`` to ``name``; restores each layer's setting."""
    previous = {id(module): module.backend for _, module in sparse_conv_modules(model)}
    set_backend(model, name)
    try:
        yield model
    finally:
        for _, module in sparse_conv_modules(model):
            module.backend = previous[id(module)]


def describe_backend(model: nn.Module, device: torch.device | str) -> str:
    """Concrete backend the model's sparse convs resolve to on ``device``, for run metadata.

    Returns the single backend name (e.g. ``"spconv"``), ``"+"``-joined sorted names if
    layers differ (e.g. ``"spconv+torchref"``), or ``"none"`` for a model without sparse convs.
    """
    names = sorted({resolve_backend(module.backend, device) for _, module in sparse_conv_modules(model)})
    return "+".join(names) if names else "none"
