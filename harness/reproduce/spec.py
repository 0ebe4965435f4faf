"""Compatibility name: the experiment spec lives in :mod:`harness.config.experiment` (report and reproduce
both read it, so it sits below both)."""
from harness.config.experiment import *  # noqa: F401,F403
from harness.config.experiment import (  # noqa: F401  (names ``import *`` skips)
    _check_keys, _read,
)
