"""``harness predict``: evaluate a trained run (or a checkpoint + config) and write predictions.

Predictions go to ``OUT/sequences/NN/predictions/XXXXXX.label`` (SemanticKITTI submission layout,
raw ids through ``learning_map_inv``) for every scan of the split, on the full scan (the demo
profile's training crop is not applied here). Optional test-time augmentation as the authors'
test script (Codes-for-PVKD ``test_cyl_sem_tta.py``, 4 votes): the scan and its x-, y- and
xy-flipped copies, softmax scores summed.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from harness.backbones.base import collate_scans, label_offset
from harness.config.load import config_from_dict
from harness.data.datasets import dataset_spec
from harness.engine.checkpoint import load_model_weights, model_identity
from harness.engine.data import build_reader
from harness.engine.trainer import build_model
from harness.errors import InputError
from harness.evaluate.runner import accumulate
from harness.io import staging_dir, write_json_atomic
from harness.backbones.base import voxelize_for_backbone

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
             predictions_out: str | Path | None = None, tta: bool | None = None, split: str = "val",
             device: str | None = None) -> dict:
    """Score ``split`` and/or write its predictions. A label-free split (test) writes predictions only.

    Predictions are written into a temporary sibling folder that replaces ``predictions_out`` only when every
    scan succeeded: a failure half-way never leaves a blend of two models' predictions behind."""
    from harness.config.load import read_yaml_file
    from harness.engine.data import LABEL_FREE_SPLITS, SPLITS
    from harness.engine.device import resolve_device

    if split not in SPLITS:
        raise InputError("--split", f"{split!r} is not a split", f"use one of {', '.join(SPLITS)}")
    if run_dir is not None:
        run_dir = Path(run_dir)
        config, checkpoint = run_dir / "config.yaml", run_dir / "checkpoints" / "last.pt"
    if config is None or checkpoint is None:
        raise InputError("--run/--checkpoint", "no model given", "pass --run DIR, or --checkpoint FILE --config FILE")
    config = Path(config)
    if not config.is_file():
        raise InputError(config, "config not found", "point --run at a run folder with config.yaml")
    cfg = config_from_dict(read_yaml_file(config))
    tta = cfg.eval.tta if tta is None else bool(tta)  # the run's eval.tta unless --tta / --no-tta says otherwise
    if run_dir is not None:  # the checkpoint the run's tables score (eval.checkpoint: best.pt by default)
        scored = run_dir / "checkpoints" / f"{cfg.eval.checkpoint}.pt"
        checkpoint = scored if scored.is_file() else checkpoint
    if split in LABEL_FREE_SPLITS and predictions_out is None:
        raise InputError("--split", f"the {split} split has no labels: there is nothing to score",
                         "pass --predictions-out DIR to write its predictions")
    if predictions_out is not None and cfg.data.dataset != "semantickitti":
        raise InputError("--predictions-out", "prediction files are written in the SemanticKITTI layout only",
                         "drop --predictions-out for nuScenes runs")
    out_dir = _check_predictions_out(predictions_out)
    dev = resolve_device(device)
    model = build_model(cfg.model, cfg.data.dataset)
    load_model_weights(model, checkpoint, model_identity(cfg.model, cfg.data.dataset))
    model.to(dev).eval()
    reader = build_reader(cfg, split)
    spec = dataset_spec(cfg.data.dataset)
    lm = spec.label_map
    count = len(reader) if cfg.data.max_scans is None else min(len(reader), cfg.data.max_scans)
    with (staging_dir(out_dir) if out_dir is not None else contextlib.nullcontext()) as staging:
        def triples():
            """Predict every scan (writing its file when exporting); yield the labelled ones for scoring."""
            for i in range(count):
                scan = reader[i]
                pred = predict_scan(model, cfg.model.backbone, np.ascontiguousarray(scan.points[:, :4]), cfg.data.dataset,
                                    tta, dev)
                if staging is not None:
                    ref = scan.ref
                    target = staging / "sequences" / ref.sequence / "predictions" / f"{ref.frame}.label"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    lm.to_raw(pred).astype(np.uint32).tofile(target)
                if scan.labels is not None:
                    yield scan.points[:, :3], scan.labels, pred

        acc = accumulate(triples(), spec)
        if staging is not None:
            _replace_dir(staging, out_dir)
    result = acc.result() if acc.num_scans else {"num_scans": 0}
    result.update({"tta": tta, "split": split, "checkpoint": str(checkpoint)})
    if out_dir is not None:
        result["predictions"] = str(out_dir)
    if run_dir is not None and acc.num_scans:  # no scores file for a split without labels
        write_json_atomic(run_dir / f"eval_{split}{'_tta' if tta else ''}.json", result)
    return result


def _check_predictions_out(path: str | Path | None) -> Path | None:
    """``--predictions-out`` must be a new folder or one holding only an earlier ``sequences/`` export."""
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(path, "exists and is not a folder", "pass a folder path for --predictions-out")
    if path.is_dir() and any(p.name != "sequences" for p in path.iterdir()):
        raise InputError(path, "holds files other than an earlier predictions export (sequences/)",
                         "choose an empty or new folder for --predictions-out")
    return path


def _replace_dir(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; an earlier export there is replaced as a whole (renames, then removal)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
