"""The distiller contract: defaults from one classmethod merged once, compute as the one override point,
float32 taps, per-instance taps, options checked by name when the config is built."""
from __future__ import annotations

import pytest
import torch

from harness.config.load import load_config
from harness.distill.base import DistillContext, Distiller
from harness.distill.recorder import TapValue
from harness.errors import InputError


class _Scale(Distiller):
    """A two-term distiller whose terms are sums of the tap values (hand-checkable)."""

    terms = ("a", "b")

    @classmethod
    def default_coefficients(cls, backbone):
        return {"a": 1.0, "b": 2.0}

    def __init__(self, context, coefficients=None, *, level: str = "voxel"):
        super().__init__(context, coefficients)
        self.student_taps = self.teacher_taps = (f"{level}_logits",)

    def compute(self, student, teacher, batch):
        s, t = student[self.student_taps[0]].feats, teacher[self.teacher_taps[0]].feats
        assert s.dtype == t.dtype == torch.float32  # the base class casts
        return {"a": s.sum(), "b": t.sum()}


class _Batch:
    point_batch = torch.zeros(1, dtype=torch.long)


def test_defaults_merge_once_and_overrides_are_recorded():
    d = _Scale(DistillContext("cylinder3d", 20), {"b": 2, "a": 0.5})
    assert d.coefficients == {"a": 0.5, "b": 2.0}
    assert d.coefficient_overrides == ["a"]        # b equals its default: not an override
    with pytest.raises(KeyError, match="unknown coefficient"):
        _Scale(DistillContext("cylinder3d", 20), {"c": 1.0})


def test_taps_are_per_instance_and_compute_sees_float32():
    d = _Scale(DistillContext("cylinder3d", 20), level="point")
    assert d.student_taps == ("point_logits",) and _Scale.student_taps == ()
    taps = {"point_logits": TapValue(torch.tensor([[1.5, 2.25]], dtype=torch.bfloat16))}
    out = d(taps, taps, _Batch())
    assert out["a"].dtype == torch.float32 and out["a"].item() == 3.75


def test_overriding_forward_is_refused():
    with pytest.raises(TypeError, match="implement compute"):
        class _Bad(Distiller):  # noqa: F841
            def forward(self, student, teacher, batch):
                return {}


def test_paper_defaults_come_from_table4_and_m2skd_from_its_authors():
    from baselines.kd import KD
    from harness.distill.m2skd import DEFAULT_COEFFICIENTS, M2SKD

    assert KD.default_coefficients("spvcnn") == {"kd": 0.1}          # Table 4, SPVNAS column
    assert KD.default_coefficients("cylinder3d") == {"kd": 0.2}
    assert M2SKD.default_coefficients("cylinder3d") == DEFAULT_COEFFICIENTS


def test_unknown_option_is_named_with_a_suggestion_when_the_config_is_built():
    with pytest.raises(InputError, match="temperatur.*Did you mean|did you mean.*temperature"):
        load_config(None, ["distill.method=kd", "distill.teacher_run=/nonexistent/teacher",
                           "distill.options={temperatur: 2.0}"])
