"""KA: knowledge adaptation (auto-encoder latent of the teacher) plus affinity distillation.

Paper: He, Shen, Tian, Gong, Sun, Yan, "Knowledge Adaptation for Efficient Semantic Segmentation", CVPR 2019
(arXiv 1903.04688); no official code, closest reference torchdistill's KTAAD. PVD coefficients (PVKD
supplement Table 4): ``adaptation`` = lambda_ada (replaces the paper's beta = 50), ``affinity`` = lambda_aff
(replaces gamma = 1). phi_t (R, C_t) / phi_s (R, C_s): teacher / student penultimate features of the R sites::

    stage 1 (KA.pretrain, frozen teacher): E = 3 x (conv, BN, LeakyReLU) C_t -> C_t -> k C_t -> k C_t, D mirrors it
        L_ae = mean_{i,c} (phi_t - D(E(phi_t)))_ic^2 + alpha * sum_{i,c'} |E(phi_t)_ic'| / (R * C_t)
    stage 2 (KA.forward; E frozen):  z = E(phi_t), u = C_f(phi_s), v = C_a(phi_s)      each (R, k C_t)
        d_i = || z_i / ||z_i||_2 - u_i / ||u_i||_2 ||_p                                 (p = 1)
        L_adaptation = mean_b (1/|S_b|) sum_{i in S_b} d_i                              (KA eq. 3)
        A_jl = cos(n_j, n_l) / M_b  on the M_b <= max_nodes nodes of scan b (teacher from z, student from v)
        L_affinity = mean_b (1/M_b) sum_j || A^S_j - A^T_j ||_2

C_f = conv + BN + ReLU, C_a = conv with bias, trained with the student. Readings: the auto-encoder, adapters and
sparsity normalisation [docs/readings.md#ka-autoencoder]; per-site normalisation and the graph
[docs/readings.md#ka-affinity-graph]; the term's scale (``adaptation_reduction``)
[docs/readings.md#ka-adaptation-scale]; nodes and level [docs/readings.md#baselines-nodes, #baselines-levels].
L_adaptation is not 0 at phi_s = phi_t (different modules on each side), only when every adapted student
direction equals the latent direction. Computed in float32; teacher features detached, E without gradient.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from baselines.nodes import (DEFAULT_MAX_NODES, Level, Sites, build_nodes, check_level,
                             default_cell_size, gather_sites)
from harness.backbones.base import BackboneInput
from harness.backbones.base import backbone_family
from harness.distill.base import DistillContext, Distiller
from harness.distill.losses import cosine_affinity, per_scan_mean
from harness.distill.recorder import TapRecorder, TapValue
from harness.sparse import SparseTensor, SubMConv3d

AffinityKind = Literal["row_l2", "mse"]
KERNEL_MAP_KEY = "ka_subm"


class SiteConv(nn.Module):
    """A stride-1 conv over a batch's sites: ``SubMConv3d(k)`` on the voxel grid, or Linear for k = 1.

    ``forward(feats (R, C_in), grid)`` -> (R, C_out); ``grid`` is the batch's :class:`SparseTensor`
    (needed for k > 1, ignored for k = 1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        if self.kernel_size == 1:
            self.op: nn.Module = nn.Linear(in_channels, out_channels, bias=bias)
        else:
            self.op = SubMConv3d(in_channels, out_channels, self.kernel_size,
                                 indice_key=f"{KERNEL_MAP_KEY}{self.kernel_size}", bias=bias)

    def forward(self, feats: torch.Tensor, grid: SparseTensor | None) -> torch.Tensor:
        if self.kernel_size == 1:
            return self.op(feats)
        if grid is None:
            raise ValueError("a SubMConv3d site conv needs the batch's voxel grid")
        return self.op(grid.replace_feature(feats)).feats


class SiteBlock(nn.Module):
    """``SiteConv -> BatchNorm1d -> activation`` (the activation may be absent)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: nn.Module | None,
                 norm: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.conv = SiteConv(in_channels, out_channels, kernel_size, bias)
        self.norm = nn.BatchNorm1d(out_channels) if norm else nn.Identity()
        self.act = activation if activation is not None else nn.Identity()

    def forward(self, feats: torch.Tensor, grid: SparseTensor | None) -> torch.Tensor:
        return self.act(self.norm(self.conv(feats, grid)))


class SiteAutoEncoder(nn.Module):
    """The paraphraser (torchdistill ``Paraphraser4FactorTransfer``) on sparse sites.

    Encoder C -> C -> L -> L, decoder L -> L -> C -> C, every layer conv + BN + LeakyReLU(0.1)
    (the convs are bias-free: a bias before BN is redundant).
    """

    def __init__(self, channels: int, latent: int, kernel_size: int) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> SiteBlock:
            return SiteBlock(c_in, c_out, kernel_size, nn.LeakyReLU(0.1))

        self.encoder = nn.ModuleList([block(channels, channels), block(channels, latent), block(latent, latent)])
        self.decoder = nn.ModuleList([block(latent, latent), block(latent, channels), block(channels, channels)])

    def encode(self, feats: torch.Tensor, grid: SparseTensor | None) -> torch.Tensor:
        for layer in self.encoder:
            feats = layer(feats, grid)
        return feats

    def decode(self, latent: torch.Tensor, grid: SparseTensor | None) -> torch.Tensor:
        for layer in self.decoder:
            latent = layer(latent, grid)
        return latent


def adaptation_distance(adapted: torch.Tensor, latent: torch.Tensor, p: float = 1.0, eps: float = 1e-8) -> torch.Tensor:
    """Per site ``|| z_i/||z_i||_2 - u_i/||u_i||_2 ||_p``: (R, L) adapted student u, latent z -> (R,)."""
    if adapted.shape != latent.shape:
        raise ValueError(f"adapted student {tuple(adapted.shape)} and latent {tuple(latent.shape)} must match")
    u = F.normalize(adapted.float(), dim=1, eps=eps)
    z = F.normalize(latent.detach().float(), dim=1, eps=eps)
    return torch.linalg.vector_norm(u - z, ord=p, dim=1)


ADAPTATION_REDUCTIONS = ("norm", "channel_mean")


def adaptation_loss(adapted: torch.Tensor, latent: torch.Tensor, scan: torch.Tensor, num_scans: int,
                    p: float = 1.0, reduction: str = "norm") -> torch.Tensor:
    r"""``L_adaptation`` (KA eq. 3): :func:`adaptation_distance` averaged over each scan's sites, then over scans.

    .. math:: L = \frac{1}{B'}\sum_b \frac{1}{|S_b|}\sum_{i\in S_b} \frac{1}{\kappa}
              \Big\lVert \frac{z_i}{\lVert z_i\rVert_2} - \frac{u_i}{\lVert u_i\rVert_2}\Big\rVert_p

    with :math:`\kappa = 1` (``reduction="norm"``, eq. 3's per-site norm) or :math:`\kappa = L^{1/p}`
    (``"channel_mean"``, L latent channels). Shapes: adapted, latent (R, L); scan (R,).
    """
    if reduction not in ADAPTATION_REDUCTIONS:
        raise ValueError(f"adaptation_reduction must be one of {list(ADAPTATION_REDUCTIONS)}, got {reduction!r}")
    distance = adaptation_distance(adapted, latent, p)
    if reduction == "channel_mean":
        distance = distance / float(latent.shape[1]) ** (1.0 / p)
    return per_scan_mean(distance, scan, num_scans)


def affinity_loss(student_nodes: Sequence[torch.Tensor], teacher_nodes: Sequence[torch.Tensor],
                  kind: AffinityKind = "row_l2") -> torch.Tensor:
    """KA's affinity term over per-scan node blocks [(M_b, L)] (module docstring); mean over scans."""
    per_scan = []
    for n_s, n_t in zip(student_nodes, teacher_nodes, strict=True):
        a_s, a_t = cosine_affinity(n_s.float())[0], cosine_affinity(n_t.detach().float())[0]
        if kind == "row_l2":
            m = n_s.shape[0]
            per_scan.append(torch.linalg.vector_norm((a_s - a_t) / m, dim=1).mean())
        elif kind == "mse":
            per_scan.append(((a_s - a_t) ** 2).mean())
        else:
            raise ValueError(f"affinity kind must be 'row_l2' or 'mse', got {kind!r}")
    if not per_scan:
        raise ValueError("affinity_loss needs at least one scan with nodes")
    return torch.stack(per_scan).mean()


def _as_batch(item: Any) -> BackboneInput:
    if isinstance(item, BackboneInput):
        return item
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], BackboneInput):
        return item[0]
    if isinstance(item, Mapping) and isinstance(item.get("batch"), BackboneInput):
        return item["batch"]
    raise TypeError(f"KA.pretrain expects loader items that are BackboneInput (or (BackboneInput, ...)), "
                    f"got {type(item).__name__}")


class KA(Distiller):
    """Knowledge adaptation + affinity distillation (module docstring). Terms: ``adaptation``, ``affinity``.

    Args:
        context: needs the ``{level}_features`` widths in ``student_channels`` / ``teacher_channels``.
        coefficients: overrides of Table 4's values.
        level: ``"voxel"`` (default) or ``"point"``.
        kernel_size: conv kernel of the auto-encoder and adapters; default 3 (SubMConv3d) on voxel
            sites, 1 (Linear) on SPVCNN and at point level.
        latent_ratio: k, latent width ``int(k * C_t)`` (default 0.5).
        p: norm of the adaptation distance (default 1).
        affinity: ``"row_l2"`` (default) or ``"mse"``.
        sparsity: alpha of the stage-1 L1 term (default 1e-7).
        adaptation_reduction: ``"norm"`` (default, KA eq. 3's per-site L_p norm) or ``"channel_mean"``
            (divided by L^(1/p), L the latent width).
        cell_size, max_nodes, generator: node sets of the affinity graphs (as :class:`baselines.skd.SKD`).

    Submodules: ``autoencoder`` (stage 1, then frozen), ``feature_adapter`` (C_f), ``affinity_adapter``
    (C_a). The buffer ``autoencoder_fitted`` records (in checkpoints too) that stage 1 ran.
    """

    method: ClassVar[str] = "ka"
    terms: ClassVar[tuple[str, ...]] = ("adaptation", "affinity")

    def __init__(self, context: DistillContext, coefficients: Mapping[str, float] | None = None, *,
                 level: Level = "voxel", kernel_size: int | None = None, latent_ratio: float = 0.5,
                 p: float = 1.0, affinity: AffinityKind = "row_l2", sparsity: float = 1e-7,
                 adaptation_reduction: str = "norm",
                 cell_size: Sequence[int] | None = None, max_nodes: int = DEFAULT_MAX_NODES,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(context, coefficients)
        self.level = check_level(level)
        self.feature_tap = f"{level}_features"
        self.student_taps = self.teacher_taps = (self.feature_tap,)
        if kernel_size is None:
            point_wise = level == "point" or backbone_family(context.backbone) == "SPVNAS"
            kernel_size = 1 if point_wise else 3
        if level == "point" and kernel_size != 1:
            raise ValueError("KA at point level needs kernel_size=1 (points are not unique grid sites)")
        if adaptation_reduction not in ADAPTATION_REDUCTIONS:
            raise ValueError(f"adaptation_reduction must be one of {list(ADAPTATION_REDUCTIONS)}, "
                             f"got {adaptation_reduction!r}")
        self.adaptation_reduction = adaptation_reduction
        if affinity not in ("row_l2", "mse"):
            raise ValueError(f"affinity must be 'row_l2' or 'mse', got {affinity!r}")
        c_s, c_t = context.tap_widths(self.feature_tap, "KA")
        latent = max(1, int(c_t * latent_ratio))
        self.kernel_size, self.latent_channels = int(kernel_size), latent
        self.p, self.affinity_kind, self.sparsity = float(p), affinity, float(sparsity)
        cell = cell_size if cell_size is not None else default_cell_size(context.backbone)
        self.cell_size = tuple(int(s) for s in cell)
        self.max_nodes = int(max_nodes)
        self.generator = generator
        self.autoencoder = SiteAutoEncoder(c_t, latent, self.kernel_size)
        self.feature_adapter = SiteBlock(c_s, latent, self.kernel_size, nn.ReLU())
        self.affinity_adapter = SiteBlock(c_s, latent, self.kernel_size, None, norm=False, bias=True)
        self.register_buffer("autoencoder_fitted", torch.zeros((), dtype=torch.bool))

    # ----------------------------------------------------------------------------------------- stage 1
    def grid(self, batch: BackboneInput, feats: torch.Tensor) -> SparseTensor | None:
        """The batch's voxel grid for the SubMConv3d layers (None with kernel 1)."""
        if self.kernel_size == 1:
            return None
        coords = batch.voxel_coords.to(feats.device)
        return SparseTensor.from_coords(feats, coords, batch.spatial_shape, batch.batch_size)

    def autoencoder_loss(self, teacher_feats: torch.Tensor, grid: SparseTensor | None) -> torch.Tensor:
        """Stage-1 loss ``L_ae`` on (R, C_t) teacher features (module docstring)."""
        target = teacher_feats.detach().float()
        latent = self.autoencoder.encode(target, grid)
        recon = self.autoencoder.decode(latent, grid)
        return F.mse_loss(recon, target) + self.sparsity * latent.abs().sum() / target.numel()

    def autoencoder_step(self, teacher_feats: torch.Tensor, batch: BackboneInput,
                         optimizer: torch.optim.Optimizer) -> float:
        """One stage-1 step on the ``{level}_features`` rows of a batch's teacher; returns ``L_ae``."""
        self.autoencoder.train()
        sites = gather_sites(self.level, batch, teacher_feats.shape[0], teacher_feats.device)
        feats = sites.take(teacher_feats).detach().float()
        loss = self.autoencoder_loss(feats, self.grid(batch, feats))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def autoencoder_optimizer(self, lr: float = 0.1, momentum: float = 0.9,
                              weight_decay: float = 1e-4) -> torch.optim.Optimizer:
        """torchdistill's stage-1 optimizer: SGD lr 0.1, momentum 0.9, weight decay 1e-4."""
        return torch.optim.SGD(self.autoencoder.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    def freeze_autoencoder(self) -> None:
        """End of stage 1: E and D get no gradient and keep BN in eval mode from now on."""
        self.autoencoder.requires_grad_(False)
        self.autoencoder.eval()
        self.autoencoder_fitted.fill_(True)

    def pretrain(self, teacher: nn.Module, loader: Iterable[Any], *, epochs: int = 1, lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 1e-4, max_steps: int | None = None) -> list[float]:
        """Stage 1: fit the auto-encoder to the frozen teacher's features, then freeze it.

        Args:
            teacher: the teacher backbone (run in eval mode without gradient; its tap
                ``{level}_features`` is recorded with a forward hook).
            loader: iterable of ``BackboneInput`` (or tuples / dicts holding one under ``"batch"``),
                with the training augmentation.
            epochs: passes over ``loader`` (default 1, as torchdistill); ``max_steps`` caps the steps.

        Returns:
            ``L_ae`` of every step.

        Under ``torch.distributed`` every rank fits on its own part of the data and rank 0's
        auto-encoder is then broadcast, so all ranks distil towards the same latent.
        """
        device = next(teacher.parameters()).device
        self.autoencoder.to(device)
        self.autoencoder.requires_grad_(True)
        optimizer = self.autoencoder_optimizer(lr, momentum, weight_decay)
        was_training = teacher.training
        teacher.eval()
        recorder = TapRecorder(teacher, [self.feature_tap])
        losses: list[float] = []
        try:
            for _ in range(epochs):
                for item in loader:
                    if max_steps is not None and len(losses) >= max_steps:
                        break
                    batch = _as_batch(item).to(device)
                    with torch.no_grad(), recorder:
                        teacher(batch)
                    losses.append(self.autoencoder_step(recorder.values[self.feature_tap].feats, batch, optimizer))
        finally:
            recorder.remove()
            teacher.train(was_training)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank fitted on its own shard: keep rank 0's auto-encoder everywhere
            for tensor in [*self.autoencoder.parameters(), *self.autoencoder.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)
        self.freeze_autoencoder()
        return losses

    def train(self, mode: bool = True) -> "KA":
        super().train(mode)
        if bool(self.autoencoder_fitted):
            # frozen E keeps its BN statistics during stage 2 (also after a checkpoint load, which
            # restores the buffer but not requires_grad)
            self.autoencoder.eval().requires_grad_(False)
        return self

    # ----------------------------------------------------------------------------------------- stage 2
    def compute(self, student: Mapping[str, TapValue], teacher: Mapping[str, TapValue],
                batch: BackboneInput) -> dict[str, torch.Tensor]:
        if not bool(self.autoencoder_fitted):
            raise RuntimeError("KA's auto-encoder is not fitted: run KA.pretrain(teacher, loader) first "
                               "(or load a checkpoint that holds it)")
        f_s_all = student[self.feature_tap].feats
        sites = gather_sites(self.level, batch, f_s_all.shape[0], f_s_all.device)
        f_s = sites.take(f_s_all).float()
        f_t = sites.take(teacher[self.feature_tap].feats).detach().float()
        grid = self.grid(batch, f_s)
        with torch.no_grad():
            latent = self.autoencoder.encode(f_t, grid)
        adaptation = adaptation_loss(self.feature_adapter(f_s, grid), latent, sites.scan, sites.num_scans, self.p,
                                     self.adaptation_reduction)
        return {"adaptation": adaptation, "affinity": self._affinity(self.affinity_adapter(f_s, grid), latent, sites)}

    def _affinity(self, student_latent: torch.Tensor, teacher_latent: torch.Tensor, sites: Sites) -> torch.Tensor:
        nodes = build_nodes(sites, self.cell_size, self.max_nodes, self.generator)
        if nodes.num_nodes == 0:
            return student_latent.sum() * 0.0
        return affinity_loss(nodes.split(nodes.pool(student_latent.float())),
                             nodes.split(nodes.pool(teacher_latent.float())), self.affinity_kind)

    def extra_repr(self) -> str:
        return (f"level={self.level!r}, kernel_size={self.kernel_size}, latent={self.latent_channels}, p={self.p}, "
                f"adaptation_reduction={self.adaptation_reduction!r}, "
                f"affinity={self.affinity_kind!r}, cell_size={self.cell_size}, max_nodes={self.max_nodes}")
