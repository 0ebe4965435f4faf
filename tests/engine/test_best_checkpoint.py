"""train.eval_every validates periodically; best.pt (highest val mIoU, ties keep the earlier: Cylinder3D's
``best_val_miou < val_miou``, spvnas' MaxSaver) is kept beside last.pt; metrics.json reports both and its top level
scores eval.checkpoint."""
import json

import pytest
import torch

from harness.config.load import load_config
from harness.engine.trainer import Trainer
from tests.engine.conftest import overrides

RECIPE = "harness/configs/recipes/minkunet_student.yaml"


def _train(root, out, name, **extra):
    cfg = load_config(RECIPE, overrides(root, out, name, train__epochs=3, optim__lr=2.0, **extra))
    trainer = Trainer(cfg, device="cpu")
    return trainer, trainer.fit()


@pytest.mark.parametrize("choice", ["best", "last"])
def test_best_and_last_checkpoints(tiny_kitti, tmp_path, choice):
    trainer, metrics = _train(tiny_kitti, tmp_path, choice, eval__checkpoint=choice)
    run = trainer.store.path
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    vals = [(r["epoch"], r["val_miou"]) for r in log if "val_miou" in r]
    assert [e for e, _ in vals] == [1, 2, 3]                       # eval_every 1: after every epoch
    best_epoch, best_miou = max(vals, key=lambda v: (v[1], -v[0]))   # highest, the earliest on a tie
    assert best_epoch != 3  # lr 2.0 on this data: the first epoch's weights score best (best and last differ)
    ck = metrics["checkpoints"]
    assert (ck["best"]["epoch"], ck["best"]["miou"]) == (best_epoch, best_miou)
    assert (ck["last"]["epoch"], ck["last"]["miou"]) == vals[-1]
    assert metrics["scored_checkpoint"] == choice and metrics["miou"] == ck[choice]["miou"]
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["checkpoints"] == ck
    # best.pt holds the weights that scored best: re-evaluating them gives the same mIoU
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == best_epoch
    trainer.model.load_state_dict(best["model"])
    assert trainer.evaluate().result()["miou"] == best_miou


def test_eval_every_skips_epochs_but_scores_the_last(tiny_kitti, tmp_path):
    trainer, metrics = _train(tiny_kitti, tmp_path, "every2", train__eval_every=2)
    log = [json.loads(x) for x in (trainer.store.path / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "val_miou" in r] == [2, 3]   # epoch 2, and the final epoch always
    assert metrics["checkpoints"]["last"]["epoch"] == 3


def test_resume_keeps_the_best_so_far(tiny_kitti, tmp_path, monkeypatch):
    """Interrupted mid-epoch 2 (after epoch 1, the best, was validated) and resumed: best stays epoch 1's."""
    _, full = _train(tiny_kitti, tmp_path, "full")
    assert full["checkpoints"]["best"]["epoch"] == 1
    cfg = load_config(RECIPE, overrides(tiny_kitti, tmp_path, "cut", train__epochs=3, optim__lr=2.0))
    original = Trainer.train_step

    def stop_at_step_4(self, batch):
        if self.global_step == 3:
            raise KeyboardInterrupt("interrupted")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", stop_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, device="cpu").fit()
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = Trainer(cfg, resume=True, device="cpu").fit()
    assert resumed["checkpoints"] == full["checkpoints"] and resumed["miou"] == full["miou"]
