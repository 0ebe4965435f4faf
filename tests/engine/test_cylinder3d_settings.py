"""Cylinder3D's F (model.num_input_features) and model.point_refinement=false through the config: without the
head, every point is scored with its voxel's logits (the released Cylinder3D's scoring)."""
import torch

from harness.config.load import load_config
from harness.engine.data import build_loader, move
from harness.engine.dist import DistInfo
from harness.engine.trainer import Trainer, build_model
from tests.engine.conftest import overrides

STUDENT = "harness/configs/recipes/cylinder3d_student.yaml"


def test_teacher_and_student_compression_width():
    teacher = build_model(load_config("harness/configs/recipes/cylinder3d.yaml").model)
    student = build_model(load_config(STUDENT).model)
    # Linear(out_fea_dim 256 -> F): F = 32 for the PVKD teacher, 16 for the 0.5x student
    assert teacher.cylinder_3d_generator.fea_compression[0].weight.shape == (32, 256)
    assert student.cylinder_3d_generator.fea_compression[0].weight.shape == (16, 256)
    assert teacher.cylinder_3d_spconv_seg.downCntx.conv1.weight.shape[-1] == 32  # the 3-D net's input width


def test_no_point_refinement_scores_voxel_predictions(tiny_kitti, tmp_path):
    cfg = load_config(STUDENT, overrides(tiny_kitti, tmp_path, "norefine", train__max_steps_per_epoch=1,
                                         model__point_refinement="false"))
    model = build_model(cfg.model).eval()
    assert model.point_refinement is None and not any(k.startswith("point_refinement.") for k in model.state_dict())
    _, _, loader = build_loader(cfg, "val", DistInfo())
    batch = move(next(iter(loader)), torch.device("cpu"))
    with torch.no_grad():
        out = model(batch)
    p2v = batch.point_to_voxel
    assert torch.equal(out.point_logits, out.voxel_logits[p2v])  # voxel prediction at each point's grid cell
    trainer = Trainer(cfg, device="cpu")
    metrics = trainer.fit()
    assert metrics["point_refinement"] is False
    log = (trainer.store.path / "train_log.jsonl").read_text()
    assert "seg.point_ce" not in log and "seg.voxel_ce" in log  # no point head, no point loss
