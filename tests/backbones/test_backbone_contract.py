"""The Backbone contract: every registered backbone describes itself (grid, Table 4 family, label offset, taps)
and ``build(num_classes, width)`` sizes its head from the dataset's class count."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from harness.backbones.base import (BACKBONES, STANDARD_TAPS, Backbone, backbone_family, collate_scans,
                                    voxelize_for_backbone)
from harness.distill.base import COEFFICIENT_FILE
from harness.voxelize import GRIDS


@pytest.mark.parametrize("name", BACKBONES.names())
def test_registered_backbone_describes_itself(name):
    cls = BACKBONES.get(name)
    assert issubclass(cls, Backbone)
    assert cls.grid in GRIDS
    families = {fam for per_method in yaml.safe_load(COEFFICIENT_FILE.read_text())["coefficients"].values()
                for fam in per_method}
    assert cls.family in families, f"{name}: family {cls.family!r} is no column of coefficients.yaml"
    assert backbone_family(name) == cls.family
    assert len(cls.node_cell) == 3 and all(int(c) >= 1 for c in cls.node_cell)


@pytest.mark.parametrize("name,num_classes,outputs", [
    ("cylinder3d", 20, 20),   # the Cylinder3D head includes the ignored class 0
    ("cylinder3d", 17, 17),
    ("minkunet", 20, 19),     # spvnas heads leave it out: logit j = learning id j + 1
    ("spvcnn", 17, 16),
])
def test_build_sizes_the_head_from_the_dataset(name, num_classes, outputs):
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-20, 20, (600, 2)), rng.uniform(-2, 1, (600, 1)), rng.uniform(0, 1, (600, 1))]
    model = BACKBONES.get(name).build(num_classes, 0.25).eval()
    assert set(STANDARD_TAPS) <= set(model.tap_points)
    with __import__("torch").no_grad():
        out = model(collate_scans([voxelize_for_backbone(name, points.astype(np.float32))]))
    assert out.point_logits.shape == (600, outputs)
    assert model.label_offset == num_classes - outputs


def test_unknown_backbone_names_the_registered_ones():
    with pytest.raises(KeyError, match="Did you mean: minkunet"):
        voxelize_for_backbone("minkunett", np.zeros((4, 4), np.float32))


def test_timing_cli_names_registered_backbones(tmp_path, capsys):
    from harness.cli import main

    scan = tmp_path / "x.bin"
    np.zeros((10, 4), np.float32).tofile(scan)
    assert main(["timing", "data", "--backbone", "minkunett", "--scan", str(scan)]) == 2
    assert "Did you mean: minkunet" in capsys.readouterr().err
    assert main(["profile", "data", "--backbone", "spvcnn", "--scan", str(scan), "--repeat", "1"]) == 0  # old name
