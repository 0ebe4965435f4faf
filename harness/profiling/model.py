"""``harness timing model``: parameters, MACs and latency of a backbone on one real scan.

* **Parameters**: the state_dict total, and the parameters the forward pass actually uses (those
  that receive a gradient in one forward+backward on a small crop of the scan -- a structural
  property, so the crop size does not matter). spvnas's ``MinkUNet`` keeps ``point_transforms`` in
  its state_dict that its forward never uses; the model zoo's 21.7 M excludes them. Top-level
  submodules are listed on their own lines (Cylinder3D's added point refinement head among them).
* **MACs** by the PVKD supplement's formula (§3 "MACs calculation", following SPVNAS): each sparse
  conv costs ``pairs x C_in x C_out`` (= N x K_bar x C_in x C_out) with the kernel-map pairs the
  backend really used; each dense ``nn.Linear`` costs ``rows x C_in x C_out``. BatchNorm, activations
  and pooling are not counted (as in the supplement and spvnas' counter).
* **Latency**: mean over ``repeat`` timed forwards (eval mode, ``no_grad``) after ``warmup`` forwards,
  CUDA-synchronised on GPU (the paper averages 100 samples). Only the network forward is timed:
  the batch is voxelised once beforehand (``harness timing data`` times preprocessing).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.backbones.base import BACKBONES, collate_scans
from harness.data.semantickitti import read_points
from harness.sparse.macs import count_sparse_macs
from harness.sparse.selection import describe_backend, set_backend
from harness.backbones.base import voxelize_for_backbone


def build_backbone(name: str, width: float, backend: str = "auto") -> nn.Module:
    model = BACKBONES.get(name)(width=width)
    set_backend(model, backend)
    return model


def _batch(name: str, points: np.ndarray, device: str):
    return collate_scans([voxelize_for_backbone(name, points)]).to(device)


def used_parameter_names(model: nn.Module, name: str, points: np.ndarray, crop_points: int = 4000) -> set[str]:
    """Names of parameters that get a gradient from one forward+backward on the scan's nearest points."""
    near = points[np.argsort(np.linalg.norm(points[:, :3], axis=1))[:crop_points]]
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(_batch(name, near, "cpu"))
    (out.point_logits.sum() + out.voxel_logits.sum()).backward()
    used = {n for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return used


def parameter_report(model: nn.Module, used: set[str]) -> dict:
    per_module: "OrderedDict[str, dict]" = OrderedDict()
    for pname, p in model.named_parameters():
        top = pname.split(".")[0]
        row = per_module.setdefault(top, {"total": 0, "used": 0})
        row["total"] += p.numel()
        row["used"] += p.numel() if pname in used else 0
    return {
        "state_dict_total": int(sum(p.numel() for p in model.parameters())),
        "used_by_forward": int(sum(p.numel() for n, p in model.named_parameters() if n in used)),
        "per_module": per_module,
    }


def count_macs(model: nn.Module, batch) -> dict:
    """Sparse-conv MACs from kernel-map pairs plus dense Linear MACs, per layer and in total."""
    dense_rows: list[dict] = []
    handles = []
    for lname, module in model.named_modules():
        if isinstance(module, nn.Linear):
            def hook(mod, inputs, output, lname=lname):
                rows = int(inputs[0].reshape(-1, mod.in_features).shape[0])
                dense_rows.append({"name": lname, "kind": "linear", "rows": rows, "in_channels": mod.in_features,
                                   "out_channels": mod.out_features, "macs": rows * mod.in_features * mod.out_features})
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad(), count_sparse_macs(model) as counter:
            model(batch)
    finally:
        for h in handles:
            h.remove()
    sparse_rows = counter.as_rows()
    sparse_total = sum(r["macs"] for r in sparse_rows)
    dense_total = sum(r["macs"] for r in dense_rows)
    return {"total": sparse_total + dense_total, "sparse_conv": sparse_total, "dense": dense_total,
            "gmacs": (sparse_total + dense_total) / 1e9, "layers": sparse_rows + dense_rows}


def measure_latency(model: nn.Module, batch, repeat: int, warmup: int, device: str) -> dict:
    model.eval()
    cuda = device.startswith("cuda")
    times = []
    with torch.no_grad():
        for i in range(warmup + repeat):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(batch)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return {"mean_ms": float(np.mean(times)), "std_ms": float(np.std(times)), "repeat": repeat, "warmup": warmup}


def profile_model(backbone: str, width: float, scan: str | Path, backend: str = "auto", repeat: int = 20,
                  device: str = "cpu", warmup: int = 3, latency: bool = True) -> dict:
    """The JSON printed by ``harness timing model``."""
    points = read_points(scan)
    model = build_backbone(backbone, width, backend)
    used = used_parameter_names(model, backbone, points)
    model = model.to(device).eval()
    batch = _batch(backbone, points, device)
    macs = count_macs(model, batch)
    result = {
        "backbone": backbone, "width": width, "scan": str(scan), "device": device,
        "backend": describe_backend(model, device), "points": int(batch.point_features.shape[0]),
        "voxels": int(batch.voxel_coords.shape[0]),
        "params": parameter_report(model, used),
        "macs": {k: v for k, v in macs.items() if k != "layers"},
        "macs_per_layer": macs["layers"],
    }
    for attr in ("legacy_spconv1_keys",):
        if hasattr(model, attr):
            result[attr] = bool(getattr(model, attr))
    if latency:
        result["latency"] = measure_latency(model, batch, repeat, warmup, device)
    return result
