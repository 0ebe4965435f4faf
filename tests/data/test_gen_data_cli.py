"""``harness gen-data`` (issue 11): bad arguments are one exit-2 error; an interrupted generation leaves no half
dataset (it is written under a temporary name and moved into place when complete)."""
from __future__ import annotations

import subprocess

import pytest

from harness.cli import main
from harness.data import generate
from harness.data.semantickitti import SemanticKITTI


def gen(out, *extra):
    return main(["gen-data", "--format", "semantickitti", "--out", str(out), "--scans", "1", "--points-scale", "0.01",
                 *extra])


def test_bad_arguments(tmp_path, capsys):
    assert gen(tmp_path / "a", "--sequences", "abc") == 2
    assert "--sequences: ['abc'] are not sequence numbers" in capsys.readouterr().err
    f = tmp_path / "file"
    f.write_text("x")
    assert gen(f) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_interrupted_generation_leaves_nothing_and_a_rerun_works(tmp_path, monkeypatch, capsys):
    real = generate.generate_semantickitti

    def killed_half_way(out, **kw):
        (out / "sequences" / "00" / "velodyne").mkdir(parents=True)
        (out / "sequences" / "00" / "velodyne" / "000000.bin").write_bytes(b"\0" * 16)
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "generate_semantickitti", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        gen(tmp_path / "kitti", "--sequences", "00")
    assert list(tmp_path.iterdir()) == []
    # kill -9 skips clean-up: the temp folder of a dead process is removed by the next run
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".kitti.partial-{dead.pid}" / "sequences").mkdir(parents=True)
    monkeypatch.setattr(generate, "generate_semantickitti", real)
    assert gen(tmp_path / "kitti", "--sequences", "00") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kitti"]
    assert len(SemanticKITTI(tmp_path / "kitti", sequences=[0])) == 1
    # adding a sequence to an existing root joins it; regenerating one refuses and changes nothing
    assert gen(tmp_path / "kitti", "--sequences", "08") == 0
    assert sorted(p.name for p in (tmp_path / "kitti" / "sequences").iterdir()) == ["00", "08"]
    capsys.readouterr()
    assert gen(tmp_path / "kitti", "--sequences", "08") == 2
    assert "already holds scans" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kitti"]


def test_reproduce_data_step_removes_a_killed_runs_partial_folder(tmp_path):
    """./reproduce.sh generates into ``<root>.partial-<pid>``; after a kill -9 the next call removes it."""
    from pathlib import Path
    from types import SimpleNamespace

    from harness.reproduce.execute import generate_data
    from harness.reproduce.plan import generated_root
    from harness.config.experiment import Profile

    gen_settings = {"format": "semantickitti", "scans": 1, "sequences": [8], "seed": 0, "points_scale": 0.01}
    profile = Profile(name="demo", output_root=str(tmp_path / "runs"), tables_dir="t", figures_dir="f", logs_dir="l",
                      path=tmp_path / "p.yaml", data_dir=str(tmp_path / "data"),
                      data={"semantickitti": {"generate": gen_settings}})
    root = Path(generated_root(profile, "semantickitti"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = root.with_name(f"{root.name}.partial-{dead.pid}")
    (orphan / "sequences" / "08" / "velodyne").mkdir(parents=True)
    messages: list[str] = []
    generate_data(SimpleNamespace(profile=profile, data_roots={"semantickitti": str(root)}), echo=messages.append)
    assert not orphan.exists() and (root / ".complete").is_file()
    assert any("removed 1 half-generated folder" in m for m in messages)
    assert sorted(p.name for p in root.parent.iterdir()) == [root.name]
