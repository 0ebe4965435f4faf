"""Whether the MinkowskiEngine tests run here: skip visibly where it is not installed, fail in CI.

CI (``.ci/run``) installs MinkowskiEngine and sets ``PVKD_REQUIRE_MINKOWSKI=1``, so a missing or
broken install there is a test failure, never a silent skip.
"""

from __future__ import annotations

import os

import pytest

INSTALL_HINT = "./reproduce.sh setup --minkowski (builds MinkowskiEngine 0.5.4 from the PyPI sdist, 6-50 min on 2 cores)"


def require_minkowski() -> None:
    """Module-level guard of every MinkowskiEngine test module."""
    from harness.sparse import backend_available

    if backend_available("minkowski"):
        return
    try:
        import MinkowskiEngine  # noqa: F401
        reason = "MinkowskiEngine imports but the minkowski backend does not"
    except ImportError as error:
        reason = f"MinkowskiEngine is not importable ({error})"
    if os.environ.get("PVKD_REQUIRE_MINKOWSKI") == "1":
        pytest.fail(f"{reason}, and PVKD_REQUIRE_MINKOWSKI=1 requires it. Install: {INSTALL_HINT}", pytrace=False)
    pytest.skip(f"{reason}: MinkowskiEngine tests skipped. Install: {INSTALL_HINT}", allow_module_level=True)
