"""The configuration schema: plain dataclasses are the single source of truth.

Experiment YAML files hold only differences from these defaults (plus an optional ``base:`` file
they extend); command-line overrides are dotted paths (``train.epochs=2``). Everything is validated
against these classes when the config is built (:mod:`harness.config.load`), and the fully resolved
config is written into every run.

Batch and learning rate. A recipe states its original **global** batch (``train.global_batch_size``)
and the learning rate written for it (Cylinder3D: 1 GPU x 2 scans, Adam 1e-3; spvnas: 8 GPUs x 2 scans,
SGD 0.24). The per-process batch is derived from the number of processes
(:func:`harness.engine.recipe.resolve_recipe`); where the global batch cannot be kept (Cylinder3D's 2 on
8 GPUs: at least one scan per GPU) the learning rate follows ``train.lr_scaling`` and the schedule keeps
its length in epochs. Without ``global_batch_size`` (``null``) ``train.batch_size`` is per process and
nothing is rescaled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataConfig:
    dataset: str = "semantickitti"          # registry name: semantickitti | nuscenes
    root: str = "${SEMANTICKITTI_ROOT}"     # dataset root; ${VAR} is read from the environment
    train_sequences: list[int] | None = None  # None: the official train split
    val_sequences: list[int] | None = None    # None: the official val split (08)
    version: str = "v1.0-trainval"          # nuScenes table version
    max_points: int | None = None           # demo profile: keep the nearest max_points points per scan
    max_scans: int | None = None            # demo profile: use the first max_scans scans of the split
    augment: bool = True                    # the backbone's original training augmentations
    num_workers: int = 0                    # DataLoader worker processes per rank (Cylinder3D 4, spvnas 8)
    pin_memory: bool = True                 # page-locked batches for faster host->GPU copies (CUDA only)
    label_map: str = "official"             # official (semantic-kitti-api) | spvnas (ignores bus, on-rails, lane-marking)
    # M2SKD hard-class instance fusion (harness/data/fusion.py): add the hard-class instances of the
    # previous fusion_frames scans of the sequence (0 = off). fusion_target "model": the trained network
    # sees fused scans (the M2SKD teacher); "teacher": only the frozen teacher's input is fused.
    # Metrics are always computed on the target scan's own points.
    fusion_frames: int = 0
    fusion_align: str = "pose"              # pose | centroid (the authors' centroid-alignment variant)
    fusion_target: str = "model"            # model | teacher


@dataclass
class ModelConfig:
    backbone: str = "cylinder3d"            # cylinder3d | minkunet | spvcnn
    width: float = 1.0                      # 1.0 teacher, 0.5 student (50% of every layer's channels)
    sparse_backend: str = "auto"            # auto | torchref | spconv | minkowski (auto: spconv on CUDA, else torchref)
    legacy_spconv1_keys: bool = True        # Cylinder3D: emulate spconv 1.2.1 kernel-map sharing
    init_checkpoint: str | None = None      # initialise from a checkpoint (student init / fine-tuning)
    num_input_features: int | None = None   # Cylinder3D F (point-feature compression width); None: 16
    point_refinement: bool = True           # Cylinder3D point head; false: points scored by their voxel's logits


@dataclass
class OptimConfig:
    name: str = "adam"                      # adam (Cylinder3D) | sgd (spvnas)
    lr: float = 1e-3
    momentum: float = 0.9                   # sgd only
    nesterov: bool = True                   # sgd only
    weight_decay: float = 0.0
    scheduler: str = "constant"             # constant (Cylinder3D) | cosine_warmup (spvnas)
    warmup_iters: int = 0                   # cosine_warmup: warm-up iterations // world size (none on 1 process; spvnas 1000)
    grad_clip: float | None = None          # max global grad norm; None disables clipping


@dataclass
class LossConfig:
    cross_entropy: float = 1.0              # weight of CE (ignore label 0)
    lovasz: float = 1.0                     # weight of Lovasz-softmax (ignore 0); 0 for the spvnas recipe
    point_loss: bool = True                 # also supervise point logits (Cylinder3D point refinement head)


@dataclass
class TrainConfig:
    epochs: int = 40
    global_batch_size: int | None = None    # the recipe's global batch; per-process batch derived from the world size
    batch_size: int = 2                     # scans per process, used only when global_batch_size is null
    lr_scaling: str = "linear"              # when the global batch cannot be kept: linear | sqrt | none (lr x ratio)
    max_steps_per_epoch: int | None = None  # demo profile: cap steps per epoch
    amp: bool = False                       # mixed precision (GPU only; ignored on CPU)
    seed: int = 0
    deterministic: bool = True              # torch.use_deterministic_algorithms where possible
    log_every: int = 10                     # steps between progress-bar / log updates
    eval_every: int = 1                     # epochs between validations (final epoch always); best.pt kept
    checkpoint_steps: int | None = None     # also checkpoint every N optimizer steps (None: at epoch ends only)
    tensorboard: bool = False


@dataclass
class DistillConfig:
    method: str | None = None               # None: plain supervised run; pvd | kd | cd | ifv | skd | ka
    teacher_run: str | None = None          # run directory of the trained teacher (its config + checkpoint)
    teacher_checkpoint: str | None = None   # or an explicit checkpoint file ...
    teacher_config: str | None = None       # ... with the teacher's config
    coefficients: dict[str, float] = field(default_factory=dict)  # overrides of Table 4 (visible in metrics)
    options: dict[str, Any] = field(default_factory=dict)         # method options (e.g. PVD's K, N_p)


@dataclass
class EvalConfig:
    tta: bool = False                       # harness predict: 4-flip test-time augmentation (authors' test script)
    distance_bins: str = "harness"          # harness | official: the per-distance bins the tables and figures show
    checkpoint: str = "best"                # which checkpoint the tables score: best (the originals) | last


@dataclass
class RunConfig:
    name: str = "run"                       # run name inside results/runs/<dataset>/<backbone>/
    output_root: str = "results/runs"
    profile: str = "paper"                  # paper | demo (demo runs are never compared with the paper)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
