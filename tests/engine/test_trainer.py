"""End-to-end runs through the real backbones on generated scans: files left, terms logged,
distillation through hooks with a placeholder distiller, NaN stop."""
import json

import numpy as np
import pytest
import torch
import yaml

from harness.config.load import config_hash, load_config
from harness.distill.base import DISTILLERS, Distiller
from harness.engine.trainer import Trainer, TrainingDiverged
from harness.errors import InputError
from tests.engine.conftest import overrides

RECIPES = "harness/configs/recipes"


def train(recipe, root, out, name, **extra):
    cfg = load_config(f"{RECIPES}/{recipe}.yaml", overrides(root, out, name, **extra))
    trainer = Trainer(cfg, device="cpu")
    return trainer, trainer.fit()


@pytest.mark.parametrize("recipe", ["cylinder3d_student", "minkunet_student"])
def test_run_leaves_every_file(tiny_kitti, tmp_path, recipe):
    trainer, metrics = train(recipe, tiny_kitti, tmp_path, "r", train__max_steps_per_epoch=2)
    run = trainer.store.path
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "confusion.npz", "env.json",
                                                       "metrics.json", "train_log.jsonl"]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["schema_version"] == 1 and saved["config_hash"] == config_hash(trainer.cfg)
    assert 0.0 <= saved["miou"] <= 1.0 and len(saved["iou_per_class"]) == 19
    assert set(saved["per_distance"]) == {"harness", "official"} and saved["params"] > 0 and saved["macs_per_scan"] > 0
    conf = np.load(run / "confusion.npz")
    assert conf["overall"].sum() == saved["num_points"] == 2 * 1200  # 2 val scans cropped to 1200 points
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 2] and "val_miou" in log[2]  # two steps, then the validation
    assert saved["checkpoints"]["best"]["epoch"] == saved["checkpoints"]["last"]["epoch"] == 1
    assert (run / "checkpoints" / "best.pt").is_file()
    assert "seg.voxel_ce" in log[0] and np.isfinite(log[0]["total"])
    if recipe.startswith("cylinder3d"):
        assert {"seg.voxel_lovasz", "seg.point_ce", "seg.point_lovasz"} <= set(log[0])
    env = json.loads((run / "env.json").read_text())
    assert env["world_size"] == 1 and env["torch"] == torch.__version__
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["width"] == 0.5 and resolved["data"]["max_points"] == 1200
    # a finished run is never overwritten silently
    with pytest.raises(InputError, match="run already finished"):
        train(recipe, tiny_kitti, tmp_path, "r", train__max_steps_per_epoch=2)


class PlaceholderMSE(Distiller):
    """Test-only distiller: MSE between student and teacher point logits."""

    @classmethod
    def default_coefficients(cls, backbone):
        return {}  # not a paper method: no Table 4 entry

    student_taps = ("point_logits", "voxel_features")
    teacher_taps = ("point_logits", "voxel_features")
    terms = ("mse",)
    calls = 0
    nan_after: int | None = None

    def compute(self, student, teacher, batch):
        PlaceholderMSE.calls += 1
        assert not teacher["point_logits"].feats.requires_grad
        assert student["point_logits"].feats.requires_grad
        value = ((student["point_logits"].feats - teacher["point_logits"].feats) ** 2).mean()
        if self.nan_after is not None and PlaceholderMSE.calls > self.nan_after:
            value = value * float("nan")
        return {"mse": value}


@pytest.fixture(scope="module")
def teacher_run(tiny_kitti, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    trainer, _ = train("minkunet", tiny_kitti, out, "teacher", train__max_steps_per_epoch=1)
    return trainer.store.path


def test_distilled_run_through_hooks(tiny_kitti, tmp_path, teacher_run):
    DISTILLERS.register("test_mse", PlaceholderMSE)
    PlaceholderMSE.calls, PlaceholderMSE.nan_after = 0, None
    trainer, metrics = train("minkunet_student", tiny_kitti, tmp_path, "kd", train__max_steps_per_epoch=2,
                             distill__method="test_mse", distill__coefficients__mse=1.0,
                             distill__teacher_run=str(teacher_run))
    assert PlaceholderMSE.calls == 2
    assert not any(p.requires_grad for p in trainer.teacher.parameters()) and not trainer.teacher.training
    log = [json.loads(line) for line in (trainer.store.path / "train_log.jsonl").read_text().splitlines()]
    assert all("distill.mse" in r and r["distill.mse"] > 0 for r in log if "total" in r)
    assert metrics["teacher_run"] == str(teacher_run) and metrics["method"] == "test_mse"


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tiny_kitti, tmp_path, teacher_run):
    DISTILLERS.register("test_mse", PlaceholderMSE)
    PlaceholderMSE.calls, PlaceholderMSE.nan_after = 0, 1
    with pytest.raises(TrainingDiverged, match="non-finite loss at epoch 0 step 1") as err:
        train("minkunet_student", tiny_kitti, tmp_path, "nan", train__max_steps_per_epoch=3, train__checkpoint_steps=1,
              distill__method="test_mse", distill__coefficients__mse=1.0, distill__teacher_run=str(teacher_run))
    assert "last good checkpoint" in str(err.value)
    ckpt = torch.load(tmp_path / "semantickitti/minkunet/nan/seed0/checkpoints/last.pt", weights_only=True)
    assert ckpt["global_step"] == 1
    PlaceholderMSE.nan_after = None


def test_nan_before_the_first_checkpoint_says_none_exists(tiny_kitti, tmp_path, teacher_run):
    DISTILLERS.register("test_mse", PlaceholderMSE)
    PlaceholderMSE.calls, PlaceholderMSE.nan_after = 0, 0
    with pytest.raises(TrainingDiverged, match="non-finite loss at epoch 0 step 0") as err:
        train("minkunet_student", tiny_kitti, tmp_path, "nan0", train__max_steps_per_epoch=2,
              distill__method="test_mse", distill__coefficients__mse=1.0, distill__teacher_run=str(teacher_run))
    assert "No checkpoint exists yet" in str(err.value) and "last good checkpoint" not in str(err.value)
    assert not (tmp_path / "semantickitti/minkunet/nan0/seed0/checkpoints/last.pt").exists()
    PlaceholderMSE.nan_after = None


@pytest.mark.parametrize("recipe, outputs", [("cylinder3d_student", 17), ("minkunet_student", 16)])
def test_nuscenes_run_uses_the_16_class_head(tmp_path_factory, tmp_path, recipe, outputs):
    pytest.importorskip("nuscenes", reason="nuscenes-devkit not installed")
    from harness.data.generate import generate_nuscenes

    root = tmp_path_factory.mktemp("nusc")
    generate_nuscenes(root, scans=10, seed=2)  # 10 key frames cover every v1.0-mini scene (the devkit splits need them)
    cfg = load_config(f"{RECIPES}/{recipe}.yaml", [
        f"data.root={root}", "data.dataset=nuscenes", "data.version=v1.0-mini", "data.max_points=3000",
        "train.epochs=1", "train.global_batch_size=1", "train.max_steps_per_epoch=1", f"output_root={tmp_path}", "name=nu",
        "data.num_workers=0"] + (["data.label_map=official"] if "minkunet" in recipe else []))  # spvnas map: KITTI only
    trainer = Trainer(cfg, device="cpu")
    head = trainer.model.cylinder_3d_spconv_seg.logits if recipe.startswith("cylinder3d") else trainer.model.classifier[0]
    assert (head.out_channels if hasattr(head, "out_channels") else head.out_features) == outputs
    metrics = trainer.fit()
    assert metrics["convention"] == "nuscenes" and len(metrics["iou_per_class"]) == 16
    assert metrics["num_points"] > 0


def test_tensorboard_option(tiny_kitti, tmp_path):
    import importlib.util

    cfg = load_config(f"{RECIPES}/minkunet_student.yaml",
                      overrides(tiny_kitti, tmp_path, "tb", train__max_steps_per_epoch=1, train__tensorboard="true"))
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(InputError, match="train.tensorboard: TensorBoard is not installed"):
            Trainer(cfg, device="cpu")
    else:
        trainer = Trainer(cfg, device="cpu")
        trainer.fit()
        assert list((trainer.store.path / "tensorboard").glob("events.out.tfevents.*"))
