"""Official Cylinder3D / PVKD checkpoints <-> :class:`~harness.backbones.cylinder3d.Cylinder3D` state dicts.

Checkpoint facts (read in
xinge008/Cylinder3D ``train_cylinder_asym.py`` / ``utils/load_save_util.py`` and
cardwing/Codes-for-PVKD ``train_cyl_sem.py``):

* the training scripts save ``torch.save(model.state_dict(), path)``: a plain state dict with keys
  ``cylinder_3d_generator.PPmodel.{0,1,2,4,5,7,8,10}.*``, ``cylinder_3d_generator.fea_compression.0.*``
  and ``cylinder_3d_spconv_seg.<block>.<layer>.*`` -- exactly our module names;
* spconv 1.x stores every sparse-conv weight as ``(k0, k1, k2, C_in, C_out)`` ("RSCK"), e.g.
  ``cylinder_3d_spconv_seg.downCntx.conv1.weight`` is (1, 3, 3, F, c); spconv 2.x and this harness
  use KRSC ``(C_out, k0, k1, k2, C_in)``. Conversion is ``w.permute(4, 0, 1, 2, 3)``, as
  mmdetection3d's ``mmdet3d/models/layers/spconv/overwrite_spconv/write_spconv2.py`` does. The
  kernel offsets keep their row-major order, so spconv-1 kernel-map sharing (which indexes the
  flattened kernel) is preserved by the permutation;
* keys may carry ``module.`` components (``nn.DataParallel`` / DDP); they are removed;
* Cylinder3D's own ``load_checkpoint`` silently skips mismatching keys; here loading is strict by
  default, with one explicit relaxation for the point refinement head that official checkpoints
  cannot contain (:data:`ALLOW_MISSING_REFINEMENT`).

The architecture can be read from the shapes: ``downCntx.conv1.weight`` gives
(F, c), ``PPmodel.0.weight`` gives ``fea_dim``, ``PPmodel.10.weight`` gives ``out_fea_dim``,
``logits.bias`` the number of classes (:func:`infer_cylinder3d_config`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

__all__ = [
    "ALLOW_MISSING_REFINEMENT",
    "LoadReport",
    "convert_official_state_dict",
    "cylinder3d_from_official",
    "detect_conv_layout",
    "export_official_state_dict",
    "infer_cylinder3d_config",
    "krsc_to_spconv1",
    "load_official_cylinder3d",
    "official_kernel_size",
    "read_checkpoint",
    "spconv1_to_krsc",
    "strip_module_prefix",
]

#: ``strict`` policy: every checkpoint key must load with its exact shape; the only keys the
#: model may lack in the checkpoint are those of the point refinement head (reported).
ALLOW_MISSING_REFINEMENT = "allow_missing_refinement"
REFINEMENT_PREFIX = "point_refinement."
SEG_PREFIX = "cylinder_3d_spconv_seg."
GEN_PREFIX = "cylinder_3d_generator."

Layout = Literal["spconv1", "spconv2"]

# nominal kernels of the official layers (xinge008/Cylinder3D network/segmentator_3d_asymm_spconv.py)
_CONTEXT_KERNELS = {"conv1": (1, 3, 3), "conv1_2": (3, 1, 3), "conv2": (3, 1, 3), "conv3": (1, 3, 3)}
_RES_KERNELS = {"conv1": (3, 1, 3), "conv1_2": (1, 3, 3), "conv2": (1, 3, 3), "conv3": (3, 1, 3), "pool": (3, 3, 3)}
_UP_KERNELS = {"trans_dilao": (3, 3, 3), "conv1": (1, 3, 3), "conv2": (3, 1, 3), "conv3": (3, 3, 3), "up_subm": (3, 3, 3)}
_RECON_KERNELS = {"conv1": (3, 1, 1), "conv1_2": (1, 3, 1), "conv1_3": (1, 1, 3)}
_CONV_KEY = re.compile(r"^cylinder_3d_spconv_seg\.(?:(\w+?)\.)?(\w+)\.weight$")


def official_kernel_size(key: str) -> tuple[int, int, int] | None:
    """Nominal kernel of the official sparse-conv weight ``key`` (after prefix stripping), else None."""
    if key == SEG_PREFIX + "logits.weight":
        return (3, 3, 3)
    match = _CONV_KEY.match(key)
    if match is None or match.group(1) is None:
        return None
    block, layer = match.group(1), match.group(2)
    if block == "downCntx":
        table = _CONTEXT_KERNELS
    elif re.fullmatch(r"resBlock[2-5]", block):
        table = _RES_KERNELS
    elif re.fullmatch(r"upBlock[0-3]", block):
        table = _UP_KERNELS
    elif block == "ReconNet":
        table = _RECON_KERNELS
    else:
        return None
    return table.get(layer)


def spconv1_to_krsc(weight: torch.Tensor) -> torch.Tensor:
    """spconv 1.x ``(k0, k1, k2, C_in, C_out)`` -> KRSC ``(C_out, k0, k1, k2, C_in)`` (contiguous copy)."""
    if weight.dim() != 5:
        raise ValueError(f"expected a 5-D sparse-conv weight, got shape {tuple(weight.shape)}")
    return weight.permute(4, 0, 1, 2, 3).contiguous()


def krsc_to_spconv1(weight: torch.Tensor) -> torch.Tensor:
    """KRSC ``(C_out, k0, k1, k2, C_in)`` -> spconv 1.x ``(k0, k1, k2, C_in, C_out)`` (contiguous copy)."""
    if weight.dim() != 5:
        raise ValueError(f"expected a 5-D sparse-conv weight, got shape {tuple(weight.shape)}")
    return weight.permute(1, 2, 3, 4, 0).contiguous()


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop every ``module`` path component (``module.x.y``, ``model.module.x.y`` -> ``x.y`` / ``model.x.y``).

    Cylinder3D has no submodule called ``module``, so this is lossless for it.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = ".".join(part for part in key.split(".") if part != "module")
        if new_key in out:
            raise ValueError(f"checkpoint keys collide after removing 'module.': {key!r} -> {new_key!r}")
        out[new_key] = value
    return out


def detect_conv_layout(state_dict: Mapping[str, torch.Tensor]) -> Layout:
    """``"spconv1"`` or ``"spconv2"`` from the official conv weights' shapes (keys without ``module.``).

    A weight is spconv-1 when its first three dims are the layer's nominal kernel and KRSC when
    dims 1..3 are. Weights fitting both (only possible with 3 channels) are ignored.

    Raises:
        ValueError: no official conv weight, a shape fitting neither layout, or mixed layouts.
    """
    votes: dict[str, list[str]] = {"spconv1": [], "spconv2": []}
    for key, value in state_dict.items():
        kernel = official_kernel_size(key)
        if kernel is None:
            continue
        shape = tuple(value.shape)
        if len(shape) != 5:
            raise ValueError(f"{key}: expected a 5-D sparse-conv weight, got shape {shape}")
        is_v1, is_v2 = shape[:3] == kernel, shape[1:4] == kernel
        if is_v1 and is_v2:
            continue
        if not (is_v1 or is_v2):
            raise ValueError(f"{key}: shape {shape} fits neither spconv-1 (k0,k1,k2,Cin,Cout) nor KRSC for kernel {kernel}")
        votes["spconv1" if is_v1 else "spconv2"].append(key)
    if votes["spconv1"] and votes["spconv2"]:
        raise ValueError(
            f"checkpoint mixes conv layouts: spconv-1 e.g. {votes['spconv1'][0]}, KRSC e.g. {votes['spconv2'][0]}"
        )
    if votes["spconv1"]:
        return "spconv1"
    if votes["spconv2"]:
        return "spconv2"
    raise ValueError("no official Cylinder3D sparse-conv weight with an unambiguous layout found; pass layout= explicitly")


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor], layout: Literal["auto", "spconv1", "spconv2"] = "auto"
) -> tuple[dict[str, torch.Tensor], Layout]:
    """Official (spconv 1.x) or spconv 2.x state dict -> this harness's keys and KRSC weights.

    Removes ``module.`` components, then permutes every official sparse-conv weight when the
    layout is spconv-1 (KRSC weights pass through unchanged). Other tensors are returned as is.

    Returns:
        (converted state dict, the layout that was found/used).
    """
    state_dict = strip_module_prefix(state_dict)
    found: Layout = detect_conv_layout(state_dict) if layout == "auto" else layout
    if found not in ("spconv1", "spconv2"):
        raise ValueError(f"unknown layout {layout!r}; choose 'auto', 'spconv1' or 'spconv2'")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if found == "spconv1" and official_kernel_size(key) is not None:
            value = spconv1_to_krsc(value)
        out[key] = value
    return out, found


def infer_cylinder3d_config(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Constructor arguments of :class:`Cylinder3D` read from checkpoint shapes (either layout).

    Returns ``init_size`` (c), ``num_input_features`` (F), ``fea_dim``, ``out_fea_dim``,
    ``num_classes``, ``point_refinement`` (whether refinement keys are present) and, if present,
    ``refinement_widths``.
    """
    converted, _ = convert_official_state_dict(state_dict)
    conv1 = converted[SEG_PREFIX + "downCntx.conv1.weight"]  # KRSC (c, 1, 3, 3, F)
    config = {
        "init_size": int(conv1.shape[0]),
        "num_input_features": int(conv1.shape[-1]),
        "fea_dim": int(converted[GEN_PREFIX + "PPmodel.0.weight"].shape[0]),
        "out_fea_dim": int(converted[GEN_PREFIX + "PPmodel.10.weight"].shape[0]),
        "num_classes": int(converted[SEG_PREFIX + "logits.bias"].shape[0]),
        "point_refinement": any(key.startswith(REFINEMENT_PREFIX) for key in converted),
    }
    if config["point_refinement"]:
        linear = sorted(
            (int(m.group(1)), tuple(v.shape))
            for k, v in converted.items()
            if (m := re.fullmatch(r"point_refinement\.mlp\.(\d+)\.weight", k)) and v.dim() == 2
        )
        config["refinement_widths"] = [shape[0] for _, shape in linear]
    compression = converted.get(GEN_PREFIX + "fea_compression.0.weight")
    if compression is not None and tuple(compression.shape) != (config["num_input_features"], config["out_fea_dim"]):
        raise ValueError(
            f"inconsistent checkpoint: fea_compression.0.weight {tuple(compression.shape)} vs "
            f"F={config['num_input_features']}, out_fea_dim={config['out_fea_dim']}"
        )
    return config


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)`` on CPU; unwraps a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for wrapper in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return dict(obj)


@dataclass
class LoadReport:
    """What :func:`load_official_cylinder3d` did.

    Attributes:
        layout: conv-weight layout of the source (``"spconv1"`` official, ``"spconv2"``).
        loaded_keys: number of tensors copied into the model.
        missing_keys: model keys absent from the checkpoint (with :data:`ALLOW_MISSING_REFINEMENT`
            exactly the ``point_refinement.*`` keys, which keep their initialisation).
        unexpected_keys: checkpoint keys the model does not have (only with ``strict=False``).
    """

    layout: str
    loaded_keys: int
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)


def load_official_cylinder3d(
    model: nn.Module,
    checkpoint: str | Path | Mapping[str, torch.Tensor],
    strict: bool | str = True,
    layout: Literal["auto", "spconv1", "spconv2"] = "auto",
) -> LoadReport:
    """Load an official Cylinder3D/PVKD (spconv 1.x) or spconv 2.x checkpoint into ``model``.

    Args:
        model: a :class:`~harness.backbones.cylinder3d.Cylinder3D` of the checkpoint's shape.
        checkpoint: a path (read with ``weights_only=True``) or a state dict.
        strict: ``True`` -- the key sets must be identical (a model with a refinement head then
            needs a checkpoint that has one); :data:`ALLOW_MISSING_REFINEMENT` -- as ``True``
            except that the model's ``point_refinement.*`` keys may be absent (they are listed in
            the report, and are the only keys allowed to be missing); ``False`` -- torch's
            non-strict loading (shapes must still match).
        layout: source conv layout, ``"auto"`` detects it.

    Raises:
        KeyError: keys violate the ``strict`` policy (nothing is loaded then).
        RuntimeError: a shape mismatch (from ``load_state_dict``).
    """
    if strict not in (True, False, ALLOW_MISSING_REFINEMENT):
        raise ValueError(f"strict must be True, False or {ALLOW_MISSING_REFINEMENT!r}, got {strict!r}")
    source = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else dict(checkpoint)
    converted, found = convert_official_state_dict(source, layout)
    model_keys = set(model.state_dict())
    missing = sorted(model_keys - set(converted))
    unexpected = sorted(set(converted) - model_keys)
    if strict is not False:
        allowed_missing = [k for k in missing if strict == ALLOW_MISSING_REFINEMENT and k.startswith(REFINEMENT_PREFIX)]
        bad_missing = [k for k in missing if k not in allowed_missing]
        if bad_missing or unexpected:
            hint = ""
            if strict is True and bad_missing and all(k.startswith(REFINEMENT_PREFIX) for k in bad_missing):
                hint = (
                    f" (official checkpoints have no point refinement head: pass strict={ALLOW_MISSING_REFINEMENT!r} "
                    "or build the model with point_refinement=False)"
                )
            raise KeyError(f"checkpoint/model key mismatch: missing {bad_missing}, unexpected {unexpected}{hint}")
    model.load_state_dict(converted, strict=False)
    loaded = len(model_keys & set(converted))
    return LoadReport(found, loaded, missing, unexpected)


def export_official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The official part of ``model``'s state dict in spconv 1.x layout (what the original code loads).

    ``point_refinement.*`` keys are left out (the original network has no such module).
    """
    out = {}
    for key, value in model.state_dict().items():
        if not key.startswith((GEN_PREFIX, SEG_PREFIX)):
            continue
        out[key] = krsc_to_spconv1(value) if official_kernel_size(key) is not None else value.clone()
    return out


def cylinder3d_from_official(
    checkpoint: str | Path | Mapping[str, torch.Tensor],
    strict: bool | str = ALLOW_MISSING_REFINEMENT,
    **overrides,
):
    """Build a :class:`Cylinder3D` with the checkpoint's widths (:func:`infer_cylinder3d_config`) and load it.

    ``overrides`` go to the constructor (e.g. ``legacy_spconv1_keys``, ``point_refinement``).
    Without an override the model has a refinement head iff the checkpoint does. The default
    ``strict`` policy tolerates exactly a missing refinement head. Returns ``(model, report)``.
    """
    from harness.backbones.cylinder3d import Cylinder3D

    source = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else dict(checkpoint)
    config = infer_cylinder3d_config(source)
    names = ("init_size", "num_input_features", "fea_dim", "out_fea_dim", "num_classes", "point_refinement", "refinement_widths")
    kwargs = {k: config[k] for k in names if k in config}
    kwargs.update(overrides)
    model = Cylinder3D(**kwargs)
    report = load_official_cylinder3d(model, source, strict=strict)
    return model, report
