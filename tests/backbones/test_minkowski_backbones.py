"""The three backbones on MinkowskiEngine vs torchref, float64, on a real SemanticKITTI scan.

Same parameters, same input; outputs and every parameter gradient must agree. ME's CPU
kernels compute in float64 (measured), so the bound is the spconv comparison's
``1e-10 * max(1, |reference|)``; measured worst relative error ~1e-14 (see the README).
"""

from __future__ import annotations

import pytest
import torch

from tests.minkowski_support import require_minkowski

require_minkowski()

from harness.backbones.cylinder3d import Cylinder3D  # noqa: E402
from harness.backbones.minkunet import MinkUNet  # noqa: E402
from harness.backbones.spvcnn import SPVCNN  # noqa: E402
from harness.sparse import set_backend  # noqa: E402
from harness.sparse.tensor import SparseTensor  # noqa: E402
from tests.backbones.test_cylinder3d import _loss, frames, tiny_batch  # noqa: E402,F401  (fixtures)
from tests.backbones.test_minkunet_spvcnn import real_crop  # noqa: E402

pytestmark = pytest.mark.real_data


def _sparse_backends_used(model: torch.nn.Module) -> set[str]:
    return {m.last_backend for m in model.modules() if hasattr(m, "last_backend") and m.last_backend is not None}


def _assert_close(ref: torch.Tensor, other: torch.Tensor, what: str) -> float:
    scale = max(1.0, ref.abs().max().item())
    diff = (ref - other).abs().max().item()
    assert diff <= 1e-10 * scale, f"{what}: {diff:.3e} > 1e-10 * {scale:.3g}"
    return diff / scale


@pytest.mark.parametrize("legacy", [False, True], ids=["nominal", "legacy"])
def test_cylinder3d_torchref_equals_minkowski(tiny_batch, legacy):  # noqa: F811
    torch.manual_seed(0)
    model = Cylinder3D(width=0.5, legacy_spconv1_keys=legacy).double().train()
    results = {}
    for backend in ("torchref", "minkowski"):
        set_backend(model, backend)
        model.zero_grad(set_to_none=True)
        out = model(tiny_batch)
        _loss(out).backward()
        assert _sparse_backends_used(model) == {backend}
        results[backend] = (out, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    (ref_out, ref_grads), (me_out, me_grads) = results["torchref"], results["minkowski"]
    _assert_close(ref_out.point_logits, me_out.point_logits, "point_logits")
    _assert_close(ref_out.voxel_logits, me_out.voxel_logits, "voxel_logits")
    assert ref_grads.keys() == me_grads.keys() and len(ref_grads) > 50
    for name, ref in ref_grads.items():
        _assert_close(ref, me_grads[name], name)


@pytest.mark.parametrize("cls", [MinkUNet, SPVCNN])
def test_minkunet_spvcnn_torchref_equals_minkowski(kitti_root, cls):
    batch = real_crop(kitti_root, 8.0)
    torch.manual_seed(0)
    model = cls(0.5).double().train()
    model.dropout.eval()  # BN in training mode; no dropout (its mask would follow backend-specific row orders)
    n = batch.point_features.shape[0]
    probe = torch.randn(n, 19, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    results = {}
    for backend in ("torchref", "minkowski"):
        set_backend(model, backend)
        model.zero_grad(set_to_none=True)
        out = model(batch)
        (out.point_logits * probe).sum().backward()
        assert _sparse_backends_used(model) == {backend}
        results[backend] = (out.point_logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    (ref_logits, ref_grads), (me_logits, me_grads) = results["torchref"], results["minkowski"]
    assert ref_logits.shape == (n, 19) and ref_logits.abs().max() > 0
    _assert_close(ref_logits, me_logits, "point_logits")
    assert ref_grads.keys() == me_grads.keys() and len(ref_grads) > 100
    for name, ref in ref_grads.items():
        _assert_close(ref, me_grads[name], name)
