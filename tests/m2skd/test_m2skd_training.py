"""M2SKD end to end through the same runner: a fused-scan teacher trains, then a single-scan student
is distilled from it (teacher input fused, student input single) and evaluated on target points."""
import json

import pytest

from harness.config.load import load_config
from harness.data.generate import generate_semantickitti
from harness.engine.trainer import Trainer
from tests.engine.conftest import overrides

RECIPES = "harness/configs/recipes"


@pytest.fixture(scope="module")
def sequence_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("m2skd_kitti")
    generate_semantickitti(root, scans_per_sequence=6, sequences=(0, 8), seed=4, points_scale=0.03)
    return root


def cfg(recipe, root, out, **extra):
    return load_config(f"{RECIPES}/{recipe}.yaml", overrides(
        root, out, recipe, data__max_points=1500, data__max_scans=6, train__max_steps_per_epoch=2, model__width=0.5, **extra))


def test_fused_teacher_then_m2skd_student(sequence_root, tmp_path):
    teacher = Trainer(cfg("m2skd_teacher", sequence_root, tmp_path), device="cpu")
    # training items of later frames carry fused hard-class points after the target scan's own points
    item = teacher.train_set[5]
    assert item["num_original"] <= item["scan"].num_points
    t_metrics = teacher.fit()
    assert t_metrics["num_points"] == 6 * 1500  # evaluated on the 6 val target scans' own (cropped) points only
    student_cfg = cfg("m2skd_student", sequence_root, tmp_path, **{"distill.teacher_run": str(teacher.store.path)})
    student = Trainer(student_cfg, device="cpu")
    batch = next(iter(student.train_loader))
    assert "teacher_input" in batch.extras and "point_instance" in batch.extras
    metrics = student.fit()
    log = [json.loads(line) for line in (student.store.path / "train_log.jsonl").read_text().splitlines()]
    assert {"distill.logit", "distill.affinity"} <= set(log[0])
    assert metrics["method"] == "m2skd" and metrics["num_points"] == 6 * 1500
