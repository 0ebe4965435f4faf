"""Recipes on any GPU count (global batch kept, or lr rescaled by one rule), the spvnas schedule and label
mapping, and the dry-run plan that shows them. Expected values are computed by hand from the original recipes."""
import math

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.config.load import load_config
from harness.data.labelmap import load_label_map
from harness.engine.recipe import resolve_recipe
from harness.engine.trainer import lr_factor
from harness.errors import InputError

CYL = "harness/configs/recipes/cylinder3d.yaml"
MINK = "harness/configs/recipes/minkunet.yaml"


@pytest.mark.parametrize("recipe, gpus, per, glob, lr, status", [
    # Cylinder3D: global 2, Adam 1e-3 (1 GPU x 2)
    (CYL, 1, 2, 2, 1e-3, "original"), (CYL, 2, 1, 2, 1e-3, "original"),
    (CYL, 8, 1, 8, 4e-3, "scaled"),            # 1 scan per GPU at least: 8 = 4 x 2, lr x 4 (linear)
    # spvnas: global 16, SGD 0.24 (8 GPUs x 2)
    (MINK, 8, 2, 16, 0.24, "original"), (MINK, 1, 16, 16, 0.24, "original"), (MINK, 4, 4, 16, 0.24, "original"),
    (MINK, 32, 1, 32, 0.48, "scaled"), (MINK, 3, 5, 15, 0.24 * 15 / 16, "scaled"),
])
def test_global_batch_is_kept_or_lr_scaled(recipe, gpus, per, glob, lr, status):
    r = resolve_recipe(load_config(recipe), gpus)
    assert (r.world_size, r.per_process_batch, r.global_batch, r.status) == (gpus, per, glob, status)
    assert r.lr == pytest.approx(lr, rel=1e-12)


def test_lr_scaling_rules_and_per_process_mode():
    sqrt = resolve_recipe(load_config(CYL, ["train.lr_scaling=sqrt"]), 8)
    assert sqrt.lr == pytest.approx(1e-3 * 2.0, rel=1e-12) and sqrt.rule == "sqrt"  # sqrt(8 / 2) = 2
    none = resolve_recipe(load_config(CYL, ["train.lr_scaling=none"]), 8)
    assert none.lr == 1e-3 and none.status == "scaled" and none.global_batch == 8
    legacy = resolve_recipe(load_config(CYL, ["train.global_batch_size=null", "train.batch_size=3"]), 4)
    assert (legacy.per_process_batch, legacy.global_batch, legacy.lr, legacy.status) == (3, 12, 1e-3, "per-process")
    with pytest.raises(InputError, match="train.lr_scaling"):
        load_config(CYL, ["train.lr_scaling=cubic"])


def test_spvnas_cosine_schedule_with_warmup():
    """core/schedulers.py: no warm-up on 1 process; 1000 // W steps of (k+1)/W' on W > 1; cosine over the whole
    epochs x iterations, so the last factor is 0.5 (1 + cos(pi (T - 1 - W') / T)) > 0."""
    epochs, spe = 15, 1196  # 19,132 scans / global 16
    total = epochs * spe
    assert lr_factor("cosine_warmup", 0, epochs, spe, 1000, 1) == 1.0
    assert lr_factor("cosine_warmup", 0, epochs, spe, 1000, 8) == 1 / 125
    assert lr_factor("cosine_warmup", 124, epochs, spe, 1000, 8) == 1.0
    assert lr_factor("cosine_warmup", 125, epochs, spe, 1000, 8) == 1.0  # cos(0)
    last = lr_factor("cosine_warmup", total - 1, epochs, spe, 1000, 8)
    assert last == pytest.approx(0.5 * (1 + math.cos(math.pi * (total - 1 - 125) / total)), rel=1e-12)
    assert 0 < last < 1e-3
    assert lr_factor("cosine_warmup", total // 2, epochs, spe, 1000, 1) == pytest.approx(0.5, abs=1e-12)
    assert lr_factor("constant", 10, epochs, spe, 1000, 8) == 1.0


def test_spvnas_recipe_settings():
    cfg = load_config(MINK)
    assert (cfg.train.amp, cfg.data.num_workers, cfg.data.label_map, cfg.optim.warmup_iters) == (True, 8, "spvnas", 1000)
    assert load_config(CYL).data.num_workers == 4


def test_spvnas_label_map_ignores_bus_on_rails_lane_marking():
    official, spvnas = load_label_map("semantickitti"), load_label_map("semantickitti-spvnas")
    raw = np.array([10, 13, 16, 60, 256, 257, 40, 252, 259, 52])
    # car, bus, on-rails, lane-marking, moving-on-rails, moving-bus, road, moving-car, moving-other-vehicle, other-structure
    assert official.to_learning(raw).tolist() == [1, 5, 5, 9, 5, 5, 9, 1, 5, 0]
    assert spvnas.to_learning(raw).tolist() == [1, 0, 0, 0, 0, 0, 9, 1, 5, 0]
    assert spvnas.class_names == official.class_names
    with pytest.raises(InputError, match="data.label_map"):
        load_config(CYL, ["data.dataset=nuscenes", "data.label_map=spvnas"])


def test_dry_run_plan_shows_batch_lr_and_scaling(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SEMANTICKITTI_ROOT", str(tmp_path))
    monkeypatch.setenv("NUSCENES_ROOT", str(tmp_path))
    out = ""
    for table in ("main", "table1"):  # Cylinder3D; MinkUNet and SPVCNN
        assert main(["reproduce", table, "--profile", "paper", "--gpus", "8", "--dry-run"]) == 0
        out += capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if "/seed0" in line]
    by_backbone = {}
    for row in rows:
        folder = next(c for c in row if c.endswith("/seed0"))
        i = row.index(folder)
        by_backbone.setdefault(folder.split("/")[3], set()).add(tuple(row[i - 5:i]))
    assert by_backbone["cylinder3d"] == {("8", "1", "8", "0.004", "scaled")}
    assert by_backbone["minkunet"] == by_backbone["spvcnn"] == {("8", "2", "16", "0.24", "original")}


def test_table_notes_name_scaled_recipes_and_the_scored_checkpoint(tmp_path):
    from harness.report.collect import RunResult
    from harness.report.tables import recipe_notes

    scaled = {"world_size": 8, "per_process_batch": 1, "global_batch": 8, "lr": 0.004, "recipe_global_batch": 2,
              "recipe_lr": 0.001, "status": "scaled", "rule": "linear"}
    original = dict(scaled, per_process_batch=2, global_batch=16, lr=0.24, recipe_global_batch=16, recipe_lr=0.24,
                    status="original", rule="none")
    runs = [RunResult("main", i, "g", label, None, 0, tmp_path, {"recipe": rc, "scored_checkpoint": "best"}, True, 50.0,
                      None) for i, label, rc in (("a", "Cylinder3D", scaled), ("b", "MinkUNet", original))]
    notes = recipe_notes(runs)
    assert notes[0].startswith("Scored checkpoint: best")
    assert notes[1:] == ["Scaled recipe: Cylinder3D (seed 0) trained on 8 GPUs at global batch 8 (recipe 2) with lr "
                         "0.004 (recipe 0.001, linear rule, epochs kept)."]


def test_pinned_batches_pin_every_tensor(monkeypatch):
    """DataLoader(pin_memory=True) pins a custom batch only through its pin_memory(): every tensor, the teacher's
    input among the extras too. (Real pinning needs CUDA; the tensor method is replaced by a recording copy.)"""
    from torch.utils.data._utils.pin_memory import pin_memory

    from harness.engine.data import collate
    from harness.backbones.base import voxelize_for_backbone

    pinned = []

    def fake_pin(self, *args, **kwargs):
        out = self.clone()
        pinned.append(out.data_ptr())
        return out

    points = np.random.default_rng(0).uniform(-20, 20, (500, 4)).astype(np.float32)
    item = {"scan": voxelize_for_backbone("minkunet", points), "labels": None, "index": 0, "num_original": 500,
            "instance": None}
    item["teacher_scan"], item["teacher_labels"] = item["scan"], None
    batch = collate([item])
    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    out = pin_memory(batch)
    tensors = [v for v in out.__dict__.values() if isinstance(v, torch.Tensor)]
    tensors += [v for v in out.extras["teacher_input"].__dict__.values() if isinstance(v, torch.Tensor)]
    assert tensors and all(t.data_ptr() in pinned for t in tensors)
    assert torch.equal(out.voxel_coords, batch.voxel_coords)
