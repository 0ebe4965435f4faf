"""Experiment files cannot write outside results/, and a student's teacher must be of its backbone and dataset."""
from __future__ import annotations

import pytest

from harness.cli import main
from harness.errors import InputError
from harness.reproduce.plan import build_plan
from harness.config.experiment import load_experiment, load_profile


@pytest.mark.parametrize("line, match", [
    ("table: ../../x", r"table '../../x' is not a plain file name"),
    ("table: /tmp/abs", r"table '/tmp/abs' is not a plain file name"),
])
def test_table_name_cannot_leave_results(tmp_path, line, match, capsys):
    exp = tmp_path / "evil.yaml"
    exp.write_text(f"{line}\nruns:\n  - {{id: t, recipe: minkunet, name: t}}\n")
    with pytest.raises(InputError, match=match):
        load_experiment(exp)
    assert main(["tables", "--table", str(exp)]) == 2
    assert "not a plain file name" in capsys.readouterr().err
    assert not (tmp_path.parent / "x").exists()


def test_group_and_recipe_names_are_plain(tmp_path):
    exp = tmp_path / "g.yaml"
    exp.write_text("table: g\nruns:\n  - {id: ../up/t, recipe: minkunet, name: t}\n")
    with pytest.raises(InputError, match="its group '..' names figure files"):
        load_experiment(exp)
    exp.write_text("table: g\nruns:\n  - {id: t, recipe: ../recipes/minkunet, name: t}\n")
    with pytest.raises(InputError, match="is not a plain name"):
        load_experiment(exp)


@pytest.mark.parametrize("teacher, student, match", [
    ("{id: t, recipe: spvcnn, name: t}", "{id: s, recipe: minkunet_student, name: s, teacher: t, overrides: {distill.method: kd}}",
     "its teacher bad:t is a spvcnn backbone, the student a minkunet one"),
    ("{id: t, recipe: minkunet, name: t, dataset: nuscenes, overrides: {data.label_map: official}}",
     "{id: s, recipe: minkunet_student, name: s, teacher: t, overrides: {distill.method: kd}}",
     "its teacher bad:t is a nuscenes dataset, the student a semantickitti one"),
])
def test_planner_refuses_a_teacher_of_another_backbone_or_dataset(paper_profile, tmp_path, teacher, student, match):
    exp = tmp_path / "bad.yaml"
    exp.write_text(f"table: bad\nruns:\n  - {teacher}\n  - {student}\n")
    with pytest.raises(InputError, match=match):
        build_plan([load_experiment(exp)], load_profile(paper_profile))
