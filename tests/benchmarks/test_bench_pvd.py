"""Speed target of PVD (issue "PVD"): its four terms, forward + backward, on one real scan must cost
at most 10% of the Cylinder3D 0.5x student's own forward + backward on the same scan (CPU, torchref).

* ``test_pvd_terms_forward_backward``: PVD on the real 123,389-point spvnas scan voxelised on the
  cylindrical grid (46,952 voxels), with tap tensors of the real shapes -- point logits (N, 20),
  voxel logits (M, 20), point features (N, 64) for both nets (Cylinder3D's refinement head is not
  halved), voxel features (M, 64) student / (M, 128) teacher -- and the default options (K = 5,
  N_p = N_v = 256, difficulty sampling). Only PVD's graph is timed: the student taps are leaf tensors.
  Absolute bound :data:`PVD_TARGET_MS` (documented below) so the test stands alone.
* ``test_student_forward_backward_ratio`` (slow: 10 s on an idle 2-core machine, minutes on a busy
  one): ``Cylinder3D(width=0.5)`` with the torchref backend, train mode, one forward + backward of
  ``sum(point_logits) + sum(voxel_logits)`` on the same batch; asserts ``PVD median <= 0.10 x student
  median`` -- the issue's criterion. It needs the PVD benchmark's median from the same session (both
  then run under the same load) and skips, before the long run, without it.

Both targets gate only under ``./reproduce.sh bench`` (``PVKD_BENCH_GATE=1``); the default test run records the PVD
figure and skips the timing-only student run.

Measured on the 2-core development machine, torch's default 2 threads:

* idle (load < 1): PVD median 43.6 ms (min 34.6 ms, 18 rounds), student 9.98 s -> 0.44%;
* shared with other jobs (load 6-10): PVD median 0.70-1.3 s (min 0.14-0.6 s; OpenMP threads wait on
  busy cores), student 83-246 s -> 0.3-1.6%.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.backbones.base import collate_scans
from harness.data.labelmap import load_label_map
from harness.data.semantickitti import read_label_file, read_points, split_label
from harness.distill.base import DistillContext
from harness.distill.pvd import PVD
from harness.distill.recorder import TapValue
from harness.backbones.base import voxelize_for_backbone
from tests.benchmarks.conftest import GATE, speed_gate

#: absolute bound for PVD's forward + backward [ms]: a regression guard that stands without the
#: student, not the criterion (that is RATIO_TARGET). 10% of the idle-machine student is ~1 s, but a
#: busy 2-core runner stretched PVD's median to 1.3 s (and the student to minutes), so the guard sits at
#: 3 s: still ~70x the idle median, enough to catch an O(N^2) step or a per-point Python loop.
PVD_TARGET_MS = 3000.0
RATIO_TARGET = 0.10
_MEDIANS: dict[str, float] = {}


@pytest.fixture(scope="module")
def real_batch(spvnas_scan):
    scan, label = spvnas_scan
    points = read_points(scan)
    semantic, _ = split_label(read_label_file(label, num_points=points.shape[0]))
    labels = load_label_map("semantickitti").to_learning(semantic, label)
    return collate_scans([voxelize_for_backbone("cylinder3d", points, labels)], [labels])


def _taps(batch, voxel_width: int, seed: int, grad: bool) -> dict[str, TapValue]:
    g = torch.Generator().manual_seed(seed)
    n, m = batch.point_features.shape[0], batch.voxel_coords.shape[0]
    shapes = {"point_logits": (n, 20), "voxel_logits": (m, 20), "point_features": (n, 64),
              "voxel_features": (m, voxel_width)}
    taps = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
    taps["point_features"] = taps["point_features"].relu()  # post-ReLU like the refinement head's output
    return {k: TapValue(v.requires_grad_(grad)) for k, v in taps.items()}


@pytest.mark.real_data
@pytest.mark.benchmark(group="pvd-real-scan")
def test_pvd_terms_forward_backward(benchmark, real_batch, assert_target):
    assert real_batch.point_features.shape[0] == 123389
    frequency = torch.tensor(load_label_map("semantickitti").content)
    distiller = PVD(DistillContext("cylinder3d", 20, class_frequency=frequency))
    student, teacher = _taps(real_batch, 64, 0, True), _taps(real_batch, 128, 1, False)

    def step():
        for tap in student.values():
            tap.feats.grad = None
        terms = distiller(student, teacher, real_batch)
        torch.stack(list(terms.values())).sum().backward()
        return terms

    terms = benchmark(step)
    assert set(terms) == set(PVD.terms) and all(np.isfinite(v.item()) for v in terms.values())
    assert all(tap.feats.grad is not None for tap in student.values())
    if not benchmark.disabled and benchmark.stats is not None:
        _MEDIANS["pvd"] = benchmark.stats.stats.median
    assert_target(benchmark, PVD_TARGET_MS)


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.benchmark(group="pvd-real-scan")
def test_student_forward_backward_ratio(benchmark, real_batch):
    from harness.backbones.cylinder3d import Cylinder3D

    if benchmark.disabled:
        pytest.skip("timing-only test: nothing to check with benchmarks disabled")
    if not GATE:  # 10 s idle, ~3 min on a loaded 2-core machine, and it checks nothing but speed
        pytest.skip("timing-only test: runs under ./reproduce.sh bench (PVKD_BENCH_GATE=1)")
    if "pvd" not in _MEDIANS:
        pytest.skip("the PVD benchmark did not run in this session; no ratio to check")
    model = Cylinder3D(width=0.5, sparse_backend="torchref").train()

    def step():
        model.zero_grad(set_to_none=True)
        out = model(real_batch)
        (out.point_logits.sum() + out.voxel_logits.sum()).backward()

    benchmark.pedantic(step, rounds=1, iterations=1, warmup_rounds=0)
    student = benchmark.stats.stats.median
    benchmark.extra_info["student_median_s"] = round(student, 3)
    ratio = _MEDIANS["pvd"] / student
    speed_gate(benchmark, ratio <= RATIO_TARGET,
               f"PVD costs {ratio:.1%} of the student's forward+backward (target {RATIO_TARGET:.0%})",
               pvd_over_student=round(ratio, 5))
