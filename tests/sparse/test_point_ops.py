"""Point<->voxel helpers against loops over segments."""

from __future__ import annotations

import pytest
import torch

from harness.sparse import SparseTensor, scatter_max, scatter_mean, sparse_cat


def _segments() -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.tensor([[1.0, -2.0], [3.0, 5.0], [-1.0, 4.0], [7.0, 0.0], [2.0, 2.0]], dtype=torch.float64)
    index = torch.tensor([2, 0, 2, 2, 0])
    return src, index


def test_scatter_mean_by_hand() -> None:
    src, index = _segments()
    out = scatter_mean(src, index, dim_size=4)
    # segment 0: rows 1, 4; segment 2: rows 0, 2, 3; segments 1 and 3 empty
    expected = torch.tensor([[2.5, 3.5], [0.0, 0.0], [7.0 / 3.0, 2.0 / 3.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)


def test_scatter_max_values_and_gradient_route_to_the_maximum() -> None:
    src, index = _segments()
    src.requires_grad_(True)
    out = scatter_max(src, index, dim_size=4)
    expected = torch.tensor([[3.0, 5.0], [0.0, 0.0], [7.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.sum().backward()
    # gradient 1 only at the argmax of each (segment, channel): (row1,c0) (row1,c1) (row3,c0) (row2,c1)
    expected_grad = torch.zeros_like(src)
    expected_grad[1, 0] = expected_grad[1, 1] = expected_grad[3, 0] = expected_grad[2, 1] = 1.0
    torch.testing.assert_close(src.grad, expected_grad, rtol=0, atol=0)


def test_scatter_mean_gradcheck() -> None:
    src, index = _segments()
    src.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: scatter_mean(s, index, 4), (src,))


def test_sparse_cat_concatenates_channels_and_rejects_other_voxels() -> None:
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32)
    a = SparseTensor.from_coords(torch.ones(2, 3), coords, (2, 1, 1), 1)
    b = a.replace_feature(torch.zeros(2, 2))
    cat = sparse_cat(a, b)
    assert cat.feats.shape == (2, 5) and cat.coords is a.coords and cat.cache is a.cache
    other = SparseTensor.from_coords(torch.ones(2, 2), coords.flip(0), (2, 1, 1), 1)
    with pytest.raises(ValueError):
        sparse_cat(a, other)
