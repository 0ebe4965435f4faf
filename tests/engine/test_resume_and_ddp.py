"""A run killed with SIGKILL and resumed with --resume ends bit-identical to an uninterrupted run;
two gloo processes under torchrun train and reduce confusion counts across ranks."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import torch

from tests.engine.conftest import overrides

RECIPE = "harness/configs/recipes/minkunet_student.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def harness_cmd(root, out, name, *extra):
    # 2 loader workers (the recipe's 8 on this 2-core machine would only add start-up time): the batches must not
    # depend on which worker builds them
    args = overrides(root, out, name, train__epochs=2, train__checkpoint_steps=1, data__max_scans=3, data__num_workers=2)
    return [sys.executable, "-m", "harness", "train", "--config", RECIPE, *args, *extra]


def run_folder(out, name):
    return out / "semantickitti" / "minkunet" / name / "seed0"


def test_sigkill_then_resume_equals_uninterrupted(tiny_kitti, tmp_path):
    subprocess.run(harness_cmd(tiny_kitti, tmp_path, "full"), check=True, env=ENV, capture_output=True)
    killed = run_folder(tmp_path, "killed")
    proc = subprocess.Popen(harness_cmd(tiny_kitti, tmp_path, "killed"), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = killed / "train_log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:  # mid second epoch (3 steps per epoch)
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()
    subprocess.run(harness_cmd(tiny_kitti, tmp_path, "killed", "--resume"), check=True, env=ENV, capture_output=True)

    full, resumed = (json.loads((run_folder(tmp_path, n) / "metrics.json").read_text()) for n in ("full", "killed"))
    assert resumed["miou"] == full["miou"] and resumed["global_steps"] == full["global_steps"] == 6
    assert resumed["confusion_matrix"]["counts"] == full["confusion_matrix"]["counts"]
    a = torch.load(run_folder(tmp_path, "full") / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(killed / "checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the best-so-far validation survives the kill: same best epoch, mIoU and best.pt weights
    assert resumed["checkpoints"] == full["checkpoints"]
    a = torch.load(run_folder(tmp_path, "full") / "checkpoints/best.pt", weights_only=True)["model"]
    b = torch.load(killed / "checkpoints/best.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [[json.loads(x) for x in (run_folder(tmp_path, n) / "train_log.jsonl").read_text().splitlines()] for n in ("full", "killed")]
    train_steps = [[r for r in log if "total" in r] for log in logs]
    assert [r["step"] for r in train_steps[1]] == list(range(1, 7))
    assert [r["total"] for r in train_steps[0]] == [r["total"] for r in train_steps[1]]
    assert [r for r in logs[0] if "val_miou" in r] == [r for r in logs[1] if "val_miou" in r]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp(tiny_kitti, tmp_path):
    args = overrides(tiny_kitti, tmp_path, "ddp", data__max_scans=3, train__max_steps_per_epoch=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "harness", "train", "--config", RECIPE, *args, "--device", "cpu"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_folder(tmp_path, "ddp")
    metrics = json.loads((run / "metrics.json").read_text())
    env = json.loads((run / "env.json").read_text())
    assert env["world_size"] == 2
    # 3 val scans split 2 + 1 over the ranks, no padding: every scan counted exactly once after the reduction
    assert metrics["num_scans"] == 3 and metrics["num_points"] == 3 * 1200
    assert np.load(run / "confusion.npz")["overall"].sum() == 3 * 1200
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert len([r for r in log if "total" in r]) == 1  # rank 0 logs, once per step
    assert len([r for r in log if "val_miou" in r]) == 1  # and once per validation
    # the test's global batch 1 cannot be kept on 2 processes: 1 scan each, lr 0.24 x 2/1 (linear rule), recorded
    recipe = {"world_size": 2, "per_process_batch": 1, "global_batch": 2, "lr": 0.48, "recipe_global_batch": 1,
              "recipe_lr": 0.24, "status": "scaled", "rule": "linear"}
    assert env["recipe"] == recipe and metrics["recipe"] == recipe
    # spvnas warm-up on 2 processes: 1000 // 2 = 500 steps, the first step's lr = 0.48 x 2 / 500 after its update
    assert abs(log[0]["lr"] - 0.48 * 2 / 500) < 1e-12
