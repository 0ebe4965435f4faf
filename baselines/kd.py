"""KD: vanilla knowledge distillation on the output logits of every site.

Paper: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", NIPS 2014 Deep Learning Workshop,
arXiv 1503.02531. PVD's "KD" row (PVKD Table 1; coefficient ``kd`` of supplement Table 4: 0.2 Cylinder3D,
0.1 SPVNAS, 0.2 MinkowskiNet).

As implemented, with z^S, z^T the (R, K) student / teacher logits of the R sites of a batch, S_b the sites of
scan b and B' the scans that have sites::

    p_i^T = softmax(z_i^T / T),   log p_i^S = log_softmax(z_i^S / T)
    KL_i  = T^2 * sum_k p_ik^T (log p_ik^T - log p_ik^S)                      (KL(p^T || p^S))
    L_kd  = (1/|B'|) * sum_{b in B'} (1/|S_b|) * sum_{i in S_b} KL_i

This is the harness's one output-distillation convention (:func:`harness.distill.losses.site_kl`): summed over
the K classes, mean over sites; ``kl_class_reduction="mean"`` divides by K as well
[docs/readings.md#kl-convention]. Readings: T = 1, the sites (``level``), unlabelled sites, the batch
reduction, ``ignore_logit`` [docs/readings.md#kd-temperature-sites, #baselines-levels].

Computed in float32 whatever the autocast dtype; the teacher's logits are detached.
"""
from __future__ import annotations

from typing import ClassVar, Mapping

import torch

from baselines.nodes import Level, check_level, gather_sites
from harness.backbones.base import BackboneInput
from harness.distill.base import DistillContext, Distiller
from harness.distill.losses import KL_CLASS_REDUCTION, check_class_reduction, kl_divergence, site_kl
from harness.distill.recorder import TapValue


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
            class_reduction: str = KL_CLASS_REDUCTION) -> torch.Tensor:
    """Per-site ``T^2 * KL(softmax(z^T/T) || softmax(z^S/T))``: (R, K), (R, K) -> (R,), float32, teacher detached
    (``class_reduction="mean"``: divided by K)."""
    return kl_divergence(student_logits.float(), teacher_logits.detach().float(), temperature, class_reduction)


def drop_logit(logits: torch.Tensor, index: int | None) -> torch.Tensor:
    """``logits`` without column ``index`` (None: unchanged)."""
    if index is None:
        return logits
    keep = [k for k in range(logits.shape[1]) if k != index % logits.shape[1]]
    return logits[:, keep]


class KD(Distiller):
    """Hinton KD on per-site logits (module docstring). Term: ``kd``.

    Args:
        context: backbone name (coefficients), classes, channel widths.
        coefficients: overrides of Table 4's ``{"kd": ...}``.
        temperature: softmax temperature T (default 1).
        level: ``"voxel"`` (default) or ``"point"`` logits.
        ignore_logit: logit column dropped before the softmax, or None (default: keep all).
        kl_class_reduction: ``"sum"`` (default, the KL) or ``"mean"`` (divided by the number of classes).

    ``compute`` reads ``{level}_logits`` (R, K) from both networks and returns ``{"kd": scalar}``.
    """

    method: ClassVar[str] = "kd"
    terms: ClassVar[tuple[str, ...]] = ("kd",)

    def __init__(self, context: DistillContext, coefficients: Mapping[str, float] | None = None, *,
                 temperature: float = 1.0, level: Level = "voxel", ignore_logit: int | None = None,
                 kl_class_reduction: str = KL_CLASS_REDUCTION) -> None:
        super().__init__(context, coefficients)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.level = check_level(level)
        self.ignore_logit = ignore_logit
        self.kl_class_reduction = check_class_reduction(kl_class_reduction)
        self.logit_tap = f"{level}_logits"
        self.student_taps = self.teacher_taps = (self.logit_tap,)

    def compute(self, student: Mapping[str, TapValue], teacher: Mapping[str, TapValue],
                batch: BackboneInput) -> dict[str, torch.Tensor]:
        z_s = student[self.logit_tap].feats
        z_t = teacher[self.logit_tap].feats
        sites = gather_sites(self.level, batch, z_s.shape[0], z_s.device)
        z_s, z_t = drop_logit(sites.take(z_s), self.ignore_logit), drop_logit(sites.take(z_t), self.ignore_logit)
        return {"kd": site_kl(z_s, z_t, sites.scan, sites.num_scans, self.temperature, self.kl_class_reduction)}

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, level={self.level!r}, ignore_logit={self.ignore_logit}, "
                f"kl_class_reduction={self.kl_class_reduction!r}")
