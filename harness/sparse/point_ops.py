"""Point<->voxel helpers shared by the backbones, pure torch (no ``torch_scatter``).

* :func:`scatter_mean` - mean of rows per segment (SPVCNN ``point_to_voxel`` /
  ``initial_voxelize``, mit-han-lab/spvnas ``core/models/utils.py``).
* :func:`scatter_max` - per-segment channel-wise max (Cylinder3D ``cylinder_fea`` pooling,
  xinge008/Cylinder3D ``network/cylinder_fea_generator.py`` uses ``torch_scatter.scatter_max``);
  ``scatter_reduce('amax', include_self=False)`` gives the same values and routes the
  gradient to the maximal element (ties: torch splits it evenly, torch_scatter picks one).
* :func:`sparse_cat` - channel concatenation of two tensors on the same voxels
  (spvnas ``torchsparse.cat``; Cylinder3D's ReconNet/upBlock3 concat).
* :func:`query_coords` - row of each query coordinate in a voxel table or -1 (replaces
  torchsparse's CUDA-only ``GPUHashTable`` for SPVCNN's trilinear devoxelisation).
"""

from __future__ import annotations

import torch

from harness.sparse.hashing import query_coords
from harness.sparse.tensor import SparseTensor

__all__ = ["query_coords", "scatter_max", "scatter_mean", "sparse_cat"]


def _expanded_index(index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    return index.long().view(-1, 1).expand_as(src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Mean of the rows of ``src`` that share an ``index``.

    Args:
        src: (N, C) values (e.g. point features).
        index: (N,) integer segment of each row, in ``[0, dim_size)``.
        dim_size: number of segments M (e.g. voxels).

    Returns:
        (M, C); segments without rows are 0.
    """
    total = src.new_zeros((dim_size, src.shape[1])).index_add_(0, index.long(), src)
    count = torch.bincount(index.long(), minlength=dim_size).clamp_(min=1).to(src.dtype)
    return total / count.unsqueeze(1)


def scatter_max(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Channel-wise maximum of the rows of ``src`` that share an ``index``.

    Equals ``torch_scatter.scatter_max(src, index, dim=0, dim_size=dim_size)[0]``.

    Args:
        src: (N, C) values.
        index: (N,) integer segment of each row, in ``[0, dim_size)``.
        dim_size: number of segments M.

    Returns:
        (M, C); segments without rows are 0 (torch_scatter's fill value).
    """
    out = src.new_zeros((dim_size, src.shape[1]))
    return out.scatter_reduce(0, _expanded_index(index, src), src, reduce="amax", include_self=False)


def sparse_cat(first: SparseTensor, second: SparseTensor) -> SparseTensor:
    """Concatenate the channels of two tensors on identical voxels: (N, C1) + (N, C2) -> (N, C1 + C2).

    Raises:
        ValueError: the tensors are on different voxels (coords or stride differ).
    """
    same_voxels = first.coords is second.coords or (
        first.coords.shape == second.coords.shape and torch.equal(first.coords, second.coords)
    )
    if not same_voxels or first.stride != second.stride:
        raise ValueError("sparse_cat needs two tensors on the same voxels (same coords, same order, same stride)")
    return first.replace_feature(torch.cat((first.feats, second.feats), dim=1))
