"""Config: YAML differences, base chains, dotted overrides, validation with suggestions, hashing."""
import pytest

from harness.config.load import config_hash, dump_config, load_config
from harness.errors import InputError
from harness.registry import Registry

RECIPES = "harness/configs/recipes"


def test_yaml_diff_chain_and_overrides(tmp_path):
    cfg = load_config(f"{RECIPES}/cylinder3d_student.yaml", ["train.epochs=2", "data.train_sequences=[0,1]"])
    assert (cfg.model.backbone, cfg.model.width, cfg.optim.name, cfg.optim.lr) == ("cylinder3d", 0.5, "adam", 0.001)
    assert cfg.train.epochs == 2 and cfg.data.train_sequences == [0, 1]
    assert cfg.train.global_batch_size == 2  # from the base recipe
    spv = load_config(f"{RECIPES}/spvcnn_student.yaml")
    assert (spv.model.backbone, spv.optim.lr, spv.optim.scheduler, spv.loss.lovasz) == ("spvcnn", 0.24, "cosine_warmup", 0.0)


def test_resolved_config_round_trips_and_hash_tracks_content():
    a = load_config(f"{RECIPES}/minkunet.yaml")
    b = load_config(f"{RECIPES}/minkunet.yaml", ["output_root=/elsewhere"])
    c = load_config(f"{RECIPES}/minkunet.yaml", ["optim.lr=0.1"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert "lr: 0.24" in dump_config(a)


@pytest.mark.parametrize("override, message", [
    ("train.epoch=2", "Did you mean: epochs?"),
    ("model.backbone=cylinder", "Did you mean: cylinder3d?"),
    ("optim.name=adamw", "Did you mean: adam?"),
    ("distill.method=pdv", "Did you mean: pvd?"),
    ("train.epochs=two", "expected int"),
    ("data.dataset=kitti", "is not one of"),
])
def test_invalid_values_fail_with_suggestions(override, message):
    extra = ["distill.teacher_run=x"] if override.startswith("distill") else []
    with pytest.raises(InputError, match=message.replace("?", r"\?")):
        load_config(None, [override, *extra])


def test_distilled_run_needs_a_teacher():
    with pytest.raises(InputError, match="needs a teacher"):
        load_config(None, ["distill.method=kd"])


def test_lazy_registry_imports_on_first_use_and_suggests():
    reg = Registry("thing")
    reg.register("json_dumps", "json:dumps")
    assert reg.get("json_dumps")({"a": 1}) == '{"a": 1}'
    with pytest.raises(KeyError, match="Did you mean: json_dumps"):
        reg.get("json_dump")
