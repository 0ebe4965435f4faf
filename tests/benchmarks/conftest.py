"""Benchmarks check speed targets with pytest-benchmark's own statistics (never timed unit tests).

``assert_target(benchmark, ms)`` compares the median after the run; with ``--benchmark-disable``
the function runs once for correctness and no target is checked.
"""
import pytest


def _assert_median_at_most(benchmark, target_ms: float) -> None:
    if benchmark.disabled or benchmark.stats is None:
        return
    median_ms = benchmark.stats.stats.median * 1e3
    benchmark.extra_info["target_ms"] = target_ms
    benchmark.extra_info["median_ms"] = round(median_ms, 3)
    assert median_ms <= target_ms, f"median {median_ms:.2f} ms exceeds the target {target_ms} ms"


@pytest.fixture
def assert_target():
    return _assert_median_at_most
