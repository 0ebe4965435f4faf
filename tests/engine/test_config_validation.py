"""Config-time validation (issue 11): every value no training can use is one clear error naming the key,
raised when the config is built -- before any run folder, data or model is touched."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.config.load import PAPER_STORE, load_config, validate_distill
from harness.errors import InputError
from harness.config.experiment import load_profile


@pytest.mark.parametrize("override, key", [
    ("train.epochs=0", "train.epochs"), ("train.epochs=-1", "train.epochs"),
    ("optim.lr=-1", "optim.lr"), ("optim.lr=0", "optim.lr"), ("optim.lr=.nan", "optim.lr"),
    ("train.batch_size=0", "train.batch_size"), ("data.num_workers=-1", "data.num_workers"),
    ("data.max_points=0", "data.max_points"), ("train.log_every=0", "train.log_every"),
    ("train.eval_every=0", "train.eval_every"), ("train.checkpoint_steps=0", "train.checkpoint_steps"),
    ("data.max_scans=0", "data.max_scans"), ("optim.weight_decay=-0.1", "optim.weight_decay"),
    ("train.global_batch_size=0", "train.global_batch_size"), ("optim.warmup_iters=-1", "optim.warmup_iters"),
    ("model.num_input_features=0", "model.num_input_features"),
])
def test_out_of_range_values_are_rejected(override, key):
    with pytest.raises(InputError, match=f"^{key}: .* out of range") as err:
        load_config(None, [override])
    assert "Fix: set " + key in str(err.value)


def test_boundary_values_are_accepted():
    cfg = load_config(None, ["train.epochs=1", "train.batch_size=1", "data.num_workers=0", "data.max_points=1",
                             "train.log_every=1", "optim.weight_decay=0"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.data.max_points) == (1, 1, 1)


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("1.0e-3", 1e-3), ("2E-4", 2e-4), ("-1e+2", -100.0),
                                         (".5", 0.5), ("3", 3.0), ("1_000.5", 1000.5)])
def test_floats_as_users_write_them(text, value):
    key = "optim.grad_clip" if value < 0 else "optim.lr"
    if value < 0:   # parses, then the range check names the key
        with pytest.raises(InputError, match="optim.grad_clip: -100.0 is out of range"):
            load_config(None, [f"{key}={text}"])
        return
    assert load_config(None, [f"{key}={text}"]).optim.lr == value


def test_yaml_file_with_1e_minus_3(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("optim:\n  lr: 1e-3\ndistill:\n  method: kd\n  teacher_run: t\n  coefficients: {kd: 5e-1}\n")
    cfg = load_config(f)
    assert cfg.optim.lr == 0.001 and cfg.distill.coefficients == {"kd": 0.5}
    assert isinstance(cfg.distill.coefficients["kd"], float)


@pytest.mark.parametrize("override, match", [
    ("optim.lr=abc", r"optim.lr: expected float, got 'abc'"),
    ("distill.coefficients={kd: abc}", r"distill.coefficients.kd: expected float, got 'abc'"),
    ("distill.coefficients={kd: -1}", r"distill.coefficients.kd: -1.0 must be a finite number >= 0"),
    ("distill.coefficients={out_point: 1}", r"unknown kd coefficient\(s\) \['out_point'\]"),
    ("distill.options={temprature: 2}", r"unknown kd option\(s\) \['temprature'\] Did you mean: temperature"),
])
def test_distill_coefficients_and_options_checked_against_the_method(override, match):
    with pytest.raises(InputError, match=match):
        load_config(None, ["distill.method=kd", "distill.teacher_run=t", override])


def test_valid_options_pass_and_the_function_is_reusable():
    cfg = load_config(None, ["distill.method=kd", "distill.teacher_run=t", "distill.options={temperature: 2}"])
    assert cfg.distill.options == {"temperature": 2}
    validate_distill("pvd", {"out_point": 0.1}, {})
    with pytest.raises(InputError, match="unknown pvd option"):
        validate_distill("pvd", {}, {"not_an_option": 1})


@pytest.mark.parametrize("override", ["distill.coefficients={kd: 0.1}", "distill.options={temperature: 2}"])
def test_coefficients_or_options_without_a_method_are_not_silently_ignored(override):
    with pytest.raises(InputError, match="without distill.method: it would be ignored"):
        load_config(None, [override])


@pytest.mark.parametrize("name", ["../../../x", "/tmp/abs", "..", "a/b", ""])
def test_run_name_must_stay_inside_output_root(name):
    with pytest.raises(InputError, match="^name: .* is not a plain folder name"):
        load_config(None, [f"name={name!r}" if name else "name=''"])


def test_non_utf8_yaml_is_named(tmp_path):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("optim: {lr: 0.001}  # r\xe9glage\n".encode("latin-1"))
    with pytest.raises(InputError, match=f"{f}: not UTF-8 text .*Fix: save the file as UTF-8"):
        load_config(f)


def test_demo_runs_never_go_into_the_paper_store(tmp_path):
    assert load_profile("paper").output_root == PAPER_STORE
    with pytest.raises(InputError, match="output_root: a demo-profile run would be written into the paper run store"):
        load_config(None, ["profile=demo"])
    assert load_config(None, ["profile=demo", f"output_root={tmp_path}"]).profile == "demo"
    assert load_config(None, []).output_root == PAPER_STORE   # paper runs keep the default


def test_cli_exit_2_and_nothing_written(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "train.epochs=0", f"output_root={out}", "name=x"]) == 2
    assert "train.epochs: 0 is out of range" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "name=../../escape", f"output_root={out}"]) == 2
    assert not out.exists() and not (tmp_path / "escape").exists()
    capsys.readouterr()
    assert main(["train", "--device", "tpu", f"output_root={out}", "name=x"]) == 2
    assert "--device: 'tpu' is not a device" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("override, key", [
    ("train.lr_scaling=cubic", "train.lr_scaling"), ("eval.checkpoint=middle", "eval.checkpoint"),
    ("data.label_map=kitti", "data.label_map"),
])
def test_recipe_choices_are_checked(override, key):
    with pytest.raises(InputError, match=f"^{key}: .* is not one of"):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["model.num_input_features=32", "model.point_refinement=false"])
def test_cylinder3d_settings_on_another_backbone_are_refused(override):
    key = override.split("=")[0]
    with pytest.raises(InputError, match=f"^{key}: is a Cylinder3D setting"):
        load_config("harness/configs/recipes/minkunet.yaml", [override])
