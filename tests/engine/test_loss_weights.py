"""The trainer's objective is the segmentation loss plus sum(coefficient x term), every term weighted by its
own coefficient; a term without one is an error. Also: PVD gets the training split's class frequencies."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.config.load import load_config
from harness.distill.base import DISTILLERS, Distiller
from harness.engine.losses import weighted_total
from harness.engine.trainer import Trainer
from harness.errors import InputError
from tests.data.test_class_frequency import hand_count_kitti
from tests.engine.conftest import overrides

RECIPES = "harness/configs/recipes"
CONSTANTS = {"a": 2.0, "b": 3.0}


def test_weighted_total_by_hand():
    terms = {"seg.voxel_ce": torch.tensor(1.5), "distill.a": torch.tensor(2.0), "distill.b": torch.tensor(3.0)}
    total = weighted_total(terms, {"seg.voxel_ce": 1.0, "distill.a": 0.25, "distill.b": 0.5, "unused": 9.0})
    assert total.item() == pytest.approx(1.5 + 0.25 * 2.0 + 0.5 * 3.0)
    with pytest.raises(InputError, match=r"distill\.coefficients.*\['distill\.b'\] have no coefficient"):
        weighted_total(terms, {"seg.voxel_ce": 1.0, "distill.a": 0.25})


class ConstantTerms(Distiller):
    """Test-only distiller: two terms of known value (2 and 3) that still depend on the student."""

    student_taps = ("point_logits",)
    teacher_taps = ("point_logits",)
    terms = ("a", "b")

    @classmethod
    def default_coefficients(cls, backbone: str) -> dict[str, float]:
        return {}  # no Table 4 row: every coefficient comes from the config (or is missing, which is an error)

    def compute(self, student, teacher, batch):
        zero = student["point_logits"].feats.sum() * 0.0
        return {name: zero + value for name, value in CONSTANTS.items()}


def train(recipe, root, out, name, **extra):
    trainer = Trainer(load_config(f"{RECIPES}/{recipe}.yaml", overrides(root, out, name, **extra)), device="cpu")
    return trainer, trainer.fit()


@pytest.fixture(scope="module")
def teacher_run(tiny_kitti, tmp_path_factory):
    trainer, _ = train("minkunet", tiny_kitti, tmp_path_factory.mktemp("teacher"), "teacher",
                       train__max_steps_per_epoch=1)
    return trainer.store.path


def test_total_is_seg_plus_coefficient_times_term(tiny_kitti, tmp_path, teacher_run):
    """Fails when the trainer ignores the coefficients (weight 1 for every term): the total would be 3 larger."""
    DISTILLERS.register("test_constant_terms", ConstantTerms)
    trainer, _ = train("minkunet_student", tiny_kitti, tmp_path, "weights", train__max_steps_per_epoch=2,
                       distill__method="test_constant_terms", distill__coefficients__a=0.25,
                       distill__coefficients__b=0.5, distill__teacher_run=str(teacher_run))
    log = [r for r in map(json.loads, (trainer.store.path / "train_log.jsonl").read_text().splitlines()) if "total" in r]
    loss = trainer.cfg.loss
    seg_weight = {"ce": loss.cross_entropy, "lovasz": loss.lovasz}
    for record in log:
        assert record["distill.a"] == 2.0 and record["distill.b"] == 3.0
        seg = sum(seg_weight[k.rsplit("_", 1)[1]] * v for k, v in record.items() if k.startswith("seg."))
        assert record["total"] == pytest.approx(seg + 0.25 * 2.0 + 0.5 * 3.0, rel=1e-6)


def test_a_term_without_coefficient_is_an_error(tiny_kitti, tmp_path, teacher_run):
    DISTILLERS.register("test_constant_terms", ConstantTerms)
    with pytest.raises(InputError, match=r"\['distill\.b'\] have no coefficient"):
        train("minkunet_student", tiny_kitti, tmp_path, "missing", train__max_steps_per_epoch=1,
              distill__method="test_constant_terms", distill__coefficients__a=0.25,
              distill__teacher_run=str(teacher_run))


def test_pvd_samples_with_the_training_split_frequencies(tiny_kitti, tmp_path, teacher_run):
    trainer = Trainer(load_config(f"{RECIPES}/minkunet_student.yaml", overrides(
        tiny_kitti, tmp_path, "pvd", train__max_steps_per_epoch=1, distill__method="pvd",
        distill__teacher_run=str(teacher_run))), device="cpu")
    counts = hand_count_kitti(tiny_kitti, ["00"])  # data.train_sequences = [0]
    assert trainer.distiller.class_frequency == pytest.approx((counts / counts.sum()).tolist(), rel=1e-6)
    assert trainer.distiller.kl_class_reduction == "sum"
    # the option wins over the counted values
    official = Trainer(load_config(f"{RECIPES}/minkunet_student.yaml", overrides(
        tiny_kitti, tmp_path, "pvd_official", train__max_steps_per_epoch=1, distill__method="pvd",
        distill__options__class_frequency="labelmap", distill__teacher_run=str(teacher_run))), device="cpu")
    from harness.data.labelmap import load_label_map

    assert official.distiller.class_frequency == pytest.approx(np.asarray(load_label_map("semantickitti").content,
                                                                          dtype=np.float32).tolist())
