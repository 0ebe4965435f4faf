"""`harness eval` writes raw-id predictions in the submission layout that `harness evaluate` scores
to exactly the metrics eval reports; TTA runs the 4 flips."""
import json

import numpy as np

from harness.cli import main
from harness.config.load import load_config
from harness.data.semantickitti import SemanticKITTI
from harness.engine.trainer import Trainer
from tests.engine.conftest import overrides


def test_eval_predictions_round_trip(tiny_kitti, tmp_path, capsys):
    cfg = load_config("harness/configs/recipes/minkunet_student.yaml",
                      overrides(tiny_kitti, tmp_path, "ev", train__max_steps_per_epoch=1))
    trainer = Trainer(cfg, device="cpu")
    trainer.fit()
    preds = tmp_path / "preds"
    assert main(["eval", "--run", str(trainer.store.path), "--predictions-out", str(preds), "--device", "cpu"]) == 0
    eval_metrics = json.loads((trainer.store.path / "eval_val.json").read_text())
    files = sorted((preds / "sequences/08/predictions").glob("*.label"))
    assert [f.stem for f in files] == ["000000", "000001"]  # data.max_scans=2, full scans (no demo crop)
    val = SemanticKITTI(tiny_kitti, sequences=[8])
    raw = np.fromfile(files[0], dtype=np.uint32)
    assert raw.shape[0] == val[0].points.shape[0]
    assert set(np.unique(raw)) <= set(val.label_map.learning_map_inv.values())  # raw ids, not train ids
    # score the written files independently of the model
    only_two = tmp_path / "two"
    for seq_file in files:
        for sub, ext in (("velodyne", "bin"), ("labels", "label")):
            dst = only_two / "sequences/08" / sub / f"{seq_file.stem}.{ext}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes((tiny_kitti / "sequences/08" / sub / f"{seq_file.stem}.{ext}").read_bytes())
    out = tmp_path / "m.json"
    assert main(["evaluate", "--dataset", "semantickitti", "--root", str(only_two), "--sequences", "08",
                 "--predictions", str(preds), "--out", str(out), "--label-map", "spvnas"]) == 0
    scored = json.loads(out.read_text())
    assert scored["miou"] == eval_metrics["miou"] and scored["confusion_matrix"] == eval_metrics["confusion_matrix"]
    assert main(["eval", "--run", str(trainer.store.path), "--tta", "--device", "cpu"]) == 0
    tta = json.loads((trainer.store.path / "eval_val_tta.json").read_text())
    assert tta["tta"] is True and tta["num_points"] == eval_metrics["num_points"]
    capsys.readouterr()
