"""`harness profile model`: official parameter counts, MACs = sum of per-layer pairs x Cin x Cout, latency."""
import json

import pytest

from harness.cli import main
from harness.data.generate import generate_semantickitti


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    generate_semantickitti(root, scans_per_sequence=1, sequences=(0,), seed=5, points_scale=0.03)
    return root / "sequences/00/velodyne/000000.bin"


def profile(capsys, scan, backbone, width):
    assert main(["profile", "model", "--backbone", backbone, "--width", width, "--scan", str(scan),
                 "--backend", "torchref", "--repeat", "1", "--warmup", "0"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("backbone, total, used", [("minkunet", 5_449_267, 5_435_235), ("spvcnn", 5_449_267, 5_449_267)])
def test_student_params_and_macs(capsys, small_scan, backbone, total, used):
    r = profile(capsys, small_scan, backbone, "0.5")
    assert r["params"]["state_dict_total"] == total and r["params"]["used_by_forward"] == used
    layers = r["macs_per_layer"]
    assert r["macs"]["total"] == sum(layer["macs"] for layer in layers) > 0
    assert all(layer["macs"] == (layer["pairs"] if "pairs" in layer else layer["rows"]) * layer["in_channels"] * layer["out_channels"]
               for layer in layers)
    assert r["latency"]["repeat"] == 1 and r["latency"]["mean_ms"] > 0 and r["backend"] == "torchref"


def test_cylinder3d_reports_refinement_head_and_quarter_macs(capsys, small_scan):
    student = profile(capsys, small_scan, "cylinder3d", "0.5")
    teacher = profile(capsys, small_scan, "cylinder3d", "1.0")
    modules = student["params"]["per_module"]
    assert modules["cylinder_3d_generator"]["total"] + modules["cylinder_3d_spconv_seg"]["total"] == 14_071_542
    assert modules["point_refinement"]["total"] == 126_164
    assert teacher["params"]["per_module"]["cylinder_3d_spconv_seg"]["total"] + \
        teacher["params"]["per_module"]["cylinder_3d_generator"]["total"] == 55_853_366
    ratio = student["macs"]["sparse_conv"] / teacher["macs"]["sparse_conv"]
    assert 0.24 < ratio < 0.27  # halving every width quarters Cin x Cout (the paper: ~0.25 student/teacher)
    assert student["legacy_spconv1_keys"] is True
