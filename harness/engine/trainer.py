"""Supervised and distilled training with exact resume, DDP and run-store bookkeeping.

One step (detectron2 / mmrazor ``SingleTeacherDistill`` order):

1. the student runs on the batch inside its :class:`TapRecorder`;
2. segmentation loss on the student's voxel logits (and point logits with a point head);
3. distilled runs: the frozen teacher (eval, ``no_grad``, never DDP-wrapped) runs on the *same*
   batch -- identical augmentation and voxelisation -- inside its recorder; the distiller returns
   unweighted named terms, each multiplied by its coefficient;
4. every term is logged by name; a non-finite total stops the run with a clear message and the last
   good checkpoint kept.

Resume restores model, optimizer, scheduler, AMP scaler, distiller, epoch/step and RNG states; the
data order and augmentation are pure functions of (seed, epoch, position), so a resumed run reaches
exactly the same weights as an uninterrupted one (on CPU with deterministic kernels).
"""
from __future__ import annotations

import inspect
import math
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.backbones.base import BACKBONES, BackboneInput, label_offset, learning_ids_to_targets, logits_to_learning_ids
from harness.config.load import config_from_dict, config_hash, read_yaml_file
from harness.config.schema import ModelConfig, RunConfig
from harness.data.datasets import dataset_spec
from harness.distill.recorder import TapRecorder, unwrap
from harness.engine.checkpoint import load_checkpoint, load_model_weights, model_identity, save_checkpoint, set_rng_state
from harness.engine.data import build_loader, move
from harness.engine.recipe import ResolvedRecipe, resolve_recipe
from harness.engine.dist import DistInfo, all_reduce_sum, barrier, init_distributed
from harness.engine.losses import segmentation_loss, weighted_total
from harness.errors import InputError
from harness.evaluate.runner import Accumulator, accumulate
from harness.runs.store import RunStore, run_dir_for
from harness.sparse.selection import describe_backend, set_backend


RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "distiller", "epoch", "step_in_epoch", "global_step", "rng")
CHECKPOINT_CHOICES = ("best", "last")  # eval.checkpoint: which weights metrics.json's top level (the tables) scores


def lr_factor(scheduler: str, step: int, epochs: int, steps_per_epoch: int, warmup_iters: int, world_size: int) -> float:
    """Per-step LR multiplier of optimizer step ``step`` (0-based).

    ``constant``: 1. ``cosine_warmup`` (mit-han-lab/spvnas ``core/schedulers.py`` ``cosine_schedule_with_warmup``):
    ``W = 0`` on one process, else ``warmup_iters // world_size`` warm-up steps at ``(k + 1) / W``; then
    ``0.5 (1 + cos(pi (k - W) / (epochs x steps_per_epoch)))`` -- the denominator is the whole schedule, not the
    part after warm-up, so the last step's factor stays just above 0.
    """
    if scheduler == "constant":
        return 1.0
    warmup = 0 if world_size == 1 else warmup_iters // world_size
    if step < warmup:
        return (step + 1) / warmup
    ratio = (step - warmup) / max(1, epochs * steps_per_epoch)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, ratio)))


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf; the last good checkpoint is kept."""


def build_model(model_cfg: ModelConfig, dataset: str = "semantickitti") -> nn.Module:
    """The backbone with the dataset's class count: Cylinder3D's head includes the ignored class
    (20 / 17 outputs, label_offset 0); spvnas heads leave it out (19 / 16 outputs, label_offset 1)."""
    cls = BACKBONES.get(model_cfg.backbone)
    num_classes = dataset_spec(dataset).num_classes
    model = cls.build(num_classes, model_cfg.width, **{key: getattr(model_cfg, key) for key in cls.config_options})
    set_backend(model, model_cfg.sparse_backend)
    return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_teacher(cfg: RunConfig, device: torch.device) -> tuple[nn.Module, RunConfig, str]:
    """The frozen teacher: its own resolved config and checkpoint (``distill.teacher_run`` or explicit files)."""
    d = cfg.distill
    if d.teacher_run:
        run = Path(d.teacher_run)
        config_file, ckpt = run / "config.yaml", run / "checkpoints" / "last.pt"
    else:
        if not d.teacher_config:
            raise InputError("distill.teacher_config", "teacher_checkpoint needs teacher_config", "set both, or use teacher_run")
        config_file, ckpt = Path(d.teacher_config), Path(d.teacher_checkpoint)
    if not config_file.is_file():
        raise InputError(config_file, "teacher config not found", "train the teacher first (harness train) or fix distill.teacher_run")
    if d.teacher_run and not (Path(d.teacher_run) / "metrics.json").is_file():
        raise InputError(d.teacher_run, "the teacher run is unfinished (no metrics.json): its last.pt is a "
                         "mid-training snapshot", "finish the teacher first (harness train --resume on its config)")
    teacher_cfg = config_from_dict(read_yaml_file(config_file))
    if d.teacher_run:  # the checkpoint the teacher's own tables scored (best.pt by default); older runs have last.pt only
        scored = Path(d.teacher_run) / "checkpoints" / f"{teacher_cfg.eval.checkpoint}.pt"
        ckpt = scored if scored.is_file() else ckpt
    for what, ours, theirs in (("backbone", cfg.model.backbone, teacher_cfg.model.backbone),
                               ("dataset", cfg.data.dataset, teacher_cfg.data.dataset)):
        if ours != theirs:
            raise InputError(config_file, f"the teacher is a {theirs} {what}, this student a {ours} one",
                             f"distil from a teacher of the same {what} (distill.teacher_run)")
    teacher = build_model(teacher_cfg.model, teacher_cfg.data.dataset)
    set_backend(teacher, cfg.model.sparse_backend)
    load_model_weights(teacher, ckpt, model_identity(teacher_cfg.model, teacher_cfg.data.dataset))
    teacher.to(device).eval().requires_grad_(False)
    return teacher, teacher_cfg, str(config_file.parent)


class Trainer:
    def __init__(self, cfg: RunConfig, resume: bool = False, device: str | None = None) -> None:
        self.cfg = cfg
        from harness.engine.device import resolve_device

        self.device = resolve_device(device)
        self.info: DistInfo = init_distributed(self.device.type)
        self.store = RunStore(run_dir_for(cfg))
        seed_everything(cfg.train.seed + self.info.rank)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.dataset = dataset_spec(cfg.data.dataset)
        self.label_map = self.dataset.label_map
        self.model = build_model(cfg.model, cfg.data.dataset).to(self.device)
        if cfg.model.init_checkpoint:
            load_model_weights(self.model, cfg.model.init_checkpoint, model_identity(cfg.model, cfg.data.dataset))
        self.offset = label_offset(self.model)
        self.recipe: ResolvedRecipe = resolve_recipe(cfg, self.info.world_size)
        pin = cfg.data.pin_memory and self.device.type == "cuda"
        batch = self.recipe.per_process_batch
        self.train_set, self.train_sampler, self.train_loader = build_loader(cfg, "train", self.info, batch, pin)
        self.val_set, self.val_sampler, self.val_loader = build_loader(cfg, "val", self.info, batch, pin)
        if len(self.train_set) == 0:
            raise InputError(cfg.data.root, "the training split has no scans", "check data.root / data.train_sequences")
        self.steps_per_epoch = len(self.train_loader)
        if cfg.train.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)

        self.teacher = self.distiller = None
        self.teacher_dir = None
        if cfg.distill.method:
            self.teacher, _, self.teacher_dir = load_teacher(cfg, self.device)
            self.distiller = self._build_distiller().to(self.device)
        params = list(self.model.parameters()) + (list(self.distiller.parameters()) if self.distiller else [])
        self.optimizer = self._build_optimizer(params)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ddp_model: nn.Module = self.model
        if self.info.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)  # MinkUNet keeps unused point_transforms (official layout)
        self.student_recorder = TapRecorder(self.model, self.distiller.student_taps) if self.distiller else None
        self.teacher_recorder = TapRecorder(self.teacher, self.distiller.teacher_taps) if self.distiller else None

        self.epoch = self.step_in_epoch = self.global_step = 0
        # the best validation so far: {"epoch", "global_step", "miou", "counts", "by_distance", "num_scans",
        # "num_points"} (confusion counts, so metrics.json can report it without re-evaluating); None before any
        self.best: dict | None = None
        self.last_eval: dict | None = None  # the same for the latest validation
        self.tensorboard = None
        if self.info.is_main and cfg.train.tensorboard:  # checked before prepare(): a refusal leaves no run folder
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise InputError("train.tensorboard", f"TensorBoard is not installed ({err})",
                                 "pip install 'pvkd-harness[tensorboard]' or set train.tensorboard=false") from None
        if self.info.is_main:
            self.store.prepare(cfg, resume=resume, world_size=self.info.world_size, device=str(self.device),
                               recipe=self.recipe.as_dict())
            if cfg.train.tensorboard:  # after prepare(): never touch a finished run's folder
                self.tensorboard = SummaryWriter(str(self.store.path / "tensorboard"))
        barrier(self.info)
        if resume and self.store.checkpoint_path.exists():  # a directory there is a named error, not a fresh start
            self._restore(load_checkpoint(self.store.checkpoint_path))
        else:
            if self.info.is_main:  # a fresh start: log lines of an attempt killed before its first checkpoint go
                self.store.truncate_log(0)
            if self.distiller is not None:
                self.distiller.pretrain(self.teacher, self.train_loader)

    # ------------------------------------------------------------------ construction helpers
    def _build_distiller(self):
        from harness.distill.base import DISTILLERS, DistillContext

        cls = DISTILLERS.get(self.cfg.distill.method)
        batch = move(next(iter(self.train_loader)), self.device)
        widths: dict[str, dict[str, int]] = {}
        # every tap the backbones offer: the distiller (built next) picks its own taps and may size adapters from them
        for name, net in (("student", self.model), ("teacher", self.teacher)):
            recorder = TapRecorder(net, tuple(unwrap(net).tap_points))
            with torch.no_grad(), recorder:
                net(batch.extras.get("teacher_input", batch) if name == "teacher" else batch)
            recorder.remove()
            widths[name] = {tap: int(v.feats.shape[1]) for tap, v in recorder.values.items()}
        options = dict(self.cfg.distill.options)
        frequency = None
        if cls.needs_class_frequency and "class_frequency" not in options:  # counted once per root, cached
            from harness.data.class_frequency import training_class_frequency

            if not self.info.is_main:  # rank 0 counts (and caches) first, the other ranks then read its cache
                barrier(self.info)
            counted = training_class_frequency(self.train_set.reader, self.cfg.data.dataset)
            if self.info.is_main:
                barrier(self.info)
            frequency = torch.tensor(counted.frequency, dtype=torch.float32)
        context = DistillContext(backbone=self.cfg.model.backbone, num_classes=self.label_map.num_classes,
                                 student_channels=widths["student"], teacher_channels=widths["teacher"],
                                 class_frequency=frequency, dataset=self.cfg.data.dataset)
        if "seed" in inspect.signature(cls.__init__).parameters and "seed" not in options:
            options["seed"] = self.cfg.train.seed + self.info.rank  # each rank samples its own supervoxels
        try:
            return cls(context, coefficients=self.cfg.distill.coefficients, **options)
        except ValueError as err:  # an option value the method rejects (names were checked with the config)
            raise InputError("distill.options", f"{self.cfg.distill.method}: {err}", "fix the option's value") from None

    def _build_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        o = self.cfg.optim
        lr = self.recipe.lr  # the recipe's lr, rescaled when its global batch cannot be kept (engine/recipe.py)
        if o.name == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=o.weight_decay)
        return torch.optim.SGD(params, lr=lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)

    def _lr_factor(self, step: int) -> float:
        return lr_factor(self.cfg.optim.scheduler, step, self.cfg.train.epochs, self.steps_per_epoch,
                         self.cfg.optim.warmup_iters, self.info.world_size)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, best_improved: bool = False) -> None:
        """``last.pt`` (everything resume needs, with the best-so-far record); ``best.pt`` first when the
        validation just run is the best so far (written before last.pt: a kill between the two leaves a
        best.pt newer than last.pt's record, which the resumed run overwrites when it next improves)."""
        if self.info.is_main:
            identity = dict(config_hash=config_hash(self.cfg), **model_identity(self.cfg.model, self.cfg.data.dataset))
            if best_improved:
                save_checkpoint(self.store.best_path, model=self.model.state_dict(), epoch=self.epoch,
                                global_step=self.global_step, miou=self.best["miou"], **identity)
            save_checkpoint(
                self.store.checkpoint_path, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(),
                distiller=self.distiller.state_dict() if self.distiller else {},
                epoch=self.epoch, step_in_epoch=self.step_in_epoch, global_step=self.global_step,
                best=self.best, last_eval=self.last_eval, **identity)
        barrier(self.info)

    def _restore(self, state: dict) -> None:
        missing = [k for k in RESUME_KEYS if k not in state]
        if missing:
            raise InputError(self.store.checkpoint_path, f"not a resumable harness checkpoint (lacks {missing})",
                             "resume only from the checkpoints/last.pt harness train wrote, or start a new run")
        if state.get("config_hash") != config_hash(self.cfg):
            raise InputError(self.store.checkpoint_path, "checkpoint belongs to a different config", "resume with the run's own config")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.distiller is not None:
            self.distiller.load_state_dict(state["distiller"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.best, self.last_eval = state.get("best"), state.get("last_eval")  # absent in pre-best checkpoints
        set_rng_state(state["rng"])
        if self.info.is_main:
            validated = self.last_eval is not None and self.last_eval["global_step"] == self.global_step
            self.store.truncate_log(self.global_step, validated_at_step=validated)

    # ------------------------------------------------------------------ training
    def _segmentation_terms(self, out, batch: BackboneInput) -> dict[str, torch.Tensor]:
        lc = self.cfg.loss
        terms = {}
        vt = learning_ids_to_targets(batch.voxel_labels, self.offset)
        for k, v in segmentation_loss(out.voxel_logits, vt, lc.cross_entropy, lc.lovasz).items():
            terms[f"seg.voxel_{k}"] = v
        if lc.point_loss and getattr(self.model, "has_point_head", False):
            pt = learning_ids_to_targets(batch.point_labels, self.offset)
            for k, v in segmentation_loss(out.point_logits, pt, lc.cross_entropy, lc.lovasz).items():
                terms[f"seg.point_{k}"] = v
        return terms

    def _weights(self) -> dict[str, float]:
        lc = self.cfg.loss
        w = {"seg.voxel_ce": lc.cross_entropy, "seg.voxel_lovasz": lc.lovasz,
             "seg.point_ce": lc.cross_entropy, "seg.point_lovasz": lc.lovasz}
        if self.distiller is not None:
            w.update({f"distill.{k}": float(v) for k, v in self.distiller.coefficients.items()})
        return w

    def train_step(self, batch: BackboneInput) -> dict[str, float]:
        self.ddp_model.train()
        if self.distiller is not None:
            self.distiller.train()
        with torch.autocast(self.device.type, enabled=self.amp):
            if self.student_recorder is not None:
                with self.student_recorder:
                    out = self.ddp_model(batch)
            else:
                out = self.ddp_model(batch)
            terms = self._segmentation_terms(out, batch)
            if self.distiller is not None:
                with torch.no_grad(), self.teacher_recorder:
                    # M2SKD: the teacher sees the fused scan; everyone else: the identical batch
                    self.teacher(batch.extras.get("teacher_input", batch))
                with torch.autocast(self.device.type, enabled=False):  # loss terms in float32
                    for k, v in self.distiller(self.student_recorder.values, self.teacher_recorder.values, batch).items():
                        terms[f"distill.{k}"] = v
        weights = self._weights()
        total = weighted_total(terms, weights)
        values = {k: float(v.detach()) for k, v in terms.items()}
        values["total"] = float(total.detach())
        if not math.isfinite(values["total"]):
            ckpt = self.store.checkpoint_path
            kept = (f"The last good checkpoint is kept at {ckpt}" if ckpt.is_file() else
                    f"No checkpoint exists yet ({ckpt} was never written): the run diverged before its first one")
            raise TrainingDiverged(
                f"non-finite loss at epoch {self.epoch} step {self.global_step}: {values}. "
                f"{kept}; lower optim.lr or enable optim.grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self._sync_distiller_grads()
        if self.cfg.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        values["lr"] = self.optimizer.param_groups[0]["lr"]
        return values

    def _progress_kwargs(self) -> dict:
        """Rank 0 shows progress bars (TQDM_DISABLE=1 in the environment turns them off); others never."""
        return {} if self.info.is_main else {"disable": True}

    def _sync_distiller_grads(self) -> None:
        """Average the distiller's trainable modules' (adapters, auto-encoders) gradients over ranks.

        Only the student is DDP-wrapped; without this the adapters of different ranks would drift apart.
        """
        if self.distiller is None or not self.info.distributed:
            return
        for p in self.distiller.parameters():
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                all_reduce_sum(p.grad, self.info)
                p.grad /= self.info.world_size

    def fit(self) -> dict:
        try:
            return self._fit()
        finally:
            self.store.release()  # the run lock (also dropped by the kernel if the process dies)

    def _fit(self) -> dict:
        from tqdm import tqdm

        cfg = self.cfg
        while self.epoch < cfg.train.epochs:
            skip = self.step_in_epoch * self.recipe.per_process_batch
            self.train_sampler.set_epoch(self.epoch, skip=skip)
            self.train_set.set_epoch(self.epoch)
            bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}",
                       leave=False, **self._progress_kwargs())
            for batch in self.train_loader:
                if self.step_in_epoch >= self.steps_per_epoch:
                    break
                values = self.train_step(move(batch, self.device))
                self.step_in_epoch += 1
                self.global_step += 1
                bar.update(1)
                if self.info.is_main:
                    self.store.append_log({"epoch": self.epoch, "step": self.global_step, **values})
                    if self.tensorboard is not None:
                        for key, value in values.items():
                            self.tensorboard.add_scalar(f"train/{key}", value, self.global_step)
                    if self.global_step % cfg.train.log_every == 0:
                        bar.set_postfix(loss=f"{values['total']:.4f}")
                if cfg.train.checkpoint_steps and self.global_step % cfg.train.checkpoint_steps == 0:
                    self._checkpoint()
            bar.close()
            self.epoch += 1
            self.step_in_epoch = 0
            improved = False
            if self.epoch % cfg.train.eval_every == 0 or self.epoch == cfg.train.epochs:
                improved = self._validate()
            self._checkpoint(best_improved=improved)
        return self.finish()

    def _validate(self) -> bool:
        """Validate the weights of the epoch just finished; True when they are the best so far (strictly higher
        val mIoU, as Cylinder3D's ``best_val_miou < val_miou`` and spvnas' ``MaxSaver``: ties keep the earlier)."""
        acc = self.evaluate()
        record = {"epoch": self.epoch, "global_step": self.global_step, "miou": float(acc.result()["miou"]),
                  # tensors, not numpy arrays: checkpoints are loaded with weights_only=True
                  "counts": torch.as_tensor(acc.counts),
                  "by_distance": {k: torch.as_tensor(v) for k, v in acc.by_distance.items()},
                  "num_scans": int(acc.num_scans), "num_points": int(acc.num_points)}
        self.last_eval = record
        if self.info.is_main:
            self.store.append_log({"epoch": self.epoch, "step": self.global_step, "val_miou": record["miou"]})
        if self.best is None or record["miou"] > self.best["miou"]:
            self.best = record
            return True
        return False

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> Accumulator:
        from tqdm import tqdm

        self.model.eval()

        def triples():
            for batch in tqdm(self.val_loader, desc="eval", leave=False, **self._progress_kwargs()):
                batch = move(batch, self.device)
                pred = logits_to_learning_ids(self.model(batch).point_logits, self.offset).cpu().numpy()
                gt = batch.point_labels.cpu().numpy()
                xyz = batch.point_xyz.cpu().numpy()
                owner = batch.point_batch.cpu().numpy()
                for b in range(batch.batch_size):
                    # only the target scan's own points (fused points follow them and are never scored)
                    m = np.flatnonzero(owner == b)[: batch.extras["num_original"][b]]
                    yield xyz[m], gt[m], pred[m]

        return accumulate(triples(), self.dataset).all_reduce()

    def _accumulator(self, record: dict) -> Accumulator:
        acc = Accumulator(self.label_map, self.dataset.convention)
        acc.counts = np.asarray(record["counts"]).copy()
        acc.by_distance = {k: np.asarray(v).copy() for k, v in record["by_distance"].items()}
        acc.num_scans, acc.num_points = record["num_scans"], record["num_points"]
        return acc

    def finish(self) -> dict:
        """Write metrics.json: the top level scores ``eval.checkpoint`` (best or last), ``checkpoints`` holds both."""
        if self.last_eval is None or self.last_eval["global_step"] != self.global_step:
            self._validate()  # a run resumed from a pre-best checkpoint, or with no epoch left to train
            self._checkpoint(best_improved=self.best is self.last_eval)
        chosen = self.best if self.cfg.eval.checkpoint == "best" else self.last_eval
        acc = self._accumulator(chosen)
        metrics = acc.result()
        if not self.info.is_main:
            return metrics
        summary = {name: {"epoch": r["epoch"], "global_step": r["global_step"], "miou": r["miou"],
                          "path": str(path.relative_to(self.store.path))}
                   for name, r, path in (("best", self.best, self.store.best_path),
                                         ("last", self.last_eval, self.store.checkpoint_path))}
        from harness.profiling.model import count_macs

        from harness.engine.data import collate

        # MACs of one scan (the PVKD supplement reports per-scan MACs)
        first = move(collate([self.val_set[0]]), self.device) if len(self.val_set) else None
        macs = count_macs(self.model, first)["total"] if first is not None else None
        metrics.pop("schema_version", None)
        metrics.update({
            "config_hash": config_hash(self.cfg), "run": self.cfg.name, "seed": self.cfg.train.seed,
            "profile": self.cfg.profile, "backbone": self.cfg.model.backbone, "width": self.cfg.model.width,
            "method": self.cfg.distill.method, "teacher_run": self.teacher_dir,
            "coefficients": dict(self.distiller.coefficients) if self.distiller else {},
            "coefficient_overrides": list(self.distiller.coefficient_overrides) if self.distiller else [],
            "params": int(sum(p.numel() for p in self.model.parameters())),
            "macs_per_scan": macs, "sparse_backend": describe_backend(self.model, self.device),
            "legacy_spconv1_keys": getattr(self.model, "legacy_spconv1_keys", None),
            "epochs": self.cfg.train.epochs, "global_steps": self.global_step, "eval_level": "point",
            "distance_bins": self.cfg.eval.distance_bins,  # the per-distance mode the tables and figures show
            "scored_checkpoint": self.cfg.eval.checkpoint, "checkpoints": summary, "recipe": self.recipe.as_dict(),
            "point_refinement": getattr(self.model, "has_point_refinement", None),
        })
        self.store.write_confusion(acc.counts, acc.by_distance)
        self.store.write_metrics(metrics)
        return metrics
