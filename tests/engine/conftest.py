"""Tiny generated SemanticKITTI roots for engine tests (official format, ~3.5k points per scan)."""
import pytest

from harness.data.generate import generate_semantickitti


@pytest.fixture(scope="session")
def tiny_kitti(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_kitti")
    generate_semantickitti(root, scans_per_sequence=3, sequences=(0, 8), seed=11, points_scale=0.03)
    return root


def overrides(root, out, name, **extra):
    base = {
        "data.root": str(root), "data.train_sequences": "[0]", "data.val_sequences": "[8]", "data.max_points": "1200",
        "data.max_scans": "2", "train.epochs": "1", "train.global_batch_size": "1",
        "data.num_workers": "0", "output_root": str(out), "name": name,
    }
    base.update({k.replace("__", "."): str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]
