"""Datasets and loaders that turn dataset readers into voxelised, collated training batches.

Augmentation randomness is derived from ``(seed, epoch, scan index)`` rather than from a running
generator, so a batch is a pure function of its position in the schedule: resuming mid-epoch
re-creates exactly the batches the interrupted run would have seen, on any number of workers.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from harness.backbones.base import BackboneInput, collate_scans
from harness.config.load import expand_env
from harness.config.schema import RunConfig
from harness.engine.dist import DistInfo
from harness.errors import InputError
from harness.backbones.base import voxelize_for_backbone


SPLITS = ("train", "val", "test")
LABEL_FREE_SPLITS = ("test",)
# data.label_map -> SemanticKITTI label map (harness/data/labelmap.py): the semantic-kitti-api mapping, or spvnas'
LABEL_MAPS = {"official": "semantickitti", "spvnas": "semantickitti-spvnas"}  # SemanticKITTI 11-21 and nuScenes v1.0-test publish no labels


def build_reader(cfg: RunConfig, split: str):
    """The dataset reader for ``split`` ('train' | 'val' | 'test'). ``data.train_sequences`` / ``val_sequences``
    replace the official train / val sequences; ``test`` is always the official test split (no labels)."""
    if split not in SPLITS:
        raise InputError("--split", f"{split!r} is not a split", f"use one of {', '.join(SPLITS)}")
    root = expand_env(cfg.data.root)
    if cfg.data.dataset == "semantickitti":
        from harness.data.semantickitti import SemanticKITTI

        sequences = {"train": cfg.data.train_sequences, "val": cfg.data.val_sequences}.get(split)
        # labelled splits need every label file (a missing labels/ folder is a named error, not a None label)
        return SemanticKITTI(root, split=None if sequences else split, sequences=sequences,
                             label_map=LABEL_MAPS[cfg.data.label_map],
                             require_labels=split not in LABEL_FREE_SPLITS)
    from harness.data.nuscenes import NuScenesLidarSeg

    return NuScenesLidarSeg(root, cfg.data.version, split)


def nearest_points(points: np.ndarray, labels: np.ndarray | None, max_points: int) -> np.ndarray:
    """Indices (sorted, scan order) of the ``max_points`` points nearest the sensor (3-D range), labelled points
    ranked before ignored ones (label 0). points: (N, >=3) metres; labels: (N,) learning ids or None."""
    rank_key = np.linalg.norm(points[:, :3], axis=1)
    if labels is not None:
        rank_key = rank_key.copy()
        rank_key[labels == 0] += 1e6  # ignored points only after every labelled one
    return np.sort(np.argsort(rank_key, kind="stable")[:max_points])


class VoxelScanDataset(Dataset):
    """Item ``i``: (VoxelizedScan, point labels, points) of scan ``i``, augmented in training."""

    def __init__(self, cfg: RunConfig, split: str) -> None:
        self.reader = build_reader(cfg, split)
        self.backbone = cfg.model.backbone
        self.dataset = cfg.data.dataset
        self.train = split == "train"
        self.augment = cfg.data.augment and self.train
        self.max_points = cfg.data.max_points
        self.count = len(self.reader) if cfg.data.max_scans is None else min(len(self.reader), cfg.data.max_scans)
        self.seed = cfg.train.seed
        self.epoch = 0
        self.fusion_frames = cfg.data.fusion_frames
        self.fusion_align = cfg.data.fusion_align
        self.fusion_target = cfg.data.fusion_target
        if self.fusion_frames and cfg.data.dataset != "semantickitti":
            raise InputError("data.fusion_frames", "instance fusion needs SemanticKITTI sequences with poses",
                             "set data.fusion_frames=0 for nuScenes")

    def __len__(self) -> int:
        return self.count

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _crop(self, points: np.ndarray, labels: np.ndarray | None, num_original: int,
              instance: np.ndarray | None = None):
        """Demo profile: keep the nearest ``max_points`` target points (in scan order) and the fused
        points within the same radius; returns (points, labels, new num_original, instance).

        Labelled points are ranked first: nuScenes' ~20 % ego-vehicle returns within 3 m are ignored
        (label 0), and a pure nearest-point crop would keep little else."""
        if self.max_points is None or num_original <= self.max_points:
            return points, labels, num_original, instance
        rng = np.linalg.norm(points[:, :3], axis=1)
        keep = nearest_points(points[:num_original], labels[:num_original] if labels is not None else None,
                              self.max_points)
        radius = rng[keep].max()
        extra = num_original + np.flatnonzero(rng[num_original:] <= radius)
        keep = np.concatenate([keep, extra])
        return (points[keep], (labels[keep] if labels is not None else None), self.max_points,
                (instance[keep] if instance is not None else None))

    def load_points(self, index: int, fused: bool = False
                    ) -> tuple[np.ndarray, np.ndarray | None, int, np.ndarray | None]:
        """(points (N', 4), labels, num_original, instance ids or None): the target scan, plus fused
        instances when asked."""
        if fused:
            from harness.data.fusion import fuse_hard_instances

            f = fuse_hard_instances(self.reader, index, num_past=self.fusion_frames, align=self.fusion_align)
            points, labels, n, instance = f.points[:, :4], f.labels, f.num_original, f.instance
        else:
            scan = self.reader[index]
            points, labels, n = scan.points[:, :4], scan.labels, scan.points.shape[0]
            instance = getattr(scan, "instance", None)
        points, labels, n, instance = self._crop(points, labels, n, instance)
        return np.ascontiguousarray(points, dtype=np.float32), labels, n, instance

    def _voxelize(self, points: np.ndarray, labels: np.ndarray | None, index: int):
        # the same derived seed for every view of a scan: identical augmentation of shared points
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment else None
        return voxelize_for_backbone(self.backbone, points, labels, rng, self.dataset)

    def __getitem__(self, index: int):
        model_fused = self.fusion_frames > 0 and self.fusion_target == "model"
        points, labels, n, instance = self.load_points(index, fused=model_fused)
        item = {"scan": self._voxelize(points, labels, index), "labels": labels, "index": index, "num_original": n,
                "instance": instance}
        if self.fusion_frames > 0 and self.fusion_target == "teacher" and self.train:
            t_points, t_labels, _, _ = self.load_points(index, fused=True)
            item["teacher_scan"] = self._voxelize(t_points, t_labels, index)
            item["teacher_labels"] = t_labels
        return item


def collate(items: Sequence[dict]) -> BackboneInput:
    batch = collate_scans([it["scan"] for it in items], [it["labels"] for it in items])
    batch.extras["scan_index"] = [it["index"] for it in items]
    batch.extras["num_original"] = [it["num_original"] for it in items]
    if all(it.get("instance") is not None for it in items):  # M2SKD instance-aware affinity
        batch.extras["point_instance"] = torch.from_numpy(np.concatenate([it["instance"] for it in items]).astype(np.int64))
    if "teacher_scan" in items[0]:
        batch.extras["teacher_input"] = collate_scans([it["teacher_scan"] for it in items],
                                                      [it["teacher_labels"] for it in items])
    return batch


class ResumableSampler(Sampler[int]):
    """DistributedSampler (also for one process) that can skip the first ``skip`` indices of an epoch."""

    def __init__(self, dataset: Dataset, info: DistInfo, shuffle: bool, seed: int) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle,
                                        seed=seed, drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip:])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


class EvalShardSampler(Sampler[int]):
    """Rank ``r`` of ``w`` evaluates scans ``r, r + w, ...``: no padding, so summed confusion counts
    cover every scan exactly once (DistributedSampler pads by repeating scans)."""

    def __init__(self, dataset: Dataset, info: DistInfo) -> None:
        self.indices = list(range(info.rank, len(dataset), info.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def seed_worker(worker_id: int) -> None:
    """Seed a loader worker's global generators from torch's per-worker seed (base seed + worker id).

    The batches themselves never read a global generator (augmentation draws from ``(seed, epoch, index)``),
    so they are identical with any number of workers; this only keeps code that does use ``random`` /
    ``np.random`` inside a worker reproducible (numpy would otherwise copy the parent's state into every worker).
    """
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(cfg: RunConfig, split: str, info: DistInfo, batch_size: int | None = None,
                 pin_memory: bool = False) -> tuple[VoxelScanDataset, Sampler, DataLoader]:
    """Dataset, sampler and loader of ``split``.

    Args:
        batch_size: scans per process (the trainer passes the recipe's per-process batch,
            :func:`harness.engine.recipe.resolve_recipe`); None: ``train.batch_size``.
        pin_memory: page-locked host batches (the trainer sets it on CUDA when ``data.pin_memory``).
    """
    dataset = VoxelScanDataset(cfg, split)
    sampler: Sampler = (ResumableSampler(dataset, info, shuffle=True, seed=cfg.train.seed) if split == "train"
                        else EvalShardSampler(dataset, info))
    workers = cfg.data.num_workers
    generator = torch.Generator().manual_seed(cfg.train.seed + info.rank)  # the workers' base seeds
    loader = DataLoader(dataset, batch_size=batch_size or cfg.train.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=workers, drop_last=False, pin_memory=pin_memory,
                        worker_init_fn=seed_worker if workers else None, generator=generator,
                        persistent_workers=False)
    return dataset, sampler, loader


def move(batch: BackboneInput, device: torch.device) -> BackboneInput:
    extras = dict(batch.extras)
    moved = batch.to(device)
    if "teacher_input" in extras:
        extras["teacher_input"] = move(extras["teacher_input"], device)
    if "point_instance" in extras:
        extras["point_instance"] = extras["point_instance"].to(device)
    moved.extras = extras
    return moved
