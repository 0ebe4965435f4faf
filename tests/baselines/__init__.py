"""Tests of the five comparison distillers (``baselines/``), plus tiny batch builders they share."""
from __future__ import annotations

from typing import Sequence

import torch

from harness.backbones.base import BackboneInput
from harness.distill.base import DistillContext
from harness.distill.recorder import TapValue


def voxel_batch(grids: Sequence[Sequence[Sequence[int]]], labels: Sequence[Sequence[int]] | None = None,
                spatial_shape: tuple[int, int, int] = (64, 64, 64)) -> BackboneInput:
    """A batch with one point per voxel: ``grids[b]`` lists scan b's voxel cells (d0, d1, d2)."""
    coords, batch_index, flat_labels = [], [], []
    for b, cells in enumerate(grids):
        for cell in cells:
            coords.append([b, *cell])
            batch_index.append(b)
        if labels is not None:
            flat_labels.extend(labels[b])
    voxel_coords = torch.tensor(coords, dtype=torch.int32).reshape(-1, 4)
    m = voxel_coords.shape[0]
    label_tensor = torch.tensor(flat_labels, dtype=torch.long) if labels is not None else None
    return BackboneInput(
        point_features=torch.zeros(m, 4), point_coords=voxel_coords.clone(), point_to_voxel=torch.arange(m),
        voxel_coords=voxel_coords, spatial_shape=spatial_shape, batch_size=len(grids),
        point_batch=torch.tensor(batch_index, dtype=torch.long), voxel_labels=label_tensor,
        point_labels=None if label_tensor is None else label_tensor.clone(),
    )


def line_grids(counts: Sequence[int]) -> list[list[tuple[int, int, int]]]:
    """Scan b holds ``counts[b]`` voxels on a line ``(i, 0, 0)``."""
    return [[(i, 0, 0) for i in range(n)] for n in counts]


def context(backbone: str = "minkunet", num_classes: int = 3, student: int = 2, teacher: int = 2) -> DistillContext:
    widths_s = {"voxel_features": student, "point_features": student}
    widths_t = {"voxel_features": teacher, "point_features": teacher}
    return DistillContext(backbone, num_classes, widths_s, widths_t)


def taps(**tensors: torch.Tensor) -> dict[str, TapValue]:
    return {name: TapValue(value) for name, value in tensors.items()}


def leaf(values, requires_grad: bool = True) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=requires_grad)
