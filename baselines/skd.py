"""SKD: structured knowledge distillation, pixel-wise and pair-wise terms.

Paper: Liu, Chen, Liu, Qin, Luo, Wang, "Structured Knowledge Distillation for Semantic Segmentation", CVPR 2019
(arXiv 1903.04197). Official code: irfanICMLL/structure_knowledge_distillation ``utils/criterion.py``. PVD
coefficients (PVKD supplement Table 4): ``pixel`` = lambda_pi, ``pair`` = lambda_pa. With (R, K) site logits and
per-scan sites S_b (:func:`harness.distill.losses.site_kl`, the harness's one KL convention)::

    L_pi   = mean_b (1/|S_b|) sum_{i in S_b} sum_k p_ik^T (log p_ik^T - log p_ik^S)      (T = 1)
    n_i:     penultimate features max-pooled into M_b <= max_nodes grid-cell nodes (baselines.nodes.build_nodes)
    a_ij   = (n_i / ||n_i||)^T (n_j / ||n_j||)           (norm detached, + 1e-8, as SKD's ``similarity``)
    L_pa^b = (1 / M_b^2) sum_{i,j} (a_ij^S - a_ij^T)^2,   L_pa = mean over scans with nodes

Each network builds its own M_b x M_b graph on the same nodes, so widths may differ (no adapter). No holistic
(WGAN-GP) term. Readings: the pixel term's form [docs/readings.md#skd-pixel-term, #kl-convention]; nodes and
the global graph [docs/readings.md#skd-pair-graph, #baselines-nodes]; the level [docs/readings.md#baselines-levels].
Cost per scan: O(R K) for ``pixel``; one scatter over R C plus O(M^2 C) for ``pair``, never an R x R matrix.
Computed in float32; teacher values are detached.
"""
from __future__ import annotations

from typing import ClassVar, Mapping, Sequence

import torch

from baselines.nodes import (DEFAULT_MAX_NODES, Level, NodeSet, Sites, build_nodes, check_level,
                             default_cell_size, gather_sites)
from harness.backbones.base import BackboneInput
from harness.distill.base import DistillContext, Distiller
from harness.distill.losses import KL_CLASS_REDUCTION, check_class_reduction, site_kl
from harness.distill.recorder import TapValue


def similarity(nodes: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """SKD's node graph: (M, C) -> (M, M) cosines in float32, the norm (+ eps) detached.

    As ``similarity`` in irfanICMLL/structure_knowledge_distillation ``utils/utils.py``; the shared
    :func:`harness.distill.losses.cosine_affinity` keeps the norm's gradient, so it is not used here.
    """
    nodes = nodes.float()
    unit = nodes / (nodes.norm(dim=1, keepdim=True) + eps).detach()
    return unit @ unit.t()


def pairwise_loss(student_nodes: Sequence[torch.Tensor], teacher_nodes: Sequence[torch.Tensor]) -> torch.Tensor:
    """SKD's pair-wise term over per-scan node blocks [(M_b, C_s)], [(M_b, C_t)] (module docstring)."""
    per_scan = []
    for n_s, n_t in zip(student_nodes, teacher_nodes, strict=True):
        a_s, a_t = similarity(n_s), similarity(n_t.detach())
        per_scan.append(((a_s - a_t) ** 2).mean())
    if not per_scan:
        raise ValueError("pairwise_loss needs at least one scan with nodes")
    return torch.stack(per_scan).mean()


class SKD(Distiller):
    """SKD's pixel-wise and pair-wise distillation (module docstring). Terms: ``pixel``, ``pair``.

    Args:
        context: backbone name (coefficients, default node cell).
        coefficients: overrides of Table 4's values.
        level: ``"voxel"`` (default) or ``"point"`` taps.
        cell_size: node cell (s0, s1, s2) in grid cells; default per backbone.
        max_nodes: most nodes per scan graph (default 4096).
        generator: random source of the node draw (default: torch's global generator).
        kl_class_reduction: ``"sum"`` (default) or ``"mean"`` for the pixel term's KL.
    """

    method: ClassVar[str] = "skd"
    terms: ClassVar[tuple[str, ...]] = ("pixel", "pair")

    def __init__(self, context: DistillContext, coefficients: Mapping[str, float] | None = None, *,
                 level: Level = "voxel", cell_size: Sequence[int] | None = None,
                 max_nodes: int = DEFAULT_MAX_NODES, generator: torch.Generator | None = None,
                 kl_class_reduction: str = KL_CLASS_REDUCTION) -> None:
        super().__init__(context, coefficients)
        self.level = check_level(level)
        self.logit_tap, self.feature_tap = f"{level}_logits", f"{level}_features"
        self.student_taps = self.teacher_taps = (self.logit_tap, self.feature_tap)
        cell = cell_size if cell_size is not None else default_cell_size(context.backbone)
        self.cell_size = tuple(int(s) for s in cell)
        self.max_nodes = int(max_nodes)
        self.generator = generator
        self.kl_class_reduction = check_class_reduction(kl_class_reduction)

    def nodes(self, batch: BackboneInput, num_rows: int, device: torch.device) -> tuple[NodeSet, Sites]:
        """The node set of a batch (for inspection): ``(NodeSet, Sites)``."""
        sites = gather_sites(self.level, batch, num_rows, device)
        return build_nodes(sites, self.cell_size, self.max_nodes, self.generator), sites

    def compute(self, student: Mapping[str, TapValue], teacher: Mapping[str, TapValue],
                batch: BackboneInput) -> dict[str, torch.Tensor]:
        z_s = student[self.logit_tap].feats
        nodes, sites = self.nodes(batch, z_s.shape[0], z_s.device)
        pixel = site_kl(sites.take(z_s), sites.take(teacher[self.logit_tap].feats), sites.scan, sites.num_scans, 1.0,
                        self.kl_class_reduction)
        f_s = sites.take(student[self.feature_tap].feats).float()
        if nodes.num_nodes == 0:
            return {"pixel": pixel, "pair": f_s.sum() * 0.0}
        f_t = sites.take(teacher[self.feature_tap].feats).detach().float()
        pair = pairwise_loss(nodes.split(nodes.pool(f_s)), nodes.split(nodes.pool(f_t)))
        return {"pixel": pixel, "pair": pair}

    def extra_repr(self) -> str:
        return f"level={self.level!r}, cell_size={self.cell_size}, max_nodes={self.max_nodes}"
