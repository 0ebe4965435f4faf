"""Loss primitives shared by PVD (``harness/distill/pvd.py``) and the baselines (``baselines/``).

Pure functions on plain tensors, no state, no hidden ``detach``: a caller distilling from a frozen
teacher passes ``teacher.detach()`` (or computes the teacher side under ``torch.no_grad()``).
Every function works in the dtype it is given; distillers cast to float32 first (the harness runs
loss terms in float32 under AMP, see :mod:`harness.distill.base`).

Contents

* :func:`kl_divergence` -- per-row ``KL(p_T || p_S)`` with temperature and Hinton's ``tau^2``;
  :func:`site_kl` -- the one output-distillation convention of the harness (KD, SKD's pixel term,
  PVD's ``out_point`` / ``out_voxel``, M2SKD's KL logit term): KL summed over classes, mean over each
  scan's sites, then over scans (:data:`KL_CLASS_REDUCTION`; ``"mean"`` adds ``1/C``);
* :func:`cosine_affinity` -- batched, masked cosine-similarity matrices ``(..., n, n)``;
  :func:`has_direction` -- rows with a defined cosine (non-zero norm);
* :func:`affinity_distance` -- per-group masked mean of the squared difference of two affinity matrices;
* :func:`masked_mean` -- mean over the entries a mask keeps (0 with a live graph when it keeps none);
* :func:`segment_sum_count` / :func:`per_scan_mean` -- reductions per scan (or any segment) of a ragged batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["KL_CLASS_REDUCTION", "KL_CLASS_REDUCTIONS", "affinity_distance", "check_class_reduction",
           "cosine_affinity", "has_direction", "kl_divergence", "masked_mean", "per_scan_mean", "segment_sum_count",
           "site_kl"]

#: feature rows with an L2 norm at or below this are treated as padding by :func:`cosine_affinity`
ZERO_NORM = 1e-12

#: The harness's single convention for a per-site class-distribution KL: summed over the C classes
#: (the KL itself, Hinton et al. 2015 -- what KD and SKD's official code compute), then averaged over
#: sites. ``"mean"`` divides by C as well (a ``1/(N C)`` loss); the option ``kl_class_reduction`` of
#: KD, SKD, PVD and M2SKD switches it. See docs/readings (the KL convention) for the reason.
KL_CLASS_REDUCTION = "sum"
KL_CLASS_REDUCTIONS = ("sum", "mean")


def check_class_reduction(value: str, owner: str = "kl_class_reduction") -> str:
    """``value`` if it is one of :data:`KL_CLASS_REDUCTIONS`, else a ValueError naming ``owner``."""
    if value not in KL_CLASS_REDUCTIONS:
        raise ValueError(f"{owner} must be one of {list(KL_CLASS_REDUCTIONS)}, got {value!r}")
    return value


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                  class_reduction: str = "sum") -> torch.Tensor:
    r"""Row-wise ``tau^2 * KL(softmax(z_T / tau) || softmax(z_S / tau))`` (Hinton et al., 2015).

    .. math::
        \mathrm{KL}_r = \tau^2 \sum_c p^T_{rc} (\log p^T_{rc} - \log p^S_{rc}),\quad
        p = \sigma(z / \tau)

    Args:
        student_logits: (R, C) logits of the student (gradient flows here).
        teacher_logits: (R, C) logits of the teacher (pass it detached for a frozen teacher).
        temperature: ``tau > 0``; the result is multiplied by ``tau^2`` so gradient magnitudes do not
            shrink with ``tau`` (equals the plain KL at ``tau = 1``).
        class_reduction: ``"sum"`` -- the KL itself; ``"mean"`` -- divided by ``C`` (a loss normalised
            by ``1/(N C)`` after the mean over rows).

    Returns:
        (R,) non-negative values; 0 where the two distributions are equal. Computed with
        ``log_softmax`` on both sides, so saturated logits give no ``0 * log 0`` NaN.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"expected two (R, C) tensors of one shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    check_class_reduction(class_reduction, "class_reduction")
    if temperature != 1.0:
        student_logits, teacher_logits = student_logits / temperature, teacher_logits / temperature
    log_s = F.log_softmax(student_logits, dim=1)
    log_t = F.log_softmax(teacher_logits, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    scale = temperature * temperature
    if class_reduction == "mean":
        scale /= student_logits.shape[1]
    return kl * scale if scale != 1.0 else kl


def site_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, scan: torch.Tensor, num_scans: int,
            temperature: float = 1.0, class_reduction: str = KL_CLASS_REDUCTION,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Output distillation of per-site class distributions, the harness's one KL convention.

    .. math::
        L = \frac{1}{B'} \sum_{b} \frac{1}{|S_b|} \sum_{i \in S_b} \frac{\tau^2}{\kappa}
            \sum_{c=1}^{C} p^T_{ic} (\log p^T_{ic} - \log p^S_{ic}),\qquad
            p = \mathrm{softmax}(z / \tau)

    with :math:`\kappa = 1` (``class_reduction="sum"``, default: the KL itself) or :math:`\kappa = C`
    (``"mean"``); :math:`S_b` the (kept) sites of scan b, :math:`B'` the scans that have one. The
    teacher is detached and both sides are cast to float32 here.

    Args:
        student_logits: (R, C) student logits; teacher_logits: (R, C) teacher logits.
        scan: (R,) int64 scan of each site; num_scans: B.
        temperature: tau; class_reduction: ``"sum"`` or ``"mean"``.
        mask: (R,) bool sites that count, or None (all).

    Returns:
        Scalar float32 (0 with a live graph when no site counts).
    """
    kl = kl_divergence(student_logits.float(), teacher_logits.detach().float(), temperature, class_reduction)
    return per_scan_mean(kl, scan, num_scans, mask)


def has_direction(feats: torch.Tensor) -> torch.Tensor:
    """(..., n) bool: rows of (..., n, d) ``feats`` whose norm exceeds :data:`ZERO_NORM` (cosine defined)."""
    return feats.detach().norm(dim=-1) > ZERO_NORM


def cosine_affinity(feats: torch.Tensor, mask: torch.Tensor | None = None,
                    check_direction: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Cosine-similarity matrices of groups of feature vectors, padded entries masked out.

    .. math:: A_{gij} = \frac{\langle f_{gi}, f_{gj}\rangle}{\lVert f_{gi}\rVert\,\lVert f_{gj}\rVert}

    Padded rows are never normalised as zero vectors: they are replaced by a constant before the
    normalisation (so no ``0/eps`` gradient can arise) and their rows and columns are set to 0.
    Rows whose norm is at most :data:`ZERO_NORM` (e.g. an all-zero ReLU output) have no direction;
    they are treated as padding too and reported through the returned mask.

    Args:
        feats: (..., n, d) features; ``...`` are group dimensions (e.g. sampled supervoxels).
        mask: (..., n) bool, True for real entries; None = all real.
        check_direction: False when ``mask`` already excludes zero rows (saves one norm pass).

    Returns:
        ``(affinity, valid)``: (..., n, n) cosine similarities (0 on masked rows/columns) and the
        (..., n) bool mask of the rows actually used.
    """
    if mask is None:
        valid = has_direction(feats)
    else:
        valid = mask & has_direction(feats) if check_direction else mask
    safe = torch.where(valid.unsqueeze(-1), feats, torch.ones((), dtype=feats.dtype, device=feats.device))
    unit = safe / safe.norm(dim=-1, keepdim=True)
    affinity = unit @ unit.transpose(-1, -2)
    pair = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    return affinity * pair.to(affinity.dtype), valid


def affinity_distance(student_affinity: torch.Tensor, teacher_affinity: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-group mean squared difference of two affinity matrices over the valid pairs.

    .. math:: d_g = \frac{1}{|V_g|^2} \sum_{i, j \in V_g} (A^S_{gij} - A^T_{gij})^2

    (the diagonal ``i = j`` included, as in the full double sum).

    Args:
        student_affinity, teacher_affinity: (G, n, n).
        mask: (G, n) bool valid entries (both networks' masks combined by the caller).

    Returns:
        ``(distance, has_pairs)``: (G,) values (0 for groups without a valid entry) and the (G,) bool
        groups that have at least one valid entry.
    """
    pair = (mask.unsqueeze(-1) & mask.unsqueeze(-2)).to(student_affinity.dtype)
    sq = (student_affinity - teacher_affinity).square() * pair
    count = pair.sum(dim=(-1, -2))
    return sq.sum(dim=(-1, -2)) / count.clamp(min=1.0), count > 0


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is True (all entries if None).

    With no entry kept the result is ``0`` and still depends on ``values`` (``values.sum() * 0``), so a
    backward through it is valid.
    """
    if mask is None:
        return values.mean() if values.numel() else values.sum() * 0.0
    mask = mask.to(values.dtype)
    count = mask.sum()
    return (values * mask).sum() / count.clamp(min=1.0)


def segment_sum_count(values: torch.Tensor, segment: torch.Tensor, num_segments: int,
                      mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and number of the (kept) entries of ``values`` per segment.

    Args:
        values: (R,) values; segment: (R,) int segment id in ``[0, num_segments)``; mask: (R,) bool or None.

    Returns:
        ``(sums, counts)``, both (num_segments,) in ``values``' dtype.
    """
    segment = segment.long()
    weight = None
    if mask is not None:
        weight = mask.to(values.dtype)
        values = values * weight
    sums = values.new_zeros(num_segments).index_add_(0, segment, values)
    counts = torch.bincount(segment, weights=weight, minlength=num_segments).to(values.dtype)
    return sums, counts


def per_scan_mean(values: torch.Tensor, scan: torch.Tensor, batch_size: int,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over scans of the per-scan mean of ``values``; scans with no kept entry do not count.

    This is the harness's batch convention: every spatial reduction happens inside a scan, so a
    batch of two scans gives the mean of the two single-scan values whatever their sizes.

    Args:
        values: (R,) per-entry loss values; scan: (R,) scan index of each entry;
        batch_size: number of scans B; mask: (R,) bool entries to keep, or None.

    Returns:
        Scalar; 0 (with a live graph) when no scan has an entry.
    """
    sums, counts = segment_sum_count(values, scan, batch_size, mask)
    present = counts > 0
    return masked_mean(sums / counts.clamp(min=1.0), present)
