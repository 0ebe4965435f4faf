"""Backend registry: names, availability, ``auto`` resolution, lazy construction.

Names: ``torchref`` (pure torch, always available), ``spconv`` (spconv 2.x, the CUDA 12.6
build ``spconv-cu126``), ``minkowski`` (MinkowskiEngine, optional). ``auto`` means spconv
on CUDA when it imports, torchref otherwise, following the switch proposed for this
harness after mmdetection3d's ``sparseconv_backend`` argument
(open-mmlab/mmdetection3d ``mmdet3d/models/backbones/minkunet_backbone.py``).
Heavy libraries are imported only when their backend is first used.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

import torch

from harness.sparse.backends.base import ConvGeometry, ConvOutput, SparseConvBackend

AUTO = "auto"
TORCHREF = "torchref"
SPCONV = "spconv"
MINKOWSKI = "minkowski"
BACKEND_NAMES: tuple[str, ...] = (TORCHREF, SPCONV, MINKOWSKI)

_BACKEND_CLASSES = {
    TORCHREF: "harness.sparse.backends.torchref:TorchRefBackend",
    SPCONV: "harness.sparse.backends.spconv_backend:SpconvBackend",
    MINKOWSKI: "harness.sparse.backends.minkowski:MinkowskiBackend",
}
_INSTALL_HINTS = {
    SPCONV: "pip install 'pvkd-harness[spconv]'  (spconv-cu126==2.3.8; never the CPU-only `spconv` wheel)",
    MINKOWSKI: "./reproduce.sh setup --minkowski (builds MinkowskiEngine 0.5.4 from its PyPI sdist, tools/build_minkowski.sh)",
}

__all__ = [
    "AUTO",
    "BACKEND_NAMES",
    "ConvGeometry",
    "ConvOutput",
    "SparseConvBackend",
    "backend_available",
    "get_backend",
    "resolve_backend",
]


@lru_cache(maxsize=None)
def backend_available(name: str) -> bool:
    """Whether the backend's library imports (imports it once; torchref is always available)."""
    if name == TORCHREF:
        return True
    try:
        get_backend(name)
    except ImportError:
        return False
    return True


def resolve_backend(name: str, device: torch.device | str) -> str:
    """Concrete backend name for a requested ``name`` on ``device``.

    ``auto`` -> ``spconv`` on CUDA when spconv imports, else ``torchref``. A concrete name is
    returned unchanged after checking that its library imports.

    Raises:
        ValueError: unknown name.
        ImportError: the named backend's library is missing (message has the install hint).
    """
    device = torch.device(device)
    if name == AUTO:
        if device.type == "cuda" and backend_available(SPCONV):
            return SPCONV
        return TORCHREF
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown sparse backend {name!r}; choose one of {(AUTO, *BACKEND_NAMES)}")
    get_backend(name)  # raises ImportError with the install hint
    return name


@lru_cache(maxsize=None)
def get_backend(name: str) -> SparseConvBackend:
    """The (singleton) backend object for a concrete name; imports its library lazily."""
    if name not in _BACKEND_CLASSES:
        raise ValueError(f"unknown sparse backend {name!r}; choose one of {BACKEND_NAMES}")
    module_name, class_name = _BACKEND_CLASSES[name].split(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)()
    except ImportError as error:
        raise ImportError(f"sparse backend {name!r} is not available ({error}). Install: {_INSTALL_HINTS[name]}") from error
