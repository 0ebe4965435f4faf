"""M2SKD: Multi-to-Single Knowledge Distillation (Qiu, Jiang, Zhang, Xue, Pu; arXiv 2304.14800).

A frozen teacher that sees the current scan plus the previous scans' hard-class instances
(:func:`harness.data.fusion.fuse_hard_instances`, ``batch.extras["teacher_input"]``; absent -> same-input KD)
teaches a single-scan student (``batch``) at the shared sites [docs/readings.md#m2skd-shared-sites,
#m2skd-teacher]. ``batch.extras["point_instance"]``: (N,) int64 instance ids of the student's points.
:meth:`M2SKD.compute` returns the terms **unweighted**; B scans, per-scan reductions then the mean over scans::

    feature:  e_v = (1/D) ||A f^S_v - f^T_v||^2          f: (M_s, D) at a ``feature_taps`` tap (default
              L_feat = mean_{v: e_v > feature_threshold} e_v, mean over taps    ``decoder.2``, (M_2, 4c), stride 2)
    logit (logit_form="code", default):  p = softmax(0.3 z),  z: (M, C) voxel (or (N, C) point) logits
              l_v = (1/C) sum_c p^T_vc |log(p^T_vc + 1e-6) - log(p^S_vc + 1e-6)|,  L_logit = mean_{l_v > 0.01} l_v
    logit (logit_form="kl"):  tau^2 KL(p^T || p^S) per site (harness.distill.losses.site_kl)
    affinity: per hard-class group g of n_g sites, A_ij = cos(f_i, f_j) of each net (f: logits by default),
              d_g = (1/n_g^2) sum_ij |A^S_ij - A^T_ij|,   L_aff = sum_c (1/|G_c|) sum_{g in G_c} d_g

A: a trainable linear adapter when the widths differ, identity otherwise. Readings: the logit form and its
1/C [docs/readings.md#m2skd-logit-form, #kl-convention]; the feature tap and weight
[docs/readings.md#m2skd-feature-term]; instance vs class groups [docs/readings.md#m2skd-affinity-groups];
group size and the ``class_sum`` reduction [docs/readings.md#m2skd-affinity-reduction].

Default coefficients (the authors' code): ``logit`` 5.0, ``affinity`` 1.0, ``feature`` 0.0 (the
``m2skd_student.yaml`` recipe sets 0.1); M2SKD is not in PVKD's Table 4, so ``default_coefficients`` returns
:data:`DEFAULT_COEFFICIENTS`. Cylinder3D tap shapes (c = 32, 20 classes): ``voxel_logits`` (M, 20),
``point_logits`` (N, 20), ``voxel_features`` (M, 128); the student has the teacher's architecture.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from harness.backbones.base import BackboneInput
from harness.data.fusion import HARD_CLASSES_SEMANTICKITTI
from harness.distill.base import DistillContext, Distiller, SeededSampling
from harness.distill.losses import (KL_CLASS_REDUCTION, check_class_reduction, cosine_affinity, has_direction,
                                    kl_divergence, per_scan_mean)
from harness.distill.recorder import TapValue
from harness.distill.supervoxel import gather_members
from harness.sparse.hashing import query_coords

__all__ = ["DEFAULT_COEFFICIENTS", "M2SKD", "TERMS", "code_logit_distance", "match_points", "match_voxels",
           "site_groups", "voxel_majority"]

TERMS = ("feature", "logit", "affinity")

#: the authors' weights [V] (skyshoumeng/M2SKD network/segmentator_3d_asymm_spconv.py, last lines of forward)
DEFAULT_COEFFICIENTS: dict[str, float] = {"feature": 0.0, "logit": 5.0, "affinity": 1.0}

#: ``affinity_reduction`` choices (docs/readings.md#m2skd-affinity-reduction)
AFFINITY_REDUCTIONS = ("class_sum", "group_mean")

#: the authors' logit scale: softmax(0.3 * z) [V]
CODE_TEMPERATURE = 1.0 / 0.3
_EPS = 1e-6
_INSTANCE_BITS = 16


# ---------------------------------------------------------------------------------------------- site matching
def match_voxels(student_coords: torch.Tensor, teacher_coords: torch.Tensor) -> torch.Tensor:
    """(M_S,) int64 teacher row of each student voxel ``[b, d0, d1, d2]``, -1 where the teacher has none."""
    return query_coords(teacher_coords, student_coords.to(teacher_coords.device))


def match_points(student: BackboneInput, teacher: BackboneInput) -> torch.Tensor:
    """(N_S,) int64 teacher row of each student point: student point k of scan b <-> teacher point k of scan b.

    Raises:
        ValueError: different scan counts, a teacher scan with fewer points than the student's, or
            shared points whose voxel indices differ (the two views were augmented differently).
    """
    if student.batch_size != teacher.batch_size:
        raise ValueError(f"m2skd: student batch has {student.batch_size} scans, teacher input {teacher.batch_size}")
    b = student.batch_size
    sb, tb = student.point_batch.long(), teacher.point_batch.long()
    s_count = torch.bincount(sb, minlength=b)
    t_count = torch.bincount(tb, minlength=b)
    if bool((t_count < s_count).any()):
        raise ValueError(f"m2skd: teacher scans have {t_count.tolist()} points, fewer than the student's "
                         f"{s_count.tolist()}; the teacher input must start with the student's points")
    s_start = torch.cumsum(s_count, 0) - s_count
    t_start = torch.cumsum(t_count, 0) - t_count
    local = torch.arange(sb.numel(), device=sb.device) - s_start[sb]
    rows = t_start[sb] + local
    if not bool((student.point_coords == teacher.point_coords[rows]).all()):
        raise ValueError("m2skd: the teacher input's first points do not fall in the student's voxels; both views "
                         "of a scan must be augmented identically (same seed) and keep the scan's point order")
    return rows


# ---------------------------------------------------------------------------------------------- grouping
def voxel_majority(point_to_voxel: torch.Tensor, values: torch.Tensor, num_voxels: int) -> torch.Tensor:
    """(M,) int64 most frequent value among each voxel's points (ties: the smaller value; -1: no point).

    Args:
        point_to_voxel: (N,) voxel row of every point (-1: no voxel).
        values: (N,) non-negative int64 values (e.g. a (label, instance) key).
    """
    out = torch.full((num_voxels,), -1, dtype=torch.long, device=values.device)
    keep = point_to_voxel >= 0
    if not bool(keep.any()):
        return out
    voxel, value = point_to_voxel[keep].long(), values[keep].long()
    span = int(value.max()) + 1
    pairs, counts = torch.unique(voxel * span + value, return_counts=True)  # sorted by (voxel, value)
    by_count = torch.sort(counts, descending=True, stable=True).indices      # ties keep the smaller value
    pv = torch.div(pairs[by_count], span, rounding_mode="floor")
    by_voxel = torch.sort(pv, stable=True).indices
    order = by_count[by_voxel]
    pv_sorted = pv[by_voxel]
    first = torch.ones_like(pv_sorted, dtype=torch.bool)
    first[1:] = pv_sorted[1:] != pv_sorted[:-1]
    winners = pairs[order[first]]
    out[torch.div(winners, span, rounding_mode="floor")] = winners % span
    return out


def site_groups(labels: torch.Tensor, instance: torch.Tensor | None, scan: torch.Tensor, hard: torch.Tensor,
                grouping: str, num_classes: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Compact group id of each site (-1: no group), the number of groups G and each group's scan.

    ``grouping="instance"``: one group per (scan, label, instance) with a hard label and instance > 0;
    ``"class"``: one group per hard label over the whole batch (group scan 0).
    """
    is_hard = torch.isin(labels, hard)
    if grouping == "instance":
        is_hard &= instance > 0
        key = ((scan.long() * num_classes + labels.long()) << _INSTANCE_BITS) | instance.long().clamp(min=0)
    else:
        key = labels.long()
    group = torch.full_like(labels, -1, dtype=torch.long)
    if not bool(is_hard.any()):
        return group, 0, torch.zeros(0, dtype=torch.long, device=labels.device)
    uniq, inverse = torch.unique(key[is_hard], return_inverse=True)
    group[is_hard] = inverse
    if grouping == "instance":
        group_scan = torch.div(uniq >> _INSTANCE_BITS, num_classes, rounding_mode="floor")
    else:
        group_scan = torch.zeros_like(uniq)
    return group, int(uniq.numel()), group_scan


# ---------------------------------------------------------------------------------------------- losses
def code_logit_distance(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                        temperature: float = CODE_TEMPERATURE, class_reduction: str = "mean") -> torch.Tensor:
    r"""The authors' per-site logit distance [V]: :math:`\frac1C\sum_c p^T_c\lvert\log\frac{p^T_c+10^{-6}}{p^S_c+10^{-6}}\rvert`,
    ``p = softmax(z / temperature)`` (their ``softmax(0.3 z)``: temperature 1/0.3). (R, C) -> (R,).
    ``class_reduction="sum"`` drops the 1/C."""
    p_s = torch.softmax(student_logits / temperature, dim=1)
    p_t = torch.softmax(teacher_logits / temperature, dim=1)
    per_class = (p_t * (torch.log(p_t + _EPS) - torch.log(p_s + _EPS)).abs())
    return per_class.mean(dim=1) if check_class_reduction(class_reduction, "class_reduction") == "mean" \
        else per_class.sum(dim=1)


class M2SKD(SeededSampling, Distiller):
    """Multi-to-single KD: unweighted terms ``feature``, ``logit``, ``affinity`` (module docstring).

    Args:
        context: backbone name, ``num_classes``, tap widths (for the feature adapters).
        coefficients: overrides of :data:`DEFAULT_COEFFICIENTS` (term name -> weight).
        components: enabled terms (default all three); disabled ones are neither computed nor returned.
        sites: ``"voxel"`` (default, the code) or ``"point"`` -- where ``logit`` and ``affinity`` act.
        feature_taps: sparse taps distilled by ``feature`` (default ``("decoder.2",)``).
        feature_threshold: keep sites whose channel-mean squared error exceeds this (authors 1.0; default 0).
        logit_form: ``"code"`` (default) or ``"kl"``. temperature: None -> 1/0.3 for ``code``, 1 for ``kl``.
        logit_threshold: None -> 0.01 for ``code`` (authors), 0 for ``kl``.
        affinity_grouping: ``"instance"`` (default) or ``"class"`` (authors' code).
        affinity_source: ``"logits"`` (default) or ``"features"``.
        affinity_distance: ``"l1"`` (default, code) or ``"l2"``.
        affinity_reduction: ``"class_sum"`` (default: sum over hard classes of the mean over their groups,
            the authors' scale) or ``"group_mean"`` (mean over groups per scan, then over scans).
        kl_class_reduction: None (``"mean"`` for ``code``, the authors' 1/C; ``"sum"`` for ``kl``, the
            harness's KL convention), ``"sum"`` or ``"mean"``.
        max_group_size: members per affinity group (random subset when more); min_group_size: 2.
        hard_classes: learning ids of the hard classes (SemanticKITTI 2-8).
        seed: seed of the subset generator (None: torch's global RNG).
    """

    method = "m2skd"
    name = "m2skd"
    terms = TERMS
    student_taps = ("point_logits", "voxel_logits", "decoder.2")
    teacher_taps = ("point_logits", "voxel_logits", "decoder.2")

    @classmethod
    def default_coefficients(cls, backbone: str) -> dict[str, float]:
        """M2SKD is not in PVKD's Table 4: the authors' defaults (:data:`DEFAULT_COEFFICIENTS`) for every backbone."""
        return dict(DEFAULT_COEFFICIENTS)

    def __init__(
        self,
        context: DistillContext,
        coefficients: Mapping[str, float] | None = None,
        *,
        components: Sequence[str] | None = None,
        sites: str = "voxel",
        feature_taps: Sequence[str] = ("decoder.2",),
        feature_threshold: float = 0.0,
        logit_form: str = "code",
        temperature: float | None = None,
        logit_threshold: float | None = None,
        affinity_grouping: str = "instance",
        affinity_source: str = "logits",
        affinity_distance: str = "l1",
        affinity_reduction: str = "class_sum",
        kl_class_reduction: str | None = None,
        max_group_size: int = 256,
        min_group_size: int = 2,
        hard_classes: Sequence[int] = HARD_CLASSES_SEMANTICKITTI,
        seed: int | None = 0,
    ) -> None:
        super().__init__(context, coefficients)

        enabled = tuple(TERMS if components is None else components)
        bad = sorted(set(enabled) - set(TERMS))
        if bad:
            raise ValueError(f"m2skd: unknown component(s) {bad}; terms are {list(TERMS)}")
        self.active_terms = tuple(t for t in TERMS if t in enabled)
        _check("sites", sites, ("voxel", "point"))
        _check("logit_form", logit_form, ("code", "kl"))
        _check("affinity_grouping", affinity_grouping, ("instance", "class"))
        _check("affinity_source", affinity_source, ("logits", "features"))
        _check("affinity_distance", affinity_distance, ("l1", "l2"))
        _check("affinity_reduction", affinity_reduction, AFFINITY_REDUCTIONS)
        if kl_class_reduction is None:
            kl_class_reduction = "mean" if logit_form == "code" else KL_CLASS_REDUCTION
        check_class_reduction(kl_class_reduction)
        if temperature is None:
            temperature = CODE_TEMPERATURE if logit_form == "code" else 1.0
        if temperature <= 0:
            raise ValueError(f"m2skd: temperature must be positive, got {temperature}")
        if int(max_group_size) < 2 or int(min_group_size) < 1:
            raise ValueError("m2skd: max_group_size must be >= 2 and min_group_size >= 1")
        feature_taps = tuple(feature_taps)
        if "feature" in self.active_terms and not feature_taps:
            raise ValueError("m2skd: the feature term needs at least one feature tap")

        self.sites = sites
        self.feature_taps = feature_taps
        self.feature_threshold = float(feature_threshold)
        self.logit_form = logit_form
        self.temperature = float(temperature)
        self.logit_threshold = float((0.01 if logit_form == "code" else 0.0) if logit_threshold is None else logit_threshold)
        self.affinity_grouping = affinity_grouping
        self.affinity_source = affinity_source
        self.affinity_distance = affinity_distance
        self.affinity_reduction = affinity_reduction
        self.kl_class_reduction = kl_class_reduction
        self.max_group_size, self.min_group_size = int(max_group_size), int(min_group_size)
        self.register_buffer("hard", torch.tensor(sorted(set(int(c) for c in hard_classes)), dtype=torch.long),
                             persistent=False)
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

        taps = []
        if "logit" in self.active_terms or ("affinity" in self.active_terms and affinity_source == "logits"):
            taps.append(f"{sites}_logits")
        if "affinity" in self.active_terms and affinity_source == "features":
            taps.append(f"{sites}_features")
        if "feature" in self.active_terms:
            taps.extend(feature_taps)
        # instance attributes: what the trainer's recorders read (the class attributes cover the defaults)
        self.student_taps = self.teacher_taps = tuple(dict.fromkeys(taps))

        self.adapters = nn.ModuleDict()
        for tap in feature_taps if "feature" in self.active_terms else ():
            ds, dt = context.student_channels.get(tap), context.teacher_channels.get(tap)
            if ds is not None and dt is not None and ds != dt:
                self.adapters[_module_key(tap)] = nn.Linear(int(ds), int(dt), bias=False)  # [D] 1x1 projection

    # ------------------------------------------------------------------ metadata
    @property
    def config(self) -> dict[str, Any]:
        """Resolved options (the readings in force), for run metadata."""
        return {"method": self.name, "components": list(self.active_terms), "coefficients": dict(self.coefficients),
                "sites": self.sites, "feature_taps": list(self.feature_taps),
                "feature_threshold": self.feature_threshold, "logit_form": self.logit_form,
                "temperature": self.temperature, "logit_threshold": self.logit_threshold,
                "affinity_grouping": self.affinity_grouping, "affinity_source": self.affinity_source,
                "affinity_distance": self.affinity_distance, "affinity_reduction": self.affinity_reduction,
                "kl_class_reduction": self.kl_class_reduction, "max_group_size": self.max_group_size,
                "min_group_size": self.min_group_size, "hard_classes": self.hard.tolist(),
                "adapters": sorted(self.adapters.keys()), "seed": self.seed}

    # ------------------------------------------------------------------ forward
    def compute(self, student: Mapping[str, TapValue], teacher: Mapping[str, TapValue],
                batch: BackboneInput) -> dict[str, torch.Tensor]:
        """Unweighted terms ``{name: scalar float32}`` for the enabled components (module docstring)."""
        for side, taps in (("student", student), ("teacher", teacher)):
            missing = [t for t in self.student_taps if t not in taps]
            if missing:
                raise KeyError(f"m2skd needs the {side} tap(s) {missing}; got {sorted(taps)}")
        t_batch: BackboneInput = batch.extras.get("teacher_input", batch)
        terms: dict[str, torch.Tensor] = {}
        if "feature" in self.active_terms:
            terms["feature"] = self._feature(student, teacher, batch.batch_size)
        if "logit" in self.active_terms or "affinity" in self.active_terms:
            rows, scan, valid = self._sites(batch, t_batch)
            if "logit" in self.active_terms:
                zs, zt = _rows(student, teacher, f"{self.sites}_logits", rows)
                terms["logit"] = self._logit(zs, zt, scan, valid, batch.batch_size)
            if "affinity" in self.active_terms:
                kind = "logits" if self.affinity_source == "logits" else "features"
                fs, ft = _rows(student, teacher, f"{self.sites}_{kind}", rows, same_width=False)
                terms["affinity"] = self._affinity(fs, ft, batch, scan, valid)
        return terms

    def _sites(self, batch: BackboneInput, t_batch: BackboneInput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher row, scan and validity (shared, and with a voxel on both sides) of every student site."""
        if self.sites == "voxel":
            rows = match_voxels(batch.voxel_coords, t_batch.voxel_coords) if t_batch is not batch else \
                torch.arange(batch.voxel_coords.shape[0], device=batch.voxel_coords.device)
            return rows, batch.voxel_coords[:, 0].long(), rows >= 0
        rows = match_points(batch, t_batch) if t_batch is not batch else \
            torch.arange(batch.point_batch.shape[0], device=batch.point_batch.device)
        valid = (batch.point_to_voxel >= 0) & (t_batch.point_to_voxel[rows] >= 0)
        return rows, batch.point_batch.long(), valid

    def _feature(self, student: Mapping[str, TapValue], teacher: Mapping[str, TapValue], batch_size: int) -> torch.Tensor:
        values = []
        for tap in self.feature_taps:
            s, t = student[tap], teacher[tap]
            if s.coords is None or t.coords is None:
                raise ValueError(f"m2skd: feature tap {tap!r} must be a sparse tensor (with coordinates)")
            if s.stride is not None and t.stride is not None and tuple(s.stride) != tuple(t.stride):
                raise ValueError(f"m2skd: feature tap {tap!r} has stride {s.stride} (student) vs {t.stride} (teacher)")
            rows = match_voxels(s.coords, t.coords)
            shared = rows >= 0
            fs = s.feats.float()[shared]
            ft = t.feats.detach().float()[rows[shared]]
            key = _module_key(tap)
            if key in self.adapters:
                fs = self.adapters[key](fs)
            elif fs.shape[1] != ft.shape[1]:
                raise ValueError(f"m2skd: {tap} widths differ (student {fs.shape[1]}, teacher {ft.shape[1]}) and no adapter "
                                 "was built; pass the tap widths in DistillContext.student/teacher_channels")
            err = (fs - ft).square().mean(dim=1)
            keep = err > self.feature_threshold if self.feature_threshold > 0 else None
            values.append(per_scan_mean(err, s.coords[shared, 0].long(), batch_size, keep))
        return torch.stack(values).mean()

    def _logit(self, zs: torch.Tensor, zt: torch.Tensor, scan: torch.Tensor, valid: torch.Tensor,
               batch_size: int) -> torch.Tensor:
        zs, zt = zs.float(), zt.detach().float()
        if self.logit_form == "code":
            value = code_logit_distance(zs, zt, self.temperature, self.kl_class_reduction)
        else:  # per site, the convention of harness.distill.losses.site_kl (masked mean below)
            value = kl_divergence(zs, zt, self.temperature, self.kl_class_reduction)
        keep = valid & torch.isfinite(value)
        if self.logit_threshold > 0:
            keep &= value > self.logit_threshold
        value = torch.where(keep, value, torch.zeros_like(value))  # a NaN row must not poison the sums
        return per_scan_mean(value, scan, batch_size, keep)

    def _affinity(self, fs: torch.Tensor, ft: torch.Tensor, batch: BackboneInput, scan: torch.Tensor,
                  valid: torch.Tensor) -> torch.Tensor:
        labels, instance = self._site_labels(batch)
        num_classes = max(int(self.context.num_classes), int(labels.max()) + 1 if labels.numel() else 1)
        group, num_groups, group_scan = site_groups(labels, instance, scan, self.hard.to(labels.device),
                                                    self.affinity_grouping, num_classes)
        group = torch.where(valid, group, torch.full_like(group, -1))
        if num_groups == 0:
            return (fs.sum() * 0.0).abs()      # 0 (not -0) with a live graph
        index, mask = gather_members(group, num_groups, self.max_group_size, self._generator(group.device))
        s = fs.float()[index]
        with torch.no_grad():
            t = ft.detach().float()[index]
            mask = mask & has_direction(s) & has_direction(t)
            a_t, _ = cosine_affinity(t, mask, check_direction=False)
        a_s, _ = cosine_affinity(s, mask, check_direction=False)
        pair = (mask.unsqueeze(-1) & mask.unsqueeze(-2)).to(a_s.dtype)
        diff = (a_s - a_t).abs() if self.affinity_distance == "l1" else (a_s - a_t).square()
        count = pair.sum(dim=(-1, -2))
        distance = (diff * pair).sum(dim=(-1, -2)) / count.clamp(min=1.0)
        counted = mask.sum(dim=1) >= self.min_group_size
        if self.affinity_reduction == "group_mean":
            return per_scan_mean(distance, group_scan, batch.batch_size, counted)
        # class_sum: the mean over each hard class's groups, summed over the classes
        member = group >= 0
        group_class = torch.zeros(num_groups, dtype=torch.long, device=group.device)
        group_class[group[member]] = labels.to(group.device)[member].long()
        weight = counted.to(distance.dtype)
        class_total = distance.new_zeros(num_classes).index_add_(0, group_class, distance * weight)
        class_count = distance.new_zeros(num_classes).index_add_(0, group_class, weight)
        return (class_total / class_count.clamp(min=1.0)).sum()

    def _site_labels(self, batch: BackboneInput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(learning label, instance id or None) of every student site."""
        need_instance = self.affinity_grouping == "instance"
        labels = batch.point_labels
        instance = _point_instance(batch) if need_instance else None
        if self.sites == "point":
            if labels is None:
                raise ValueError("m2skd: affinity needs batch.point_labels")
            return labels.long(), instance
        m = batch.voxel_coords.shape[0]
        if not need_instance:
            if batch.voxel_labels is not None:
                return batch.voxel_labels.long(), None
            if labels is None:
                raise ValueError("m2skd: affinity needs batch.voxel_labels or batch.point_labels")
            return voxel_majority(batch.point_to_voxel.long(), labels.long(), m).clamp(min=0), None
        if labels is None:
            raise ValueError("m2skd: instance-aware affinity needs batch.point_labels")
        key = (labels.long() << _INSTANCE_BITS) | instance.clamp(min=0)
        major = voxel_majority(batch.point_to_voxel.long(), key, m)
        empty = major < 0
        major = major.clamp(min=0)
        voxel_labels = torch.where(empty, torch.zeros_like(major), major >> _INSTANCE_BITS)
        voxel_instance = torch.where(empty, torch.zeros_like(major), major & ((1 << _INSTANCE_BITS) - 1))
        return voxel_labels, voxel_instance

    # ------------------------------------------------------------------ RNG state (checkpointed)


# ---------------------------------------------------------------------------------------------- helpers
def _point_instance(batch: BackboneInput) -> torch.Tensor:
    value = batch.extras.get("point_instance")
    if value is None:
        raise KeyError("m2skd: instance-aware affinity needs batch.extras['point_instance'] ((N,) int64 instance ids "
                       "of the student's points; the data pipeline must collate them), or affinity_grouping='class'")
    if isinstance(value, (list, tuple)):
        value = torch.from_numpy(np.concatenate([np.asarray(v, dtype=np.int64) for v in value]))
    value = torch.as_tensor(value).long().to(batch.point_batch.device)
    if value.shape[0] != batch.point_batch.shape[0]:
        raise ValueError(f"m2skd: extras['point_instance'] has {value.shape[0]} entries, the batch "
                         f"{batch.point_batch.shape[0]} points")
    return value


def _rows(student: Mapping[str, TapValue], teacher: Mapping[str, TapValue], tap: str, rows: torch.Tensor,
          same_width: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    s, t = student[tap].feats, teacher[tap].feats
    if s.shape[0] != rows.shape[0]:
        raise ValueError(f"m2skd: student {tap} has {s.shape[0]} rows, the student batch {rows.shape[0]} sites")
    if same_width and s.shape[1] != t.shape[1]:
        raise ValueError(f"m2skd: {tap} widths differ (student {s.shape[1]}, teacher {t.shape[1]})")
    return s, t[rows.clamp(min=0)]


def _module_key(tap: str) -> str:
    return tap.replace(".", "_")


def _check(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"m2skd: {name} must be one of {list(choices)}, got {value!r}")
