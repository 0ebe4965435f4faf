"""``./reproduce.sh device-check``: is this machine's accelerator computing what the CPU computes, and how fast?

One JSON report (``--out``, default ``results/device_check.json``) with these sections; a section that needs CUDA
(or two GPUs) says ``{"skipped": "<reason>"}`` instead of failing, so the check runs, and is tested, on CPU:

* ``conv_kinds``: every sparse-conv kind (submanifold 3x3x3, asymmetric (1,3,3), 1x1x1, strided stride 2, inverse
  of that strided conv) on each backend x device against torchref on the CPU in float64: max |diff| / max |ref|
  of the output features and of the input-feature and weight gradients (rows matched by voxel coordinates).
* ``networks``: the three backbones (width 0.5, one cropped real scan) the same way: voxel and point logits and every
  parameter gradient of ``sum(logits x fixed random weights)``.
* ``kernel_map_pairs``: kernel-map pairs per sparse-conv call of each network on each backend x device; equal to
  torchref's on the CPU (they are MACs of the PVKD supplement's formula).
* ``amp``: a few training steps under ``torch.autocast`` + ``GradScaler`` per backbone (CUDA only): every loss finite.
* ``latency``: teacher (width 1.0) and student (0.5) forward time per backbone, mean over ``samples`` real-scan
  forwards (the PVKD supplement: 100 samples) after ``warmup`` forwards, and the teacher/student ratio.
* ``train_step``: the time of one forward + backward + optimizer step per backbone (width 1.0).
* ``ddp``: one 2-process NCCL DDP step (two GPUs needed): the ranks' gradients agree after the all-reduce.

``passed`` is False when any comparison exceeds its tolerance (float32 vs float64: 1e-4 relative for a conv and
for a network's logits, 1e-2 of the largest gradient for its gradients; kernel-map pairs: equal per call; AMP:
finite losses; DDP: equal gradients on both ranks). ``--quick`` uses fewer samples and smaller crops (the CPU test).
"""
from __future__ import annotations

import copy
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from harness.backbones.base import BACKBONES, collate_scans
from harness.errors import InputError
from harness.sparse.conv import SparseConv3d, SparseInverseConv3d, SubMConv3d
from harness.sparse.macs import count_sparse_macs
from harness.sparse.selection import set_backend
from harness.sparse.tensor import SparseTensor
from harness.backbones.base import voxelize_for_backbone

BACKBONE_NAMES = ("cylinder3d", "minkunet", "spvcnn")
CONV_TOL = 1e-4       # float32 vs float64, relative to the reference's largest magnitude
LOGITS_TOL = 1e-4     # a network's logits, float32 vs float64 (measured on CPU: <= 8e-6 for all three)
GRAD_TOL = 1e-2       # its parameter gradients, relative to the largest one: a weight gradient sums 1e4-1e5
                      # float32 products (measured on CPU: <= 1.1e-3, torchref's MinkUNet up4)
NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"


def spconv_available() -> bool:
    try:
        import spconv.pytorch  # noqa: F401
    except Exception:  # ImportError, or a CUDA build on a machine without the driver
        return False
    return True


def targets(cuda: bool) -> list[tuple[str, str]]:
    """(backend, device) pairs compared with torchref-CPU-float64: float32 torchref (and spconv) on the CPU, and
    both on CUDA when there is a GPU."""
    out = [("torchref", "cpu")] + ([("spconv", "cpu")] if spconv_available() else [])
    if cuda:
        out += [("torchref", "cuda")] + ([("spconv", "cuda")] if spconv_available() else [])
    return out


def rel_diff(got: torch.Tensor | None, ref: torch.Tensor | None) -> float:
    """max |got - ref| / max(max |ref|, 1e-12) in float64 (0 for two empty tensors)."""
    if got is None or ref is None:  # a gradient one side lacks: a different computation graph
        return 0.0 if got is None and ref is None else float("inf")
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    if got.shape != ref.shape:
        return float("inf")
    if ref.numel() == 0:
        return 0.0
    return float((got - ref).abs().max() / max(float(ref.abs().max()), 1e-12))


def _sorted_rows(coords: torch.Tensor) -> torch.Tensor:
    """Row order that sorts voxels by (batch, d0, d1, d2): backends may emit strided outputs in any order."""
    c = coords.long().cpu()
    key = ((c[:, 0] * 4096 + c[:, 1]) * 4096 + c[:, 2]) * 4096 + c[:, 3]
    return torch.argsort(key)


# ---------------------------------------------------------------------------------------------- conv kinds
CONV_KINDS: dict[str, Callable[[int, int], nn.Module]] = {
    "subm_333": lambda ci, co: SubMConv3d(ci, co, 3, indice_key="k333"),
    "subm_133": lambda ci, co: SubMConv3d(ci, co, (1, 3, 3), indice_key="k133"),
    "subm_111": lambda ci, co: SubMConv3d(ci, co, 1, indice_key="k111"),
    "strided_s2": lambda ci, co: SparseConv3d(ci, co, 3, 2, 1, indice_key="down"),
}


class _StridedThenInverse(nn.Module):
    """A strided conv and its inverse (Cylinder3D's pool / up pair): checks the inverse conv kind."""

    def __init__(self, ci: int, co: int) -> None:
        super().__init__()
        self.down = SparseConv3d(ci, co, 3, 2, 1, indice_key="down")
        self.up = SparseInverseConv3d(co, co, 3, indice_key="down")

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.up(self.down(x))


CONV_KINDS["inverse_of_s2"] = _StridedThenInverse


def _conv_input(num_voxels: int, channels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    from harness.sparse.synthetic import lidar_sector_coords

    coords, grid = lidar_sector_coords(num_voxels, batch_size=2, seed=seed)
    feats = torch.randn(coords.shape[0], channels, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return coords, feats, grid


def _run_conv(module: nn.Module, coords, feats, grid, backend: str, device: str, dtype) -> dict[str, torch.Tensor]:
    m = copy.deepcopy(module).to(device=device, dtype=dtype)
    set_backend(m, backend)
    x_feats = feats.detach().clone().to(device=device, dtype=dtype).requires_grad_(True)  # a leaf of its own
    out = m(SparseTensor.from_coords(x_feats, coords.to(device), grid, 2))
    order = _sorted_rows(out.coords)
    y = out.feats[order.to(out.feats.device)]
    w = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y).to(device=device, dtype=dtype)
    (y * w).sum().backward()
    grads = {f"grad.{n}": p.grad for n, p in m.named_parameters()}
    return {"out": y, "grad.input": x_feats.grad, **grads}


def check_conv_kinds(cuda: bool, quick: bool) -> dict:
    coords, feats, grid = _conv_input(300 if quick else 4000, 8, seed=0)
    result: dict[str, Any] = {}
    for kind, make in CONV_KINDS.items():
        torch.manual_seed(0)
        module = make(8, 16)
        ref = _run_conv(module, coords, feats, grid, "torchref", "cpu", torch.float64)
        row = {}
        for backend, device in targets(cuda):
            got = _run_conv(module, coords, feats, grid, backend, device, torch.float32)
            diffs = {k: rel_diff(got[k], ref[k]) for k in ref}
            row[f"{backend}-{device}"] = {"max_rel_diff": max(diffs.values()), "per_tensor": diffs,
                                          "passed": max(diffs.values()) <= CONV_TOL}
        if not cuda:
            row["cuda"] = {"skipped": NO_CUDA}
        result[kind] = row
    return result


# ---------------------------------------------------------------------------------------------- networks
def real_scans(root: Path) -> list[Path]:
    """Velodyne scans under ``root`` (a SemanticKITTI root or any folder of ``*.bin``), sorted."""
    scans = sorted(Path(root).rglob("*.bin"))
    if not scans:
        raise InputError(root, "no SemanticKITTI .bin scans found", "pass --scans DIR holding sequences/NN/velodyne/*.bin")
    return scans


def _points(scan: Path, crop: int | None) -> np.ndarray:
    from harness.data.semantickitti import read_points

    points = read_points(scan)[:, :4]
    if crop is not None and points.shape[0] > crop:
        points = points[np.sort(np.argsort(np.linalg.norm(points[:, :3], axis=1), kind="stable")[:crop])]
    return np.ascontiguousarray(points, dtype=np.float32)


def _build(name: str, width: float) -> nn.Module:
    return BACKBONES.get(name)(width=width)


def _batch(name: str, points: np.ndarray, labels: np.ndarray | None = None):
    return collate_scans([voxelize_for_backbone(name, points, labels)], None if labels is None else [labels])


def _network_pass(model: nn.Module, batch, backend: str, device: str, dtype) -> tuple[dict[str, torch.Tensor], list[int]]:
    m = copy.deepcopy(model).to(device=device, dtype=dtype).train()  # BatchNorm on batch statistics, as in training
    for module in m.modules():
        if isinstance(module, nn.Dropout):  # SPVCNN's dropout: a random mask is no precision difference
            module.eval()
    set_backend(m, backend)
    b = batch.to(device)
    for key, value in list(b.__dict__.items()):  # float inputs in the network's precision (float64 reference)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(b, key, value.to(dtype))
    with count_sparse_macs(m) as counter:
        out = m(b)
    loss = 0
    tensors: dict[str, torch.Tensor] = {}
    for key in ("voxel_logits", "point_logits"):
        y = getattr(out, key)
        w = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y).to(device=device, dtype=dtype)
        loss = loss + (y * w).sum()
        tensors[key] = y
    loss.backward()
    for n, p in m.named_parameters():
        if p.grad is not None:
            tensors[f"grad.{n}"] = p.grad
    return tensors, [layer.pairs for layer in counter.layers]


def check_networks(scan: Path, cuda: bool, quick: bool) -> tuple[dict, dict]:
    points = _points(scan, 1500 if quick else 20000)
    outputs: dict[str, Any] = {}
    pairs: dict[str, Any] = {}
    for name in BACKBONE_NAMES:
        torch.manual_seed(0)
        model = _build(name, 0.5)
        batch = _batch(name, points)
        ref, ref_pairs = _network_pass(model, batch, "torchref", "cpu", torch.float64)
        row, prow = {}, {"torchref-cpu-float64": sum(ref_pairs)}
        for backend, device in targets(cuda):
            got, got_pairs = _network_pass(model, batch, backend, device, torch.float32)
            # logits relative to their own magnitude; gradients relative to the largest gradient of the network
            # (a parameter whose exact gradient is ~0, e.g. a bias feeding BatchNorm, has float32 noise only)
            scale = max(float(v.detach().abs().max()) for k, v in ref.items() if k.startswith("grad."))
            diffs = {k: (rel_diff(got.get(k), ref[k]) if not k.startswith("grad.") or k not in got else
                         float((got[k].detach().double().cpu() - ref[k].detach().double().cpu()).abs().max()) / scale)
                     for k in ref}
            logits = {k: diffs.pop(k) for k in ("voxel_logits", "point_logits")}
            worst = max(diffs, key=diffs.get)
            row[f"{backend}-{device}"] = {"logits": logits, "max_grad_rel_diff": diffs[worst], "worst_grad": worst,
                                          "passed": max(logits.values()) <= LOGITS_TOL and diffs[worst] <= GRAD_TOL}
            prow[f"{backend}-{device}"] = {"total": sum(got_pairs), "calls": len(got_pairs),
                                           "passed": got_pairs == ref_pairs}
        if not cuda:
            row["cuda"] = prow["cuda"] = {"skipped": NO_CUDA}
        outputs[name], pairs[name] = row, prow
    return outputs, pairs


# ---------------------------------------------------------------------------------------------- AMP / timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _train_batch(name: str, scan: Path, crop: int | None):
    points = _points(scan, crop)
    labels = np.random.default_rng(0).integers(1, 20, points.shape[0])  # any labels: only finiteness and time matter
    return _batch(name, points, labels)


def _step(model: nn.Module, batch, optimizer, scaler, amp: bool, device: str) -> float:
    """One CE training step on the voxel logits (the recipes' loss; Lovasz adds no kernel worth timing apart)."""
    from harness.backbones.base import label_offset, learning_ids_to_targets

    with torch.autocast(device.split(":")[0], enabled=amp):
        out = model(batch)
        targets = learning_ids_to_targets(batch.voxel_labels, label_offset(model))
        loss = nn.functional.cross_entropy(out.voxel_logits.float(), targets, ignore_index=-1)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def check_amp(scan: Path, cuda: bool, quick: bool) -> dict:
    if not cuda:
        return {"skipped": NO_CUDA + "; autocast float16 trains only on CUDA here (the trainer turns AMP off on CPU)"}
    out = {}
    for name in BACKBONE_NAMES:
        torch.manual_seed(0)
        model = _build(name, 1.0).cuda().train()
        batch = _train_batch(name, scan, None).to("cuda")
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        scaler = torch.amp.GradScaler("cuda")
        losses = [_step(model, batch, opt, scaler, True, "cuda") for _ in range(3 if quick else 10)]
        finite = all(np.isfinite(losses)) and all(torch.isfinite(p).all() for p in model.parameters())
        out[name] = {"losses": losses, "scale": float(scaler.get_scale()), "passed": bool(finite)}
    return out


def check_latency(scans: list[Path], device: str, quick: bool) -> dict:
    samples, warmup = (2, 1) if quick else (100, 10)
    crop = 1500 if quick else None
    out: dict[str, Any] = {"device": device, "samples": samples, "warmup": warmup, "distinct_scans": len(scans)}
    for name in BACKBONE_NAMES:
        batches = [_batch(name, _points(scans[i % len(scans)], crop)).to(device) for i in range(min(samples, len(scans)))]
        row = {}
        for role, width in (("teacher", 1.0), ("student", 0.5)):
            torch.manual_seed(0)
            model = _build(name, width).to(device).eval()
            times = []
            with torch.no_grad():
                for i in range(warmup + samples):
                    _sync(device)
                    t0 = time.perf_counter()
                    model(batches[i % len(batches)])
                    _sync(device)
                    if i >= warmup:
                        times.append((time.perf_counter() - t0) * 1e3)
            row[f"{role}_ms"] = float(np.mean(times))
        row["teacher_over_student"] = row["teacher_ms"] / row["student_ms"]
        out[name] = row
    return out


def check_train_step(scan: Path, device: str, quick: bool) -> dict:
    out: dict[str, Any] = {"device": device}
    amp = device.startswith("cuda")
    for name in BACKBONE_NAMES:
        torch.manual_seed(0)
        model = _build(name, 1.0).to(device).train()
        batch = _train_batch(name, scan, 1500 if quick else None).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        _step(model, batch, opt, scaler, amp, device)  # warm-up (kernel selection, allocator)
        _sync(device)
        t0 = time.perf_counter()
        loss = _step(model, batch, opt, scaler, amp, device)
        _sync(device)
        out[name] = {"step_ms": (time.perf_counter() - t0) * 1e3, "loss": loss, "amp": amp}
    return out


# ---------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, port: int, scan: str, queue) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=2)
    torch.cuda.set_device(rank)
    torch.manual_seed(0)
    model = _build("minkunet", 0.5).cuda()
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[rank], find_unused_parameters=True)
    batch = _train_batch("minkunet", Path(scan), 20000 + 5000 * rank).to("cuda")  # different data per rank
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    t0 = time.perf_counter()
    out = ddp(batch)
    out.voxel_logits.float().logsumexp(1).mean().backward()
    torch.cuda.synchronize()
    step_ms = (time.perf_counter() - t0) * 1e3
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    gathered = [torch.zeros_like(grad) for _ in range(2)]
    dist.all_gather(gathered, grad)
    opt.step()
    if rank == 0:
        queue.put({"step_ms": step_ms, "grad_max_abs_diff_between_ranks": float((gathered[0] - gathered[1]).abs().max())})
    dist.destroy_process_group()


def check_ddp(scan: Path) -> dict:
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return {"skipped": f"needs two CUDA devices, found {torch.cuda.device_count() if torch.cuda.is_available() else 0}"}
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(port, str(scan), queue), nprocs=2, start_method="spawn")
    result = queue.get()
    result["passed"] = result["grad_max_abs_diff_between_ranks"] == 0.0
    return result


# ---------------------------------------------------------------------------------------------- report
def _all_passed(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("passed") is False:
            return False
        return all(_all_passed(v) for v in node.values())
    return True


def run_device_check(scans_root: Path, out: Path, quick: bool = False) -> dict:
    """Run every section (module docstring), write the JSON report to ``out`` and return it."""
    if out.is_dir():
        raise InputError(out, "is a directory", "pass a file path for --out (e.g. results/device_check.json)")
    scans = real_scans(scans_root)
    cuda = torch.cuda.is_available()
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
        "cuda_devices": torch.cuda.device_count() if cuda else 0, "torch": torch.__version__,
        "spconv": spconv_available(), "quick": quick, "scans": [str(s) for s in scans[:3]],
    }
    report["conv_kinds"] = check_conv_kinds(cuda, quick)
    report["networks"], report["kernel_map_pairs"] = check_networks(scans[0], cuda, quick)
    report["amp"] = check_amp(scans[0], cuda, quick)
    device = "cuda" if cuda else "cpu"
    report["latency"] = check_latency(scans, device, quick)
    report["train_step"] = check_train_step(scans[0], device, quick)
    report["ddp"] = check_ddp(scans[0])
    report["seconds"] = time.perf_counter() - t0
    report["passed"] = _all_passed(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=float))
    tmp.replace(out)
    return report
