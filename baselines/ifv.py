"""IFV: intra-class feature variation distillation.

Paper: Wang, Zhou, Jiang, Bai, Xu, "Intra-class Feature Variation Distillation for Semantic Segmentation",
ECCV 2020 (IFVD). Official code: YukangWang/IFVD ``utils/criterion.py`` (``CriterionIFV``). PVD coefficient
(PVKD supplement Table 4): ``ifv``.

As implemented, with f the (R, C) penultimate features of the R sites of a batch, y_i their labels
(0 = ignore), s_i their scan, L_b = {i : s_i = b, y_i != 0} the labelled sites of scan b and B' the scans
with labelled sites::

    p_{b,k} = (1 / |{i in L_b : y_i = k}|) * sum_{i in L_b, y_i = k} f_i   (prototype per scan and class)
    M_i     = cos(f_i, p_{s_i, y_i})                                        (i labelled; eps 1e-8)
    L_ifv   = (1/|B'|) * sum_{b in B'} (1/|L_b|) * sum_{i in L_b} (M_i^S - M_i^T)^2

Teacher and student each build their own map from their own features, so widths may differ and no adapter is
needed; the student's prototypes keep their gradient, as in IFVD. Readings: the IFV term alone, labelled sites
only, per-scan prototypes, labels at feature resolution [docs/readings.md#ifv-labelled-sites,
#baselines-levels].

Computed in float32; teacher features are detached.
"""
from __future__ import annotations

from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F

from baselines.nodes import Level, check_level, gather_sites
from harness.backbones.base import BackboneInput
from harness.distill.base import DistillContext, Distiller
from harness.distill.losses import per_scan_mean
from harness.distill.recorder import TapValue
from harness.sparse.point_ops import scatter_mean


def prototype_cosine(feats: torch.Tensor, group: torch.Tensor, num_groups: int, eps: float = 1e-8) -> torch.Tensor:
    """Cosine of each row to the mean of its group: (R, C), (R,) ids in ``[0, num_groups)`` -> (R,), float32."""
    feats = feats.float()
    prototypes = scatter_mean(feats, group, num_groups)
    return F.cosine_similarity(feats, prototypes.index_select(0, group), dim=1, eps=eps)


def ifv_loss(student_feats: torch.Tensor, teacher_feats: torch.Tensor, labels: torch.Tensor,
             scan: torch.Tensor, num_scans: int, ignore_label: int = 0) -> torch.Tensor:
    """L_ifv over (R, C_s), (R, C_t) site features with (R,) labels and scans in ``[0, num_scans)``."""
    labelled = labels != ignore_label
    if not bool(labelled.any()):
        return student_feats.float().sum() * 0.0
    f_s, f_t = student_feats[labelled], teacher_feats.detach()[labelled]
    y, b = labels[labelled], scan[labelled]
    keys, group = torch.unique(b * (int(y.max()) + 1) + y, return_inverse=True)  # one group per (scan, class)
    variation = prototype_cosine(f_s, group, keys.shape[0]) - prototype_cosine(f_t, group, keys.shape[0])
    return per_scan_mean(variation ** 2, b, num_scans)


class IFV(Distiller):
    """IFVD's intra-class feature variation term on penultimate features (module docstring). Term: ``ifv``.

    Args:
        context: backbone name (coefficients), classes.
        coefficients: overrides of Table 4's ``{"ifv": ...}``.
        level: ``"voxel"`` (default) or ``"point"``; the batch must carry labels at that level.
        ignore_label: label of unlabelled sites (default 0, the harness's ignore id).
    """

    method: ClassVar[str] = "ifv"
    terms: ClassVar[tuple[str, ...]] = ("ifv",)

    def __init__(self, context: DistillContext, coefficients: Mapping[str, float] | None = None, *,
                 level: Level = "voxel", ignore_label: int = 0) -> None:
        super().__init__(context, coefficients)
        self.level = check_level(level)
        self.ignore_label = int(ignore_label)
        self.feature_tap = f"{level}_features"
        self.student_taps = self.teacher_taps = (self.feature_tap,)

    def compute(self, student: Mapping[str, TapValue], teacher: Mapping[str, TapValue],
                batch: BackboneInput) -> dict[str, torch.Tensor]:
        f_s = student[self.feature_tap].feats
        sites = gather_sites(self.level, batch, f_s.shape[0], f_s.device)
        if sites.labels is None:
            raise ValueError(f"IFV needs {self.level} labels in the batch (BackboneInput.{self.level}_labels)")
        loss = ifv_loss(sites.take(f_s), sites.take(teacher[self.feature_tap].feats), sites.labels, sites.scan,
                        sites.num_scans, self.ignore_label)
        return {"ifv": loss}

    def extra_repr(self) -> str:
        return f"level={self.level!r}, ignore_label={self.ignore_label}"
