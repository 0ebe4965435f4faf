"""The distiller interface shared by PVD (``harness/distill/pvd.py``) and the baselines (``baselines/``).

A distiller

* declares the tap points it reads from the student and the teacher (``student_taps``,
  ``teacher_taps``; names from :data:`harness.backbones.base.STANDARD_TAPS` or a backbone's own);
* may own trainable modules (adapters, auto-encoders): they are ordinary submodules and the trainer
  adds ``distiller.parameters()`` to the student's optimizer;
* returns **unweighted**, named loss terms from ``compute(student, teacher, batch)`` (called by ``forward``); the trainer
  multiplies each by its coefficient (``coefficients``: term name -> weight, from the supplement's
  Table 4 unless overridden), sums them with the segmentation loss and logs every term by name.

Conventions: every spatial reduction is per scan (``batch.point_batch`` / ``batch.voxel_coords[:, 0]``);
terms are computed in float32 even under AMP; teacher values carry no gradient.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
import yaml
from torch import nn

from harness.backbones.base import BackboneInput, backbone_family
from harness.distill.recorder import TapValue
from harness.registry import Registry

DISTILLERS: Registry[type["Distiller"]] = Registry("distillation method")
DISTILLERS.register("pvd", "harness.distill.pvd:PVD")
DISTILLERS.register("kd", "baselines.kd:KD")
DISTILLERS.register("cd", "baselines.cd:CD")
DISTILLERS.register("ifv", "baselines.ifv:IFV")
DISTILLERS.register("skd", "baselines.skd:SKD")
DISTILLERS.register("ka", "baselines.ka:KA")
DISTILLERS.register("m2skd", "harness.distill.m2skd:M2SKD")

COEFFICIENT_FILE = Path(__file__).parent / "coefficients.yaml"


@dataclass
class DistillContext:
    """Static facts a distiller may need at construction: backbone name, classes, channel widths."""

    backbone: str
    num_classes: int
    student_channels: Mapping[str, int] = field(default_factory=dict)  # tap name -> feature width
    teacher_channels: Mapping[str, int] = field(default_factory=dict)
    class_frequency: torch.Tensor | None = None  # (num_classes,) training frequency per class
    dataset: str = "semantickitti"  # label map of the run (semantickitti | nuscenes)

    def tap_widths(self, tap: str, method: str) -> tuple[int, int]:
        """(student, teacher) feature width of ``tap``; a clear KeyError when the trainer did not record it."""
        try:
            return int(self.student_channels[tap]), int(self.teacher_channels[tap])
        except KeyError as err:
            raise KeyError(f"{method} needs the width of tap {tap!r} in DistillContext.student_channels "
                           f"and teacher_channels") from err


class Distiller(nn.Module):
    """Base class. The contract a subclass follows:

    * ``terms``: names of the loss terms :meth:`compute` returns (class attribute);
    * :meth:`default_coefficients`: the coefficient of each term unless the config overrides it (default: PVKD
      supplementary Table 4 for ``method`` and the backbone's family); the base class merges the config's
      ``distill.coefficients`` over them once, in ``__init__``, and records which ones differ;
    * ``student_taps`` / ``teacher_taps``: the taps *this instance* reads (set them in ``__init__`` when they
      depend on options); the trainer probes the widths of every tap of the backbones before construction
      (``DistillContext.student_channels``), so a constructor may size adapters from them;
    * :meth:`compute` is the one override point; ``forward`` (final) casts the tap values to float32 and turns
      autocast off around it; the keyword parameters of ``__init__`` are the method's ``distill.options``
      (checked by name when the config is built).
    """

    student_taps: tuple[str, ...] = ()
    teacher_taps: tuple[str, ...] = ()
    terms: ClassVar[tuple[str, ...]] = ()  # names of the loss terms compute() returns
    method: ClassVar[str] = ""
    #: True: the trainer counts the training split's class frequencies (harness.data.class_frequency)
    #: into ``DistillContext.class_frequency`` unless the option ``class_frequency`` is given
    needs_class_frequency: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: implement compute(student, teacher, batch), not forward (the base "
                            "class's forward casts the taps to float32 and turns autocast off)")

    @classmethod
    def default_coefficients(cls, backbone: str) -> dict[str, float]:
        """Term -> coefficient when the config sets none: PVKD supplementary Table 4 (coefficients.yaml)."""
        return paper_coefficients(cls.method, backbone)

    def __init__(self, context: DistillContext, coefficients: Mapping[str, float] | None = None, **options: Any) -> None:
        super().__init__()
        self.context = context
        table = self.default_coefficients(context.backbone)
        given = {k: float(v) for k, v in (coefficients or {}).items()}
        self.coefficients = {**table, **given}
        unknown = set(self.coefficients) - set(self.terms)
        if unknown:
            raise KeyError(f"{self.method}: unknown coefficient(s) {sorted(unknown)}; terms are {list(self.terms)}")
        self.coefficient_overrides = sorted(k for k in given if table.get(k) != given[k])

    def forward(self, student: Mapping[str, TapValue], teacher: Mapping[str, TapValue],
                batch: BackboneInput) -> dict[str, torch.Tensor]:
        """Unweighted named terms of :meth:`compute`, on float32 tap values with autocast off (float32 under AMP)."""
        student, teacher = _float32(student), _float32(teacher)
        with torch.autocast(device_type=batch.point_batch.device.type, enabled=False):
            return self.compute(student, teacher, batch)

    def compute(self, student: Mapping[str, TapValue], teacher: Mapping[str, TapValue],
                batch: BackboneInput) -> dict[str, torch.Tensor]:
        """Subclasses implement the terms here: tap name -> :class:`TapValue` of each network -> term -> scalar."""
        raise NotImplementedError

    def pretrain(self, teacher: nn.Module, loader: Any) -> None:
        """Optional pass on the frozen teacher before student training (e.g. KA's auto-encoder)."""


def _float32(values: Mapping[str, TapValue]) -> dict[str, TapValue]:
    """Tap values with floating-point features in float32 (half/bfloat16 taps under AMP); gradients flow through."""
    return {k: (dataclasses.replace(v, feats=v.feats.float()) if v.feats.is_floating_point() else v)
            for k, v in values.items()}


class SeededSampling:
    """Mixin for distillers that sample (supervoxels, group members): one ``torch.Generator`` per device,
    seeded with ``self.seed`` (None: torch's global RNG), whose states travel in checkpoints through
    ``nn.Module``'s extra state, so a resumed run draws exactly what the uninterrupted run would have."""

    seed: int | None
    _generators: dict[str, torch.Generator]

    def get_extra_state(self) -> dict:
        return {key: gen.get_state() for key, gen in self._generators.items()}

    def set_extra_state(self, state: dict) -> None:
        for key, gen_state in (state or {}).items():
            self._generator(torch.device(key)).set_state(gen_state)

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(int(self.seed))
        return self._generators[key]


def paper_coefficients(method: str, backbone: str) -> dict[str, float]:
    """Coefficients from PVKD supplementary Table 4 for (method, backbone), keyed by term name."""
    table = yaml.safe_load(COEFFICIENT_FILE.read_text())["coefficients"]
    if method not in table:
        raise KeyError(f"no coefficients for method {method!r}; known: {sorted(table)}")
    family = backbone_family(backbone)
    if family not in table[method]:
        raise KeyError(f"no {method} coefficients for backbone {backbone!r}; known: {sorted(table[method])}")
    return {k: float(v) for k, v in table[method][family].items()}

