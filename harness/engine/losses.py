"""Segmentation losses of the original recipes, on sparse (active-voxel / point) logits.

* Cylinder3D (``train_cyl_sem.py``): ``CrossEntropyLoss(ignore_index=0)`` + Lovasz-softmax
  (``ignore=0``) on the dense (B, 20, 480, 360, 32) logits. Empty voxels carry label 0 and are ignored,
  so computing both on the active voxels only is the same loss without the 442 MB dense tensor
  (Cylinder3D's recipe). With the point refinement head, the same pair on point logits
  (docs/readings.md#cylinder3d-point-loss [R]).
* spvnas (``core/builder.py``): ``CrossEntropyLoss(ignore_index=255)`` only.

Targets are logit columns (``learning_ids_to_targets``): the ignored class maps to -1.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from harness.errors import InputError

IGNORE = -1


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors.

    Berman, Rannen Triki, Blaschko, "The Lovasz-Softmax loss", CVPR 2018, Alg. 1 / Eq. 9: with
    ``p`` ground-truth foreground flags sorted by decreasing error,
    ``J_i = 1 - (gts - cumsum(fg)_i) / (gts + cumsum(1 - fg)_i)`` and the gradient is ``J_i - J_{i-1}``.
    """
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(probs: torch.Tensor, targets: torch.Tensor, ignore: int = IGNORE) -> torch.Tensor:
    """Lovasz-softmax over all rows, averaged over the classes present in ``targets`` ("present").

    Args:
        probs: (R, C) class probabilities (softmax of logits).
        targets: (R,) logit-column targets, ``ignore`` rows dropped.
    """
    keep = targets != ignore
    probs, targets = probs[keep], targets[keep]
    if targets.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in torch.unique(targets).tolist():
        fg = (targets == c).to(probs.dtype)
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    return torch.stack(losses).mean()


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor, ce_weight: float, lovasz_weight: float) -> dict[str, torch.Tensor]:
    """CE (ignore -1) and Lovasz-softmax in float32; returns the unweighted terms."""
    logits = logits.float()
    terms = {"ce": F.cross_entropy(logits, targets, ignore_index=IGNORE) if (targets != IGNORE).any() else logits.sum() * 0.0}
    if lovasz_weight:
        terms["lovasz"] = lovasz_softmax(F.softmax(logits, dim=1), targets)
    return terms


def weighted_total(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    r"""The training objective :math:`L = \sum_k w_k\,t_k` over the named, unweighted terms (float32).

    Every term needs a weight: a term without one is an error, never weight 1 (a distiller term the
    coefficient table does not cover would otherwise enter the loss at full strength unnoticed).

    Args:
        terms: term name -> scalar tensor, e.g. ``seg.voxel_ce``, ``distill.out_voxel``.
        weights: term name -> weight (segmentation weights from ``loss.*``, distillation coefficients).

    Raises:
        InputError: naming ``distill.coefficients`` and the terms without a weight.
    """
    missing = sorted(k for k in terms if k not in weights)
    if missing:
        raise InputError("distill.coefficients", f"loss term(s) {missing} have no coefficient (a term without one "
                         "is an error, not weight 1)",
                         "set them in distill.coefficients (term name -> weight) or in the method's table")
    if not terms:
        raise ValueError("weighted_total needs at least one term")
    return sum(float(weights[k]) * v.float() for k, v in terms.items())
