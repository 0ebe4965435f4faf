"""``harness eval``: evaluate a trained run (or a checkpoint + config) and write predictions.

Predictions go to ``OUT/sequences/NN/predictions/XXXXXX.label`` (SemanticKITTI submission layout,
raw ids through ``learning_map_inv``) for every scan of the split, on the full scan (the demo
profile's training crop is not applied here). Optional test-time augmentation as the authors'
test script (Codes-for-PVKD ``test_cyl_sem_tta.py``, 4 votes): the scan and its x-, y- and
xy-flipped copies, softmax scores summed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from harness.backbones.base import collate_scans, label_offset
from harness.config.load import config_from_dict
from harness.data.labelmap import load_label_map
from harness.engine.checkpoint import load_model_weights
from harness.engine.data import build_reader
from harness.engine.trainer import build_model
from harness.errors import InputError
from harness.evaluate.runner import Accumulator
from harness.io import write_array_atomic, write_json_atomic
from harness.voxelize import voxelize_for_backbone

FLIPS = ((1, 1), (-1, 1), (1, -1), (-1, -1))  # (x sign, y sign)


@torch.no_grad()
def predict_scan(model, backbone: str, points: np.ndarray, dataset: str, tta: bool, device: torch.device) -> np.ndarray:
    """(N,) learning ids for one scan."""
    offset = label_offset(model)
    scores = None
    for sx, sy in (FLIPS if tta else FLIPS[:1]):
        pts = points.copy()
        pts[:, 0] *= sx
        pts[:, 1] *= sy
        batch = collate_scans([voxelize_for_backbone(backbone, pts, None, None, dataset)]).to(device)
        prob = torch.softmax(model(batch).point_logits.float(), dim=1)
        scores = prob if scores is None else scores + prob
    return (scores.argmax(dim=1) + offset).cpu().numpy()


def run_eval(run_dir: str | Path | None = None, checkpoint: str | Path | None = None, config: str | Path | None = None,
             predictions_out: str | Path | None = None, tta: bool = False, split: str = "val",
             device: str | None = None) -> dict:
    if run_dir is not None:
        run_dir = Path(run_dir)
        config, checkpoint = run_dir / "config.yaml", run_dir / "checkpoints" / "last.pt"
    if config is None or checkpoint is None:
        raise InputError("--run/--checkpoint", "no model given", "pass --run DIR, or --checkpoint FILE --config FILE")
    config = Path(config)
    if not config.is_file():
        raise InputError(config, "config not found", "point --run at a run folder with config.yaml")
    cfg = config_from_dict(yaml.safe_load(config.read_text()))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_model(cfg.model, cfg.data.dataset)
    load_model_weights(model, checkpoint)
    model.to(dev).eval()
    reader = build_reader(cfg, split)
    lm = load_label_map("nuscenes" if cfg.data.dataset == "nuscenes" else "semantickitti")
    acc = Accumulator(lm, "nuscenes" if cfg.data.dataset == "nuscenes" else "semantickitti")
    count = len(reader) if cfg.data.max_scans is None else min(len(reader), cfg.data.max_scans)
    for i in range(count):
        scan = reader[i]
        pred = predict_scan(model, cfg.model.backbone, np.ascontiguousarray(scan.points[:, :4]), cfg.data.dataset, tta, dev)
        if scan.labels is not None:
            acc.add(scan.points[:, :3], scan.labels, np.maximum(pred, 1) if cfg.data.dataset == "nuscenes" else pred)
        if predictions_out is not None and cfg.data.dataset == "semantickitti":
            ref = scan.ref
            write_array_atomic(Path(predictions_out) / "sequences" / ref.sequence / "predictions" / f"{ref.frame}.label",
                               lm.to_raw(pred).astype(np.uint32))
    result = acc.result() if acc.num_scans else {"num_scans": 0}
    result.update({"tta": tta, "split": split, "checkpoint": str(checkpoint)})
    if run_dir is not None:
        write_json_atomic(run_dir / f"eval_{split}{'_tta' if tta else ''}.json", result)
    return result
