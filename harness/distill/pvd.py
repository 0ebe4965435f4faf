r"""PVD: Point-to-Voxel Knowledge Distillation (Hou, Zhu, Ma, Loy, Li, CVPR 2022), from the paper and its
supplement (no released distillation code); readings: ``docs/readings.md`` entries ``pvd-*``. Loss (formed by
the trainer; :meth:`PVD.compute` returns the four *unweighted* terms)::

    L = L_seg + alpha1 * out_point + alpha2 * out_voxel + beta1 * aff_point + beta2 * aff_voxel

(alpha1, alpha2, beta1, beta2): supplement Table 4 per backbone, or a Table 2 row (``coefficient_row``)
[docs/readings.md#pvd-coefficients]. Every term is reduced per scan, then averaged over the batch's scans.

* ``out_point`` / ``out_voxel`` on ``point_logits`` (N, C) / voxel logits (V, C)
  [docs/readings.md#kl-convention, #pvd-point-head, #pvd-voxel-logits]:

  .. math:: L^p_{out} = \frac1B\sum_b \frac{1}{N_b}\sum_{n\in b} \tau^2
            \sum_c p^T_{nc}\,(\log p^T_{nc} - \log p^S_{nc}),\qquad p = \mathrm{softmax}(z/\tau)

  KL(T || S), tau = 1; the harness's one KL convention (:func:`harness.distill.losses.site_kl`: summed over
  the C classes, mean over sites; ``kl_class_reduction="mean"`` gives 1/(N C)); points without a voxel
  (``point_to_voxel == -1``) are skipped.
* sampling (:mod:`harness.distill.supervoxel`): K supervoxels per scan with probability proportional to
  ``W_i = f_class(N_minor_i) f_dist(D_i)`` [docs/readings.md#pvd-supervoxel-size, #pvd-n-minor, #pvd-f-dist,
  #pvd-alpha-beta, #pvd-sampling]; class frequencies counted from the training split's label files
  (:mod:`harness.data.class_frequency`) [docs/readings.md#class-frequencies]; uniform frequencies are an error.
* ``aff_point`` / ``aff_voxel`` on the penultimate features of at most N_p points / N_v voxels per sampled
  supervoxel, padding masked [docs/readings.md#pvd-members, #pvd-affinity-features]:

  .. math:: L_{aff} = \frac1B\sum_b \frac{1}{K_b}\sum_{k\in b} \frac{1}{n_k^2}\sum_{i,j\le n_k}
            (A^S_{k,ij} - A^T_{k,ij})^2,\qquad A_{k,ij} = \hat f_i\cdot\hat f_j

Tap shapes (Cylinder3D teacher / 0.5x student, 20 classes): point_logits (N, 20), voxel_logits (M, 20),
point_features (N, 64), voxel_features (M, 128) / (M, 64). ``components`` switches terms off (Table 3, :data:`TABLE3_ROWS`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from harness.backbones.base import BACKBONES, BackboneInput
from harness.data.labelmap import load_label_map
from harness.distill.base import DistillContext, Distiller, SeededSampling
from harness.distill.losses import (KL_CLASS_REDUCTION, affinity_distance, check_class_reduction, cosine_affinity,
                                    has_direction, per_scan_mean, site_kl)
from harness.distill.recorder import TapValue
from harness.distill.supervoxel import (F_DIST_FORMS, N_MINOR_READINGS, SAMPLING_STRATEGIES, SupervoxelPartition,
                                        class_rarity, gather_members, minority_score, sample_supervoxels,
                                        sampling_weights)
from harness.sparse import scatter_mean
from harness.voxelize.cylindrical import CylindricalGrid

__all__ = ["PVD", "TABLE2_ROWS", "TABLE3_ROWS", "BatchGeometry", "SupervoxelSample", "table2_coefficients"]

TERMS = ("out_point", "out_voxel", "aff_point", "aff_voxel")

#: PVKD supplementary material, Table 2 "Performance of using different loss coefficients for PVD"
#: (Cylinder3D_0.5x student, SemanticKITTI val; PVKD supplementary material), transcribed
#: exactly: (alpha1, alpha2, beta1, beta2, mIoU). Row 6 equals the Cylinder3D row of Table 4.
TABLE2_ROWS: tuple[tuple[float, float, float, float, float], ...] = (
    (0.1, 0.1, 0.1, 0.1, 65.2),
    (0.25, 0.25, 0.25, 0.25, 65.5),
    (0.15, 0.15, 0.15, 0.25, 66.2),
    (0.1, 0.2, 0.2, 0.25, 66.3),
    (0.15, 0.1, 0.25, 0.15, 65.4),
    (0.1, 0.15, 0.15, 0.25, 66.4),
)

#: PVKD supplementary material, Table 3 "Influence of each component on the final performance"
#: (Cylinder3D_0.5x, SemanticKITTI val): (enabled components, mIoU). All four together is Table 2 row 6 (66.4).
TABLE3_ROWS: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 63.1),
    (("out_point",), 63.4),
    (("out_voxel",), 63.7),
    (("aff_point",), 63.6),
    (("aff_voxel",), 64.5),
)

_GRIDS = {"semantickitti": CylindricalGrid.semantickitti, "nuscenes": CylindricalGrid.nuscenes}
_SOURCES = ("auto", "native", "cylindrical")
_PARTITION_FROM = ("auto", "grid_index", "xyz")


def table2_coefficients(row: int) -> dict[str, float]:
    """Coefficients of supplement Table 2 row ``row`` (1-6, top to bottom), keyed by term name."""
    if not 1 <= int(row) <= len(TABLE2_ROWS):
        raise ValueError(f"coefficient_row must be 1..{len(TABLE2_ROWS)} (supplement Table 2), got {row}")
    return dict(zip(TERMS, TABLE2_ROWS[int(row) - 1][:4]))


@dataclass
class SupervoxelSample:
    """What one draw of the difficulty-aware sampling produced for a batch.

    Attributes:
        point_supervoxel: (N,) int64 global supervoxel id ``scan * S + id`` of each point.
        weights: (B, S) float32 sampling weights W (0: unoccupied).
        sampled: (B, K) int64 drawn local supervoxel ids (-1: fewer than K occupied).
        slot: (B * S,) int64 group ``b * K + j`` of each drawn supervoxel, -1 for the others.
    """

    point_supervoxel: torch.Tensor
    weights: torch.Tensor
    sampled: torch.Tensor
    slot: torch.Tensor


class PVD(SeededSampling, Distiller):
    """Point-to-Voxel KD: four unweighted terms ``out_point``, ``out_voxel``, ``aff_point``, ``aff_voxel``.

    See the module docstring for the equations and every reading. Options (all YAML-friendly):

    Args:
        context: backbone name, ``num_classes``, ``class_frequency`` (needed by the ``difficulty`` and
            ``class_only`` strategies, e.g. ``load_label_map("semantickitti").content``).
        coefficients: overrides of the Table 4 coefficients (term name -> weight); win over ``coefficient_row``.
        components: enabled terms (default all four); supplement Table 3.
        coefficient_row: 1-6, take (alpha1, alpha2, beta1, beta2) from supplement Table 2 (Cylinder3D study).
        temperature: KL temperature tau (tau^2 scaling). kl_class_reduction: ``"sum"`` (1/N, default, the
            harness's KL convention) or ``"mean"`` (1/(N C)).
        K, N_p, N_v: supervoxels per scan, points / voxels per supervoxel.
        supervoxel_size: supervoxel size in voxels of the cylindrical grid; grid: ``"semantickitti"``,
            ``"nuscenes"`` or a :class:`~harness.voxelize.cylindrical.CylindricalGrid`.
        sampling: ``difficulty`` | ``random`` | ``class_only`` | ``distance_only``.
        alpha_s, beta_s: f_class constants. n_minor: ``"rarest"`` | ``"mean"``.
        f_dist: ``"one_plus_linear"`` | ``"linear"``.
        class_frequency: (C,) overrides ``context.class_frequency``; ``"labelmap"``: the shipped ``content`` of
            ``context.dataset``'s label map (SemanticKITTI's official shares; nuScenes has none).
        partition_from: ``"auto"`` (Cylinder3D: ``grid_index``, else ``xyz``), ``"grid_index"``, ``"xyz"``.
        voxel_logits_source / voxel_features_source: ``"auto"``, ``"native"``, ``"cylindrical"``.
        seed: seed of the sampling generator (None: global RNG).
    """

    method = "pvd"
    needs_class_frequency = True
    terms = TERMS
    student_taps = ("point_logits", "voxel_logits", "point_features", "voxel_features")
    teacher_taps = ("point_logits", "voxel_logits", "point_features", "voxel_features")

    def __init__(
        self,
        context: DistillContext,
        coefficients: Mapping[str, float] | None = None,
        *,
        components: Sequence[str] | None = None,
        coefficient_row: int | None = None,
        temperature: float = 1.0,
        kl_class_reduction: str = KL_CLASS_REDUCTION,
        K: int = 5,  # noqa: N803 -- the paper's notation
        N_p: int = 256,  # noqa: N803
        N_v: int = 256,  # noqa: N803
        supervoxel_size: Sequence[int] = (120, 60, 8),
        grid: str | CylindricalGrid = "semantickitti",
        sampling: str = "difficulty",
        alpha_s: float = 4.0,
        beta_s: float = -2.0,
        n_minor: str = "rarest",
        f_dist: str = "one_plus_linear",
        class_frequency: Sequence[float] | torch.Tensor | str | None = None,
        partition_from: str = "auto",
        voxel_logits_source: str = "auto",
        voxel_features_source: str = "auto",
        seed: int | None = 0,
    ) -> None:
        if coefficient_row is not None:  # a Table 2 row replaces the Table 4 values; explicit ones win
            coefficients = {**table2_coefficients(coefficient_row), **dict(coefficients or {})}
        super().__init__(context, coefficients)
        enabled = tuple(TERMS if components is None else components)
        unknown = sorted(set(enabled) - set(TERMS))
        if unknown:
            raise ValueError(f"pvd: unknown component(s) {unknown}; terms are {list(TERMS)}")
        self.active_terms = tuple(t for t in TERMS if t in enabled)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        check_class_reduction(kl_class_reduction)
        for name, value in (("K", K), ("N_p", N_p), ("N_v", N_v)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        _check_choice("sampling", sampling, SAMPLING_STRATEGIES)
        _check_choice("n_minor", n_minor, N_MINOR_READINGS)
        _check_choice("f_dist", f_dist, F_DIST_FORMS)
        _check_choice("partition_from", partition_from, _PARTITION_FROM)
        _check_choice("voxel_logits_source", voxel_logits_source, _SOURCES)
        _check_choice("voxel_features_source", voxel_features_source, _SOURCES)
        if isinstance(grid, str):
            _check_choice("grid", grid, tuple(_GRIDS))
            grid = _GRIDS[grid]()
        cylinder = BACKBONES.get(context.backbone).grid == "cylindrical"

        self.temperature = float(temperature)
        self.kl_class_reduction = kl_class_reduction
        self.K, self.N_p, self.N_v = int(K), int(N_p), int(N_v)
        self.partition = SupervoxelPartition(grid, tuple(supervoxel_size))
        self.sampling = sampling
        self.alpha_s, self.beta_s = float(alpha_s), float(beta_s)
        self.n_minor = n_minor
        self.f_dist = f_dist
        self.partition_from = ("grid_index" if cylinder else "xyz") if partition_from == "auto" else partition_from
        if voxel_logits_source == "auto":
            voxel_logits_source = "native" if cylinder else "cylindrical"
        self.voxel_logits_source = voxel_logits_source
        self.voxel_features_source = "native" if voxel_features_source == "auto" else voxel_features_source
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

        if isinstance(class_frequency, str):
            _check_choice("class_frequency", class_frequency, ("labelmap",))
            content = load_label_map(context.dataset).content
            if content is None:
                raise ValueError(f"pvd: class_frequency='labelmap': the {context.dataset} label map ships no class "
                                 "frequencies; leave the option unset (the trainer counts the training split's)")
            class_frequency = torch.as_tensor(content, dtype=torch.float32)
        frequency = class_frequency if class_frequency is not None else context.class_frequency
        samples = "aff_point" in self.active_terms or "aff_voxel" in self.active_terms
        needs_class = samples and sampling in ("difficulty", "class_only")
        if frequency is None and needs_class:
            raise ValueError(f"pvd sampling={sampling!r} needs class frequencies: set DistillContext.class_frequency "
                             "(harness.data.class_frequency.training_class_frequency) or the class_frequency option")
        if frequency is not None and torch.as_tensor(frequency).numel() != context.num_classes:
            raise ValueError(f"pvd: class_frequency has {torch.as_tensor(frequency).numel()} entries, the dataset "
                             f"{context.num_classes} classes")
        rarity = class_rarity(torch.as_tensor(frequency)) if frequency is not None else torch.ones(context.num_classes)
        if needs_class and bool((rarity == 1).all()):
            raise ValueError("pvd: the class frequencies are uniform (e.g. a placeholder), so f_class would be "
                             f"constant and sampling={sampling!r} silently distance-only; use the training split's "
                             "frequencies (the trainer counts them from the label files) or sampling='distance_only'")
        self.class_frequency = None if frequency is None else [float(f) for f in torch.as_tensor(frequency).tolist()]
        self.register_buffer("rarity", rarity, persistent=False)

    # ------------------------------------------------------------------ metadata
    @property
    def config(self) -> dict[str, Any]:
        """Resolved options (the readings actually in force), for run metadata."""
        grid = self.partition.grid
        return {
            "components": list(self.active_terms), "coefficients": dict(self.coefficients),
            "temperature": self.temperature, "kl_class_reduction": self.kl_class_reduction,
            "K": self.K, "N_p": self.N_p, "N_v": self.N_v,
            "supervoxel_size": list(self.partition.size), "supervoxels_per_scan": self.partition.num_supervoxels,
            "grid": {"grid_size": list(grid.grid_size), "min_bound": list(grid.min_bound),
                     "max_bound": list(grid.max_bound)},
            "sampling": self.sampling, "alpha_s": self.alpha_s, "beta_s": self.beta_s, "n_minor": self.n_minor,
            "class_frequency": self.class_frequency,
            "f_dist": self.f_dist, "partition_from": self.partition_from,
            "voxel_logits_source": self.voxel_logits_source, "voxel_features_source": self.voxel_features_source,
            "seed": self.seed,
        }

    # ------------------------------------------------------------------ forward
    def compute(self, student: Mapping[str, TapValue], teacher: Mapping[str, TapValue],
                batch: BackboneInput) -> dict[str, torch.Tensor]:
        """Unweighted terms ``{name: scalar float32}`` for the enabled components (see the module docstring)."""
        terms: dict[str, torch.Tensor] = {}
        active = self.active_terms
        n, m, b = batch.point_batch.shape[0], batch.voxel_coords.shape[0], batch.batch_size
        geo = self.geometry(batch)
        cells = None
        if (("out_voxel" in active and self.voxel_logits_source == "cylindrical")
                or ("aff_voxel" in active and self.voxel_features_source == "cylindrical")):
            cells = self._cylindrical_cells(batch, geo)

        if "out_point" in active:
            zs, zt = _pair(student, teacher, "point_logits", rows=n)
            terms["out_point"] = self._kl(zs, zt, geo.point_scan, b, geo.point_valid)

        if "out_voxel" in active:
            if self.voxel_logits_source == "native":
                ys, yt = _pair(student, teacher, "voxel_logits", rows=m)
                vscan = geo.voxel_scan
            else:
                zs, zt = _pair(student, teacher, "point_logits", rows=n)
                ys, yt = cells.mean(zs), cells.mean(zt)
                vscan = cells.scan
            terms["out_voxel"] = self._kl(ys, yt, vscan, b)

        if "aff_point" in active or "aff_voxel" in active:
            sample = self.sample(batch, geo)
            num_groups = b * self.K
            if "aff_point" in active:
                fs, ft = _pair(student, teacher, "point_features", rows=n, same_width=False)
                group = sample.slot[geo.point_supervoxel]
                if geo.point_valid is not None:
                    group = torch.where(geo.point_valid, group, -1)
                terms["aff_point"] = self._affinity(fs, ft, group, num_groups, self.N_p, b)
            if "aff_voxel" in active:
                if self.voxel_features_source == "native":
                    gs, gt = _pair(student, teacher, "voxel_features", rows=m, same_width=False)
                    voxel_sv = self._voxel_supervoxel(batch, geo)
                else:
                    fs, ft = _pair(student, teacher, "point_features", rows=n, same_width=False)
                    gs, gt = cells.mean(fs), cells.mean(ft)
                    voxel_sv = cells.supervoxel
                group = torch.where(voxel_sv >= 0, sample.slot[voxel_sv.clamp(min=0)], -1)
                terms["aff_voxel"] = self._affinity(gs, gt, group, num_groups, self.N_v, b)
        return terms

    def _kl(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, scan: torch.Tensor, batch_size: int,
            mask: torch.Tensor | None = None) -> torch.Tensor:
        """KL(teacher || student) per site, summed over classes (or 1/C), mean per scan then over scans."""
        return site_kl(student_logits, teacher_logits, scan, batch_size, self.temperature, self.kl_class_reduction,
                       mask)

    def _affinity(self, fs: torch.Tensor, ft: torch.Tensor, group: torch.Tensor, num_groups: int, limit: int,
                  batch_size: int) -> torch.Tensor:
        index, mask = gather_members(group, num_groups, limit, self._generator(group.device))
        s = fs.float()[index]                                   # (G, limit, d_S)
        with torch.no_grad():
            t = ft.detach().float()[index]                      # (G, limit, d_T)
            mask = mask & has_direction(s) & has_direction(t)   # padding and direction-less rows out
            a_t, _ = cosine_affinity(t, mask, check_direction=False)
        a_s, _ = cosine_affinity(s, mask, check_direction=False)
        distance, has_pairs = affinity_distance(a_s, a_t, mask)  # (G,)
        group_scan = torch.arange(num_groups, device=group.device) // self.K
        return per_scan_mean(distance, group_scan, batch_size, has_pairs)

    # ------------------------------------------------------------------ supervoxels
    def geometry(self, batch: BackboneInput) -> "BatchGeometry":
        """Scan and supervoxel ids of the batch's points (and, for the grid partition, voxels)."""
        num_sv = self.partition.num_supervoxels
        point_scan = batch.point_batch.long()
        voxel_scan = batch.voxel_coords[:, 0].long()
        valid = batch.point_to_voxel >= 0
        point_valid = None if bool(valid.all()) else valid
        voxel_sv = None
        if self.partition_from == "grid_index":
            voxel_sv = voxel_scan * num_sv + self.partition.from_grid_index(batch.voxel_coords[:, 1:])
            if point_valid is None:  # a point's cylindrical index is its voxel's: M-sized work plus one gather
                point_sv = voxel_sv.index_select(0, batch.point_to_voxel.long())
            else:
                point_sv = point_scan * num_sv + self.partition.from_grid_index(batch.point_coords[:, 1:])
        else:
            point_sv = point_scan * num_sv + self.partition.from_xyz(_xyz(batch))
        return BatchGeometry(point_scan, voxel_scan, point_valid, point_sv, voxel_sv)

    def point_supervoxels(self, batch: BackboneInput) -> torch.Tensor:
        """(N,) int64 global supervoxel id ``scan * S + id`` of every point."""
        return self.geometry(batch).point_supervoxel

    def _voxel_supervoxel(self, batch: BackboneInput, geo: "BatchGeometry") -> torch.Tensor:
        """(M,) global supervoxel of each backbone voxel (-1 for a voxel without points)."""
        if geo.voxel_supervoxel is not None:
            return geo.voxel_supervoxel
        p2v = batch.point_to_voxel.long()
        xyz = _xyz(batch).double()
        if geo.point_valid is not None:
            p2v, xyz = p2v[geo.point_valid], xyz[geo.point_valid]
        m = batch.voxel_coords.shape[0]
        centroid = scatter_mean(xyz, p2v, m)
        has_points = torch.bincount(p2v, minlength=m) > 0
        sv = geo.voxel_scan * self.partition.num_supervoxels + self.partition.from_xyz(centroid)
        geo.voxel_supervoxel = torch.where(has_points, sv, -1)
        return geo.voxel_supervoxel

    def sampling_weights(self, batch: BackboneInput, geo: "BatchGeometry | None" = None) -> torch.Tensor:
        """(B, S) float32 weights W of the configured strategy (0 for unoccupied supervoxels)."""
        geo = self.geometry(batch) if geo is None else geo
        num_sv = self.partition.num_supervoxels
        total = batch.batch_size * num_sv
        point_sv, labels = geo.point_supervoxel, batch.point_labels
        if geo.point_valid is not None:
            point_sv = point_sv[geo.point_valid]
            labels = labels[geo.point_valid] if labels is not None else None
        occupied = torch.bincount(point_sv, minlength=total) > 0
        n_minor = None
        if self.sampling in ("difficulty", "class_only"):
            if labels is not None:
                n_minor = minority_score(labels, point_sv, total, self.rarity, self.n_minor)
            elif batch.voxel_labels is not None:
                voxel_sv = self._voxel_supervoxel(batch, geo)
                keep = voxel_sv >= 0
                n_minor = minority_score(batch.voxel_labels[keep], voxel_sv[keep], total, self.rarity, self.n_minor)
        distance = self.partition.centre_radius(point_sv.device).repeat(batch.batch_size)
        weights = sampling_weights(self.sampling, occupied, distance, n_minor, self.alpha_s, self.beta_s,
                                   self.partition.max_radius, self.f_dist)
        return weights.view(batch.batch_size, num_sv)

    def sample(self, batch: BackboneInput, geo: "BatchGeometry | None" = None) -> SupervoxelSample:
        """Draw ``K`` supervoxels per scan (advances the sampling generator)."""
        geo = self.geometry(batch) if geo is None else geo
        weights = self.sampling_weights(batch, geo)
        sampled = sample_supervoxels(weights, self.K, self._generator(weights.device))
        num_sv = self.partition.num_supervoxels
        slot = torch.full((batch.batch_size * num_sv,), -1, dtype=torch.long, device=weights.device)
        drawn = sampled >= 0
        b = torch.arange(batch.batch_size, device=weights.device).unsqueeze(1).expand_as(sampled)
        j = torch.arange(self.K, device=weights.device).unsqueeze(0).expand_as(sampled)
        slot[(b * num_sv + sampled)[drawn]] = (b * self.K + j)[drawn]
        return SupervoxelSample(geo.point_supervoxel, weights, sampled, slot)

    def _cylindrical_cells(self, batch: BackboneInput, geo: "BatchGeometry") -> "_Cells":
        """Cells of the cylindrical distillation grid holding the (valid) points of each scan."""
        if self.partition_from == "grid_index":
            index = batch.point_coords[:, 1:].long()
        else:
            index = self.partition.cell_index_from_xyz(_xyz(batch))
        r, a, h = self.partition.grid.grid_size
        upper = torch.tensor((r, a, h), device=index.device) - 1
        index = torch.minimum(index.clamp(min=0), upper)
        key = ((geo.point_scan * r + index[:, 0]) * a + index[:, 1]) * h + index[:, 2]
        if geo.point_valid is not None:
            key = key[geo.point_valid]
        cell_key, inverse = torch.unique(key, return_inverse=True)
        cell_scan = torch.div(cell_key, r * a * h, rounding_mode="floor")
        rest = cell_key - cell_scan * (r * a * h)
        coords = torch.stack((rest // (a * h), (rest // h) % a, rest % h), dim=1)
        supervoxel = cell_scan * self.partition.num_supervoxels + self.partition.from_grid_index(coords)
        return _Cells(geo.point_valid, inverse, cell_scan, supervoxel)


@dataclass
class BatchGeometry:
    """Per-forward bookkeeping: scan ids, point validity (None: all points have a voxel), supervoxel ids."""

    point_scan: torch.Tensor
    voxel_scan: torch.Tensor
    point_valid: torch.Tensor | None
    point_supervoxel: torch.Tensor
    voxel_supervoxel: torch.Tensor | None = None


@dataclass
class _Cells:
    """Valid points grouped into cylindrical cells: ``mean(x)`` gives (U, D) per-cell means."""

    point_valid: torch.Tensor | None
    inverse: torch.Tensor
    scan: torch.Tensor
    supervoxel: torch.Tensor

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.point_valid is not None:
            values = values[self.point_valid]
        return scatter_mean(values, self.inverse, int(self.scan.shape[0]))


def _pair(student: Mapping[str, TapValue], teacher: Mapping[str, TapValue], tap: str, rows: int,
          same_width: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    for side, taps in (("student", student), ("teacher", teacher)):
        if tap not in taps:
            raise KeyError(f"pvd needs the {side} tap {tap!r}; got {sorted(taps)}")
    s, t = student[tap].feats, teacher[tap].feats
    if s.shape[0] != rows or t.shape[0] != rows:
        raise ValueError(f"pvd: {tap} has {s.shape[0]} (student) / {t.shape[0]} (teacher) rows, the batch has {rows}; "
                         "teacher and student must see the same voxelised batch")
    if same_width and s.shape[1] != t.shape[1]:
        raise ValueError(f"pvd: {tap} widths differ (student {s.shape[1]}, teacher {t.shape[1]})")
    return s, t


def _xyz(batch: BackboneInput) -> torch.Tensor:
    if batch.point_xyz is None:
        raise ValueError("pvd: this partition needs batch.point_xyz (Cartesian point positions)")
    return batch.point_xyz


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"pvd: {name} must be one of {list(choices)}, got {value!r}")
