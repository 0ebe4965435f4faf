"""The contract every backbone follows: one batch type in, one output type out, named tap points.

* :class:`BackboneInput` -- a collated batch of voxelised scans (:func:`collate_scans`): per-point
  features and voxel index, the unique voxels with their batch index, and the point -> voxel map.
* :class:`BackboneOutput` -- point logits (every input point) and voxel logits (every voxel).
* Tap points -- distillers read intermediate tensors through forward hooks on named submodules,
  never by editing a backbone's forward (mmrazor recorders; torchdistill ``ForwardHookManager``).
  Where the wanted value is not already a module output, the backbone routes it through a
  :class:`TapPoint` (an identity module) so a hook can see it. Every backbone lists its taps in
  ``tap_points`` (tap name -> module path); the standard names are :data:`STANDARD_TAPS`.
* ``has_point_head`` (optional, default False) -- point logits come from a head of their own (not a
  gather of voxel logits), so the trainer supervises them too (Cylinder3D's point refinement head).
* ``label_offset`` -- logit column ``j`` is harness learning id ``j + label_offset`` (0 for heads that
  include the ignored class 0, like Cylinder3D's 20 outputs; 1 for spvnas' 19-class head).
  :func:`logits_to_learning_ids` and :func:`learning_ids_to_targets` convert.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from harness.registry import Registry
from harness.voxelize import voxelize_for_grid
from harness.voxelize.sparse_grid import VoxelizedScan

#: tap names every backbone provides (values: module paths inside that backbone)
STANDARD_TAPS = (
    "point_logits",        # (N, C) logits per input point
    "voxel_logits",        # (M, C) logits per voxel (Cylinder3D: its own head; cubic nets: see the backbone)
    "point_features",      # (N, D) penultimate per-point features (input of the point classifier)
    "voxel_features",      # (M, D) penultimate per-voxel features (input of the voxel classifier)
)
#: plus encoder/decoder stage outputs named "encoder.<i>" and "decoder.<i>" (SparseTensor outputs)

BACKBONES: Registry[type[nn.Module]] = Registry("backbone")
BACKBONES.register("cylinder3d", "harness.backbones.cylinder3d:Cylinder3D")
BACKBONES.register("minkunet", "harness.backbones.minkunet:MinkUNet")
BACKBONES.register("spvcnn", "harness.backbones.spvcnn:SPVCNN")


class Backbone(nn.Module):
    """What a backbone says about itself (detectron2 ``Backbone`` pattern): every fact the harness needs
    about a network is a class attribute here, so a new backbone is one file plus a register line.

    Class attributes:
        grid: the preprocessing it consumes: ``"cylindrical"`` (Cylinder3D grid) or ``"cubic"`` (0.05 m
            voxels) -- :func:`harness.voxelize.voxelize_for_grid`.
        family: its column in PVKD supplementary Table 4 (``harness/distill/coefficients.yaml``).
        label_offset: logit column ``j`` is learning id ``j + label_offset`` (an instance may override it).
        has_point_head: point logits come from a head of their own (an instance may compute it).
        node_cell: grid cells merged into one graph node by the graph baselines (CD, IFV, SKD, KA), (d0, d1, d2).
        config_options: ``model.*`` config fields :meth:`build` passes on as keyword arguments.
    Instances list their hookable tensors in ``tap_points`` (tap name -> module path).
    """

    grid: ClassVar[str]
    family: ClassVar[str]
    label_offset: int = 0
    has_point_head: bool = False
    node_cell: ClassVar[tuple[int, int, int]]
    config_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def build(cls, num_classes: int, width: float, **options: Any) -> "Backbone":
        """The network for a dataset of ``num_classes`` learning classes (ignored id 0 included: 20 for
        SemanticKITTI, 17 for nuScenes) at channel ``width`` (1.0 teacher, 0.5 student); its head has
        ``num_classes - label_offset`` outputs."""
        return cls(width=width, num_classes=num_classes - cls.label_offset, **options)

    @property
    def tap_points(self) -> dict[str, str]:
        raise NotImplementedError(f"{type(self).__name__} must list its tap points")


def backbone_family(name: str) -> str:
    """Table 4 family of a registered backbone name; a family name passes through unchanged."""
    return BACKBONES.get(name).family if name in BACKBONES else name


def voxelize_for_backbone(backbone: str, points: np.ndarray, labels: np.ndarray | None = None,
                          augment_rng: np.random.Generator | None = None, dataset: str = "semantickitti") -> VoxelizedScan:
    """The original recipe's preprocessing for a registered ``backbone`` (its ``grid``); augmentation only when
    ``augment_rng`` is given. Unknown names: KeyError with a did-you-mean."""
    return voxelize_for_grid(BACKBONES.get(backbone).grid, points, labels, augment_rng, dataset)


class TapPoint(nn.Identity):
    """An identity module that exists so a forward hook can observe the tensor passed through it."""


@dataclass
class BackboneInput:
    """A batch of voxelised scans (all tensors on one device).

    Attributes:
        point_features: (N, F) float32 per-point input features (cylindrical: 9; cubic: x, y, z, remission).
        point_coords: (N, 4) int32 ``[batch, d0, d1, d2]`` voxel index of every point.
        point_to_voxel: (N,) int64 row of ``voxel_coords`` holding each point (-1: voxel dropped by the
            training-time voxel cap of the cubic grid).
        voxel_coords: (M, 4) int32 ``[batch, d0, d1, d2]`` unique voxels, sorted per scan.
        voxel_features: (M, F) float32 representative-point features per voxel (cubic grid), else None.
        voxel_labels: (M,) int64 voxel labels or None; point_labels: (N,) int64 or None.
        point_batch: (N,) int64 scan index of each point; voxel_batch is ``voxel_coords[:, 0]``.
        point_xyz: (N, 3) float32 point coordinates [m] after augmentation, or None.
        spatial_shape: grid extent (cells) of the batch; batch_size: number of scans.
    """

    point_features: torch.Tensor
    point_coords: torch.Tensor
    point_to_voxel: torch.Tensor
    voxel_coords: torch.Tensor
    spatial_shape: tuple[int, int, int]
    batch_size: int
    point_batch: torch.Tensor
    voxel_features: torch.Tensor | None = None
    voxel_labels: torch.Tensor | None = None
    point_labels: torch.Tensor | None = None
    point_xyz: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "BackboneInput":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return BackboneInput(**moved)

    def pin_memory(self) -> "BackboneInput":
        """Page-locked copies of every tensor, extras included (``DataLoader(pin_memory=True)`` calls this on
        batches of custom types; without it a batch would silently stay pageable)."""
        def pin(v):
            if isinstance(v, (torch.Tensor, BackboneInput)):
                return v.pin_memory()
            return v

        pinned = {k: pin(v) for k, v in self.__dict__.items() if k != "extras"}
        return BackboneInput(**pinned, extras={k: pin(v) for k, v in self.extras.items()})


@dataclass
class BackboneOutput:
    """``point_logits`` (N, C) for every input point; ``voxel_logits`` (M, C) for every voxel."""

    point_logits: torch.Tensor
    voxel_logits: torch.Tensor


def collate_scans(scans: Sequence[VoxelizedScan], point_labels: Sequence[np.ndarray | None] | None = None) -> BackboneInput:
    """Concatenate voxelised scans into one batch with a leading batch index on every coordinate."""
    feats, pcoords, p2v, vcoords, vfeats, vlabels, pbatch, plabels, xyz = [], [], [], [], [], [], [], [], []
    offset = 0
    shape = np.zeros(3, dtype=np.int64)
    for b, scan in enumerate(scans):
        n = scan.num_points
        feats.append(scan.point_features)
        pcoords.append(np.c_[np.full(n, b, np.int32), scan.grid_index.astype(np.int32)])
        p2v.append(np.where(scan.point_to_voxel >= 0, scan.point_to_voxel + offset, -1))
        vcoords.append(np.c_[np.full(scan.num_voxels, b, np.int32), scan.voxel_coords])
        if scan.voxel_point_index is not None:
            vfeats.append(scan.point_features[scan.voxel_point_index])
        if scan.voxel_labels is not None:
            vlabels.append(scan.voxel_labels)
        pbatch.append(np.full(n, b, np.int64))
        if scan.point_xyz is not None:
            xyz.append(scan.point_xyz)
        if point_labels is not None and point_labels[b] is not None:
            plabels.append(np.asarray(point_labels[b], dtype=np.int64))
        offset += scan.num_voxels
        extent = np.asarray(scan.grid_size) if scan.grid_size is not None else scan.grid_index.max(axis=0) + 1
        shape = np.maximum(shape, extent)
    t = torch.from_numpy
    return BackboneInput(
        point_features=t(np.concatenate(feats).astype(np.float32)),
        point_coords=t(np.concatenate(pcoords)),
        point_to_voxel=t(np.concatenate(p2v).astype(np.int64)),
        voxel_coords=t(np.concatenate(vcoords).astype(np.int32)),
        spatial_shape=tuple(int(s) for s in shape),
        batch_size=len(scans),
        point_batch=t(np.concatenate(pbatch)),
        voxel_features=t(np.concatenate(vfeats).astype(np.float32)) if len(vfeats) == len(scans) else None,
        voxel_labels=t(np.concatenate(vlabels)) if len(vlabels) == len(scans) else None,
        point_labels=t(np.concatenate(plabels)) if len(plabels) == len(scans) else None,
        point_xyz=t(np.concatenate(xyz).astype(np.float32)) if len(xyz) == len(scans) else None,
    )


def label_offset(model: nn.Module) -> int:
    """Logit column j is learning id ``j + label_offset`` (see module docstring)."""
    return int(getattr(getattr(model, "module", model), "label_offset", 0))


def learning_ids_to_targets(labels: torch.Tensor, offset: int, ignore_id: int = 0) -> torch.Tensor:
    """Learning ids -> logit-column targets; the ignored id becomes -1 (use ``ignore_index=-1``)."""
    return torch.where(labels == ignore_id, torch.full_like(labels, -1), labels - offset)


def logits_to_learning_ids(logits: torch.Tensor, offset: int) -> torch.Tensor:
    return logits.argmax(dim=1) + offset
