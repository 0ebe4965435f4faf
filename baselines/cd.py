"""CD: channel-wise distillation, each channel's activations as a distribution over a scan's sites.

Paper: Shu, Liu, Gao, Yan, Shen, "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021
(arXiv 2011.13256; v1 "Channel-wise Distillation for Semantic Segmentation", hence PVD's "CD"). Official code:
irfanICMLL/TorchDistiller ``SemSeg-distill/utils/criterion.py`` (``CriterionCWD``). PVD coefficients (PVKD
supplement Table 4): ``feature`` = lambda_fea, ``score`` = lambda_score.

As implemented, per scan b with sites i in S_b and channel c of a (R, C) site map y::

    phi_c^b(i) = softmax over i in S_b of (y_ic / tau)             (segment softmax per scan)
    KL_bc      = sum_{i in S_b} phi_c^{T,b}(i) (log phi_c^{T,b}(i) - log phi_c^{S,b}(i))
    L          = tau^2 * mean over (b, c) of KL_bc                 (scans with sites only)

* ``score``: y = the (R, K) logits of both networks.
* ``feature``: y^T = teacher penultimate features (R, C_t); y^S = A(student penultimate features (R, C_s)),
  A a trainable per-site adapter C_s -> C_t trained with the student.

Readings: tau = 4, whole-scan positions, the adapter and the official normalisation
[docs/readings.md#cd-temperature-positions]; level and nodes [docs/readings.md#baselines-levels].
Computed in float32; teacher values are detached.
"""
from __future__ import annotations

from typing import ClassVar, Literal, Mapping

import torch
from torch import nn

from baselines.nodes import Level, check_level, gather_sites
from harness.backbones.base import BackboneInput
from harness.distill.base import DistillContext, Distiller
from harness.distill.recorder import TapValue

Adapter = Literal["linear_bn_relu", "linear"]


def segment_log_softmax(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Log-softmax of every column over the rows of each segment: (R, C), (R,) -> (R, C).

    ``out[i, c] = values[i, c] - log sum_{j: segment[j] = segment[i]} exp(values[j, c])``.
    """
    index = segment.view(-1, 1).expand_as(values)
    peak = values.detach().new_full((num_segments, values.shape[1]), float("-inf"))
    peak = peak.scatter_reduce(0, index, values.detach(), reduce="amax", include_self=True)
    shifted = values - peak.index_select(0, segment)
    total = shifted.new_zeros((num_segments, values.shape[1])).index_add(0, segment, shifted.exp())
    return shifted - total.log().index_select(0, segment)


def channel_wise_kl(student: torch.Tensor, teacher: torch.Tensor, scan: torch.Tensor, num_scans: int,
                    tau: float) -> torch.Tensor:
    """``tau^2 * KL_bc`` for every scan b that has sites and every channel c: -> (B_present, C).

    Args:
        student, teacher: (R, C) site maps (same sites, same channels).
        scan: (R,) int64 scan of each site, in ``[0, num_scans)``.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student map {tuple(student.shape)} and teacher map {tuple(teacher.shape)} must match")
    log_p_s = segment_log_softmax(student.float() / tau, scan, num_scans)
    log_p_t = segment_log_softmax(teacher.detach().float() / tau, scan, num_scans)
    per_site = log_p_t.exp() * (log_p_t - log_p_s)
    kl = per_site.new_zeros((num_scans, per_site.shape[1])).index_add(0, scan, per_site)
    present = torch.bincount(scan, minlength=num_scans) > 0
    return kl[present] * (tau * tau)


def cwd_loss(student: torch.Tensor, teacher: torch.Tensor, scan: torch.Tensor, num_scans: int,
             tau: float) -> torch.Tensor:
    """The CWD term: mean over (scan, channel) of ``tau^2 * KL_bc`` (module docstring)."""
    kl = channel_wise_kl(student, teacher, scan, num_scans, tau)
    return kl.mean() if kl.numel() else student.sum() * 0.0


def build_adapter(in_channels: int, out_channels: int, kind: Adapter) -> nn.Module:
    if kind == "linear_bn_relu":
        return nn.Sequential(nn.Linear(in_channels, out_channels, bias=False), nn.BatchNorm1d(out_channels), nn.ReLU())
    if kind == "linear":
        return nn.Linear(in_channels, out_channels, bias=False)
    raise ValueError(f"adapter must be 'linear_bn_relu' or 'linear', got {kind!r}")


class CD(Distiller):
    """Channel-wise distillation of penultimate features and logits (module docstring).

    Terms: ``feature`` (lambda_fea), ``score`` (lambda_score).

    Args:
        context: needs ``student_channels`` / ``teacher_channels`` of the ``{level}_features`` tap.
        coefficients: overrides of Table 4's values.
        tau_feature, tau_score: temperatures (default 4 and 4).
        level: ``"voxel"`` (default) or ``"point"``.
        adapter: ``"linear_bn_relu"`` (default) or ``"linear"``.

    Trainable submodule: ``adapter`` (C_s -> C_t).
    """

    method: ClassVar[str] = "cd"
    terms: ClassVar[tuple[str, ...]] = ("feature", "score")

    def __init__(self, context: DistillContext, coefficients: Mapping[str, float] | None = None, *,
                 tau_feature: float = 4.0, tau_score: float = 4.0, level: Level = "voxel",
                 adapter: Adapter = "linear_bn_relu") -> None:
        super().__init__(context, coefficients)
        if tau_feature <= 0 or tau_score <= 0:
            raise ValueError(f"temperatures must be > 0, got {tau_feature}, {tau_score}")
        self.tau_feature = float(tau_feature)
        self.tau_score = float(tau_score)
        self.level = check_level(level)
        self.feature_tap, self.logit_tap = f"{level}_features", f"{level}_logits"
        self.student_taps = self.teacher_taps = (self.feature_tap, self.logit_tap)
        c_s, c_t = context.tap_widths(self.feature_tap, "CD")
        self.adapter_kind = adapter
        self.adapter = build_adapter(c_s, c_t, adapter)

    def compute(self, student: Mapping[str, TapValue], teacher: Mapping[str, TapValue],
                batch: BackboneInput) -> dict[str, torch.Tensor]:
        z_s = student[self.logit_tap].feats
        sites = gather_sites(self.level, batch, z_s.shape[0], z_s.device)
        f_s = self.adapter(sites.take(student[self.feature_tap].feats).float())
        f_t = sites.take(teacher[self.feature_tap].feats)
        return {
            "feature": cwd_loss(f_s, f_t, sites.scan, sites.num_scans, self.tau_feature),
            "score": cwd_loss(sites.take(z_s), sites.take(teacher[self.logit_tap].feats), sites.scan,
                              sites.num_scans, self.tau_score),
        }

    def extra_repr(self) -> str:
        return (f"tau_feature={self.tau_feature}, tau_score={self.tau_score}, level={self.level!r}, "
                f"adapter={self.adapter_kind!r}")
