"""The three backbones on MinkowskiEngine vs torchref, float64, on a real SemanticKITTI scan.

Same parameters, same input; outputs and every parameter gradient must agree. ME's CPU
kernels compute in float64 (measured), so the bound is the spconv comparison's
``1e-10 * max(1, |reference|)``. Measured worst error / max(1, |reference|) over outputs and all
gradients: Cylinder3D 0.5x (861 voxels, nominal and legacy keys) 1.5e-15, MinkUNet 0.5x 7.7e-15 and
SPVCNN 0.5x 3.9e-13 (22,562 voxels, the 8 m crop of SemanticKITTI 00/000000).
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
from tests.engine.conftest import overrides, tiny_kitti  # noqa: E402,F401  (fixture)

def _sparse_backends_used(model: torch.nn.Module) -> set[str]:
    return {m.last_backend for m in model.modules() if hasattr(m, "last_backend") and m.last_backend is not None}


def _assert_close(ref: torch.Tensor, other: torch.Tensor, what: str) -> float:
    scale = max(1.0, ref.abs().max().item())
    diff = (ref - other).abs().max().item()
    assert diff <= 1e-10 * scale, f"{what}: {diff:.3e} > 1e-10 * {scale:.3g}"
    return diff / scale


@pytest.mark.real_data
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


@pytest.mark.real_data
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


# ----------------------------------------------------------------------------- profile, train, eval
@pytest.mark.parametrize("backbone", ["minkunet"])  # Cylinder3D on ME: train/eval and exactness tests (its profile costs ~50 s)
def test_profile_model_on_minkowski_counts_torchrefs_macs(capsys, tiny_kitti, backbone):  # noqa: F811
    import json

    from harness.cli import main

    scan = tiny_kitti / "sequences/00/velodyne/000000.bin"
    reports = {}
    for backend in ("torchref", "minkowski"):
        assert main(["profile", "model", "--backbone", backbone, "--width", "0.5", "--scan", str(scan),
                     "--backend", backend, "--repeat", "1", "--warmup", "0"]) == 0
        reports[backend] = json.loads(capsys.readouterr().out)
    ref, me = reports["torchref"], reports["minkowski"]
    assert me["backend"] == "minkowski" and me["latency"]["mean_ms"] > 0
    # same kernel maps -> the same pairs per layer, hence the same MACs
    assert [layer["pairs"] for layer in me["macs_per_layer"] if "pairs" in layer] == \
        [layer["pairs"] for layer in ref["macs_per_layer"] if "pairs" in layer]
    assert me["macs"] == ref["macs"] and me["params"] == ref["params"]


@pytest.mark.parametrize("recipe", ["cylinder3d_student", "minkunet_student", "spvcnn_student"])
def test_train_a_step_and_evaluate_on_minkowski(tiny_kitti, tmp_path, recipe):  # noqa: F811
    import json

    from harness.cli import main
    from harness.config.load import load_config
    from harness.engine.trainer import Trainer

    cfg = load_config(f"harness/configs/recipes/{recipe}.yaml",
                      overrides(tiny_kitti, tmp_path, "me", train__max_steps_per_epoch=1, model__sparse_backend="minkowski"))
    trainer = Trainer(cfg, device="cpu")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
    metrics = trainer.fit()
    assert _sparse_backends_used(trainer.model) == {"minkowski"}
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "one optimizer step changed no weight"
    run = trainer.store.path
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["sparse_backend"] == "minkowski" and 0.0 <= saved["miou"] <= 1.0
    log = [r for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "total" in r]
    assert [r["step"] for r in log] == [1] and all(torch.isfinite(torch.tensor(r["total"])) for r in log)
    assert main(["eval", "--run", str(run), "--device", "cpu"]) == 0
    evaluated = json.loads((run / "eval_val.json").read_text())
    assert evaluated["num_points"] >= saved["num_points"] > 0 and 0.0 <= evaluated["miou"] <= 1.0
    assert metrics is not None
