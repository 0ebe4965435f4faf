"""Independent restatement of semantic-kitti-api's documented evaluation semantics
(``auxiliary/np_ioueval.py`` + ``evaluate_semantics.py`` / ``evaluate_semantics_by_distance.py``,
commit a9c749e). Written for the equivalence tests only."""
import numpy as np
import yaml

from harness.data.labelmap import LABEL_DIR


class ApiIoUEval:
    def __init__(self, n_classes: int, ignore=(0,)):
        self.n = n_classes
        self.ignore = list(ignore)
        self.include = [c for c in range(n_classes) if c not in ignore]
        self.conf = np.zeros((n_classes, n_classes), dtype=np.int64)  # conf[pred, gt]

    def add_batch(self, pred, gt):
        np.add.at(self.conf, (np.asarray(pred), np.asarray(gt)), 1)

    def stats(self):
        conf = self.conf.copy()
        conf[:, self.ignore] = 0
        tp = np.diag(conf)
        return tp, conf.sum(axis=1) - tp, conf.sum(axis=0) - tp

    def iou(self):
        tp, fp, fn = self.stats()
        union = tp + fp + fn + 1e-15
        return (tp[self.include] / union[self.include]).mean(), tp / union

    def acc(self):
        tp, fp, _ = self.stats()
        return tp.sum() / (tp[self.include].sum() + fp[self.include].sum() + 1e-15)


def api_remap_lut() -> np.ndarray:
    """``remap_lut = zeros(max_key + 100); lut[keys] = values`` -- unknown ids < 359 map to 0."""
    cfg = yaml.safe_load((LABEL_DIR / "semantic-kitti.yaml").read_text())
    keys = np.array(list(cfg["learning_map"].keys()))
    lut = np.zeros(keys.max() + 100, dtype=np.int32)
    lut[keys] = list(cfg["learning_map"].values())
    return lut


DISTANCES = [(1e-8, 10), (10, 20), (20, 30), (30, 40), (40, 50)]


def api_evaluate_files(pairs):
    """pairs: iterable of (scan .bin path, label path, prediction path). Returns (overall, per-distance)."""
    lut = api_remap_lut()
    overall = ApiIoUEval(20)
    by_dist = [ApiIoUEval(20) for _ in DISTANCES]
    for scan, label, pred in pairs:
        gt = lut[np.fromfile(label, dtype=np.int32) & 0xFFFF]
        pr = lut[np.fromfile(pred, dtype=np.int32) & 0xFFFF]
        overall.add_batch(pr, gt)
        depth = np.linalg.norm(np.fromfile(scan, dtype=np.float32).reshape(-1, 4)[:, :3], axis=1)
        for (lo, hi), ev in zip(DISTANCES, by_dist):
            m = (depth > lo) & (depth < hi)
            ev.add_batch(pr[m], gt[m])
    return overall, by_dist
