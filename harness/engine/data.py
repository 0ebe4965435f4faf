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
from harness.voxelize import voxelize_for_backbone


def build_reader(cfg: RunConfig, split: str):
    """The dataset reader for ``split`` ('train' | 'val')."""
    root = expand_env(cfg.data.root)
    if cfg.data.dataset == "semantickitti":
        from harness.data.semantickitti import SemanticKITTI

        sequences = cfg.data.train_sequences if split == "train" else cfg.data.val_sequences
        return SemanticKITTI(root, split=None if sequences else split, sequences=sequences)
    from harness.data.nuscenes import NuScenesLidarSeg

    return NuScenesLidarSeg(root, cfg.data.version, split)


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

    def __len__(self) -> int:
        return self.count

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load_points(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        scan = self.reader[index]
        points, labels = scan.points[:, :4], scan.labels
        if self.max_points is not None and points.shape[0] > self.max_points:
            # demo profile: keep the nearest points (a dense, representative crop), in scan order
            keep = np.sort(np.argsort(np.linalg.norm(points[:, :3], axis=1), kind="stable")[: self.max_points])
            points = points[keep]
            labels = labels[keep] if labels is not None else None
        return np.ascontiguousarray(points, dtype=np.float32), labels

    def __getitem__(self, index: int):
        points, labels = self.load_points(index)
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment else None
        return voxelize_for_backbone(self.backbone, points, labels, rng, self.dataset), labels, index


def collate(items: Sequence) -> BackboneInput:
    batch = collate_scans([v for v, _, _ in items], [l for _, l, _ in items])
    batch.extras["scan_index"] = [i for _, _, i in items]
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


def build_loader(cfg: RunConfig, split: str, info: DistInfo) -> tuple[VoxelScanDataset, Sampler, DataLoader]:
    dataset = VoxelScanDataset(cfg, split)
    sampler: Sampler = (ResumableSampler(dataset, info, shuffle=True, seed=cfg.train.seed) if split == "train"
                        else EvalShardSampler(dataset, info))
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=cfg.data.num_workers, drop_last=False)
    return dataset, sampler, loader


def move(batch: BackboneInput, device: torch.device) -> BackboneInput:
    extras = batch.extras
    moved = batch.to(device)
    moved.extras = extras
    return moved
