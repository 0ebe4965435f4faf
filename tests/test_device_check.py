"""`harness device-check --quick` on CPU: the CPU comparisons run and pass, the CUDA parts are skipped with a
reason, and the comparison notices a wrong computation."""
import copy
import json

import pytest
import torch

from harness.cli import main
from harness import device_check as dc


@pytest.fixture(scope="module")
def report(tmp_path_factory, kitti_root):
    scans = kitti_root  # skips visibly without $PVKD_REAL_DATA
    out = tmp_path_factory.mktemp("dc") / "device_check.json"
    rc = main(["device-check", "--quick", "--scans", str(scans), "--out", str(out)])
    return rc, json.loads(out.read_text())


def test_cpu_run_passes_and_skips_cuda_visibly(report):
    rc, r = report
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the CUDA sections")
    assert rc == 0 and r["passed"] is True
    assert r["amp"]["skipped"].startswith("no CUDA device") and "two CUDA devices" in r["ddp"]["skipped"]
    for kind in ("subm_333", "subm_133", "subm_111", "strided_s2", "inverse_of_s2"):
        row = r["conv_kinds"][kind]
        assert row["cuda"]["skipped"].startswith("no CUDA device")
        assert 0 < row["torchref-cpu"]["max_rel_diff"] <= dc.CONV_TOL  # float32 rounding, not bit-equal, not off
    for name in dc.BACKBONE_NAMES:
        assert r["networks"][name]["torchref-cpu"]["passed"] and r["kernel_map_pairs"][name]["torchref-cpu"]["passed"]
        lat = r["latency"][name]
        assert lat["teacher_over_student"] == pytest.approx(lat["teacher_ms"] / lat["student_ms"])
        assert r["train_step"][name]["step_ms"] > 0
    # Cylinder3D's teacher (c = 32) does ~4x the student's (c = 16) conv work: it must be the slower one
    assert r["latency"]["cylinder3d"]["teacher_over_student"] > 1.5


def test_comparison_detects_a_wrong_conv():
    """A conv whose float32 run uses a perturbed weight fails the check (the reference is not compared with itself)."""
    coords, feats, grid = dc._conv_input(200, 4, seed=1)
    torch.manual_seed(0)
    module = dc.CONV_KINDS["subm_333"](4, 8)
    ref = dc._run_conv(module, coords, feats, grid, "torchref", "cpu", torch.float64)
    wrong = copy.deepcopy(module)
    with torch.no_grad():
        wrong.weight[0, 1, 1, 1, 0] += 1e-2
    got = dc._run_conv(wrong, coords, feats, grid, "torchref", "cpu", torch.float32)
    assert dc.rel_diff(got["out"], ref["out"]) > dc.CONV_TOL
    same = dc._run_conv(module, coords, feats, grid, "torchref", "cpu", torch.float32)
    assert dc.rel_diff(same["out"], ref["out"]) <= dc.CONV_TOL


def test_bad_scan_folder_is_a_named_error(tmp_path, capsys):
    assert main(["device-check", "--quick", "--scans", str(tmp_path), "--out", str(tmp_path / "r.json")]) == 2
    assert "no SemanticKITTI .bin scans" in capsys.readouterr().err and not (tmp_path / "r.json").exists()


def test_no_scans_and_no_setting_is_a_named_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PVKD_REAL_DATA", raising=False)
    assert main(["device-check", "--quick", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "--scans" in err and "PVKD_REAL_DATA" in err and not (tmp_path / "r.json").exists()
