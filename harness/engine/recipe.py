"""A recipe's batch and learning rate on a given number of processes (GPUs).

The original recipes are stated for their own hardware: Cylinder3D trains 2 scans on 1 GPU with Adam 1e-3
(xinge008/Cylinder3D ``config/semantickitti.yaml``: ``train_data_loader.batch_size`` 2, ``learning_rate``
0.001, ``train_cylinder_asym.py`` on one GPU), spvnas 2 scans on each of 8 GPUs with SGD 0.24
(mit-han-lab/spvnas ``configs/semantic_kitti/default.yaml``, README: 8 GPUs). A recipe writes that global batch
in ``train.global_batch_size``; this module derives the per-process batch from the world size ``W``:

* ``global % W == 0``: per-process ``global / W``, global batch and learning rate as the original
  ("original");
* otherwise (e.g. Cylinder3D's 2 on 8 GPUs: a GPU takes at least one scan): per-process
  ``max(1, global // W)``, so the effective global batch ``B' = per_process x W`` differs from ``B``, and the
  learning rate is rescaled by ``train.lr_scaling``: linear ``lr' = lr x B'/B`` (Goyal et al. 2017),
  sqrt ``lr' = lr x sqrt(B'/B)``, none ``lr' = lr`` ("scaled"). The schedule keeps its length in epochs (so it
  has ``B/B'`` times the steps of the original).

Without ``global_batch_size`` the config's ``train.batch_size`` is per process and nothing is rescaled
("per-process": the demo profile and hand-written configs).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from harness.config.schema import RunConfig

ORIGINAL, SCALED, PER_PROCESS = "original", "scaled", "per-process"


@dataclass(frozen=True)
class ResolvedRecipe:
    """Batch and learning rate of a run on ``world_size`` processes.

    Attributes:
        world_size: processes (GPUs) W.
        per_process_batch: scans per process and step.
        global_batch: scans per optimizer step over all processes (per_process_batch x W).
        lr: the learning rate the optimizer uses.
        recipe_global_batch: the recipe's original global batch B (None: not stated).
        recipe_lr: the recipe's learning rate (for B).
        status: "original" | "scaled" | "per-process".
        rule: the lr rule applied ("linear" | "sqrt" | "none"; "none" when not scaled).
    """

    world_size: int
    per_process_batch: int
    global_batch: int
    lr: float
    recipe_global_batch: int | None
    recipe_lr: float
    status: str
    rule: str

    def as_dict(self) -> dict:
        return asdict(self)


LR_RULES = {
    "linear": lambda ratio: ratio,
    "sqrt": math.sqrt,
    "none": lambda ratio: 1.0,
}


def resolve_recipe(cfg: RunConfig, world_size: int) -> ResolvedRecipe:
    """Per-process batch, global batch and learning rate of ``cfg`` on ``world_size`` processes (module doc)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    lr = float(cfg.optim.lr)
    target = cfg.train.global_batch_size
    if target is None:
        per = int(cfg.train.batch_size)
        return ResolvedRecipe(world_size, per, per * world_size, lr, None, lr, PER_PROCESS, "none")
    per = max(1, target // world_size)
    effective = per * world_size
    if effective == target:
        return ResolvedRecipe(world_size, per, effective, lr, target, lr, ORIGINAL, "none")
    rule = cfg.train.lr_scaling
    return ResolvedRecipe(world_size, per, effective, lr * LR_RULES[rule](effective / target), target, lr, SCALED, rule)


def describe(recipe: ResolvedRecipe) -> str:
    """One plan/table line: ``8 GPUs x 1 = 8 (recipe 2), lr 0.004 [scaled, linear]``."""
    gpus = f"{recipe.world_size} GPU{'s' if recipe.world_size != 1 else ''}"
    base = f"{gpus} x {recipe.per_process_batch} = {recipe.global_batch}"
    if recipe.status == SCALED:
        return f"{base} (recipe {recipe.recipe_global_batch}), lr {recipe.lr:g} (recipe {recipe.recipe_lr:g}) [scaled, {recipe.rule}]"
    return f"{base}, lr {recipe.lr:g} [{recipe.status}]"
