"""MinkUNet (spvnas's "MinkowskiNet" for SemanticKITTI) on the harness's sparse-conv interface.

Architecture, module names and parameter shapes follow mit-han-lab/spvnas ``core/models/semantic_kitti/minkunet.py``,
so a model-zoo checkpoint loads with ``strict=True`` after :mod:`harness.backbones.weights_spvnas`'s kernel
layout conversion. Channels ``cs = [int(width * c) for c in (32, 32, 64, 128, 256, 256, 128, 96, 96)]``
(``width`` is spvnas's ``cr``: 1.0 teacher, 0.5 student); every sparse conv is bias-free::

    stem:      (M, in) -> conv k3, BN, ReLU, conv k3, BN, ReLU -> (M, cs0)
    stage1..4: conv k2 s2, BN, ReLU, 2 x ResidualBlock          -> (M_i, cs_i) at stride 2^i
    up1..4:    transposed k2 s2, BN, ReLU; ResidualBlock(concat(up, skip)), ResidualBlock   (skips x3..x0)
    ResidualBlock(x) = relu(net(x) + downsample(x)),  net = conv k3, BN, ReLU, conv k3, BN,
                       downsample = conv k1 + BN when in != out, else nn.Sequential()
    voxel_logits = classifier(y4) (M, C);   point_logits = voxel_logits[point_to_voxel] (N, C)

``point_transforms`` and ``dropout`` are defined by spvnas's MinkUNet but unused by its forward; kept so the
official state_dict loads (:meth:`MinkUNet.forward_parameter_count`). The conv mapping and the grid padding to a
multiple of 16: docs/readings.md#minkunet-grid-padding. Classes: logit ``j`` is learning id
``j + label_offset`` (19 outputs, ``label_offset = 1``, the official head) [docs/readings.md#spvnas-label-offset,
#spvnas-label-map]. Rows of ``voxel_logits`` follow ``BackboneInput.voxel_coords``; points whose voxel was
dropped by the training voxel cap (``point_to_voxel == -1``) get all-zero logits and no gradient.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from harness.backbones.base import Backbone, BackboneInput, BackboneOutput, TapPoint
from harness.sparse import SparseConv3d, SparseInverseConv3d, SparseTensor, SubMConv3d, sparse_cat

__all__ = [
    "SPVNAS_BASE_CHANNELS",
    "BasicConvolutionBlock",
    "BasicDeconvolutionBlock",
    "MinkUNet",
    "ResidualBlock",
    "SparseBatchNorm",
    "SparseReLU",
    "gather_to_points",
    "input_spatial_shape",
    "spvnas_channels",
]

#: spvnas channel list before scaling by ``cr`` (core/models/semantic_kitti/minkunet.py)
SPVNAS_BASE_CHANNELS = (32, 32, 64, 128, 256, 256, 128, 96, 96)
#: the four stride-2 halvings of the UNet; input grids are padded to a multiple of this
GRID_MULTIPLE = 16


def spvnas_channels(width: float) -> list[int]:
    """``[int(width * c) for c in SPVNAS_BASE_CHANNELS]`` (spvnas truncates, as ``int(cr * x)``)."""
    return [int(width * c) for c in SPVNAS_BASE_CHANNELS]


def input_spatial_shape(coords: torch.Tensor, spatial_shape: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    """Grid extent covering ``coords`` (and ``spatial_shape``), rounded up to a multiple of 16 per axis.

    Args:
        coords: (M, 4) integer ``[batch, d0, d1, d2]``, non-negative spatial cells.
        spatial_shape: optional extent to cover as well (e.g. ``BackboneInput.spatial_shape``).
    """
    if coords.shape[0]:
        extent = [int(v) + 1 for v in coords[:, 1:].max(dim=0).values.tolist()]
    else:
        extent = [1, 1, 1]
    if spatial_shape is not None:
        extent = [max(a, int(b)) for a, b in zip(extent, spatial_shape)]
    return tuple(GRID_MULTIPLE * math.ceil(e / GRID_MULTIPLE) for e in extent)  # type: ignore[return-value]


def gather_to_points(voxel_values: torch.Tensor, point_to_voxel: torch.Tensor) -> torch.Tensor:
    """(M, C) per-voxel rows -> (N, C) per-point rows through ``point_to_voxel``; rows of -1 are 0."""
    index = point_to_voxel.to(device=voxel_values.device, dtype=torch.long)
    valid = index >= 0
    out = voxel_values.index_select(0, index.clamp(min=0))
    if not bool(valid.all()):
        out = out.masked_fill(~valid.unsqueeze(1), 0.0)
    return out


class SparseBatchNorm(nn.BatchNorm1d):
    """torchsparse ``spnn.BatchNorm``: ``nn.BatchNorm1d`` on the features (same state_dict keys)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace_feature(super().forward(x.feats))


class SparseReLU(nn.Module):
    """torchsparse ``spnn.ReLU`` on the features (spvnas uses it in place; the values are the same)."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace_feature(torch.relu(x.feats))


def _down_key(level: int) -> str:
    return f"spvnas_down{level}"


class BasicConvolutionBlock(nn.Module):
    """spvnas ``BasicConvolutionBlock`` with ks=2, stride=2: ``net`` = conv k2 s2, BN, ReLU.

    ``indice_key`` names the kernel map the matching :class:`BasicDeconvolutionBlock` inverts.
    """

    def __init__(self, inc: int, outc: int, indice_key: str) -> None:
        super().__init__()
        self.net = nn.Sequential(
            SparseConv3d(inc, outc, kernel_size=2, stride=2, padding=0, indice_key=indice_key),
            SparseBatchNorm(outc),
            SparseReLU(),
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.net(x)


class BasicDeconvolutionBlock(nn.Module):
    """spvnas ``BasicDeconvolutionBlock`` (transposed conv k2 s2, BN, ReLU) as an inverse conv.

    The conv weight is re-initialised as torchsparse does for transposed convs
    (``nn/modules/conv.py``: uniform(+-1 / sqrt(C_out * K))).
    """

    def __init__(self, inc: int, outc: int, indice_key: str) -> None:
        super().__init__()
        conv = SparseInverseConv3d(inc, outc, kernel_size=2, indice_key=indice_key)
        bound = 1.0 / math.sqrt(outc * 8)
        with torch.no_grad():
            conv.weight.uniform_(-bound, bound)
        self.net = nn.Sequential(conv, SparseBatchNorm(outc), SparseReLU())

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.net(x)


class ResidualBlock(nn.Module):
    """spvnas ``ResidualBlock`` (ks=3, stride=1): ``relu(net(x) + downsample(x))``.

    Args:
        inc, outc: channels.
        identity: module used as ``downsample`` when ``inc == outc``: spvnas's MinkUNet uses an
            empty ``nn.Sequential()``, its SPVCNN ``nn.Identity()`` (no parameters either way).
    """

    def __init__(self, inc: int, outc: int, identity: Callable[[], nn.Module] = nn.Sequential) -> None:
        super().__init__()
        self.net = nn.Sequential(
            SubMConv3d(inc, outc, kernel_size=3),
            SparseBatchNorm(outc),
            SparseReLU(),
            SubMConv3d(outc, outc, kernel_size=3),
            SparseBatchNorm(outc),
        )
        if inc == outc:
            self.downsample = identity()
        else:
            self.downsample = nn.Sequential(SubMConv3d(inc, outc, kernel_size=1), SparseBatchNorm(outc))
        self.relu = SparseReLU()

    def forward(self, x: SparseTensor) -> SparseTensor:
        main = self.net(x)
        return self.relu(main.replace_feature(main.feats + self.downsample(x).feats))


class SpvnasUNet(Backbone):
    """Layers shared by :class:`MinkUNet` and :class:`~harness.backbones.spvcnn.SPVCNN` (no forward).

    Attributes:
        channels: the scaled channel list ``cs``.
        label_offset: harness learning id of logit 0 (see the module docstring).
        tap_points: tap name -> module path (:data:`~harness.backbones.base.STANDARD_TAPS` plus
            ``encoder.0..3`` = ``stage1..4`` and ``decoder.0..3`` = ``up1..4.1``).
    """

    identity_block: Callable[[], nn.Module] = nn.Sequential
    grid = "cubic"
    label_offset = 1           # the official head leaves out the ignored class 0 (19 / 16 outputs)
    node_cell = (8, 8, 8)      # 5 cm cubic voxels -> 0.4 m graph nodes

    def __init__(self, width: float = 1.0, num_classes: int = 19, in_channels: int = 4, label_offset: int = 1) -> None:
        super().__init__()
        cs = spvnas_channels(width)
        self.width = float(width)
        self.channels = cs
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.label_offset = int(label_offset)
        ident = type(self).identity_block

        self.stem = nn.Sequential(
            SubMConv3d(in_channels, cs[0], kernel_size=3), SparseBatchNorm(cs[0]), SparseReLU(),
            SubMConv3d(cs[0], cs[0], kernel_size=3), SparseBatchNorm(cs[0]), SparseReLU(),
        )
        for level in range(1, 5):
            setattr(self, f"stage{level}", nn.Sequential(
                BasicConvolutionBlock(cs[level - 1], cs[level - 1], _down_key(level)),
                ResidualBlock(cs[level - 1], cs[level], ident),
                ResidualBlock(cs[level], cs[level], ident),
            ))
        # up j: input cs[3 + j] (cs4 for up1), output cs[4 + j], skip cs[4 - j]; inverts stage (5 - j)
        for j in range(1, 5):
            cin, cout, skip = cs[3 + j], cs[4 + j], cs[4 - j]
            setattr(self, f"up{j}", nn.ModuleList([
                BasicDeconvolutionBlock(cin, cout, _down_key(5 - j)),
                nn.Sequential(ResidualBlock(cout + skip, cout, ident), ResidualBlock(cout, cout, ident)),
            ]))
        self.classifier = nn.Sequential(nn.Linear(cs[8], num_classes))
        self.point_transforms = nn.ModuleList([
            nn.Sequential(nn.Linear(cs[0], cs[4]), nn.BatchNorm1d(cs[4]), nn.ReLU(True)),
            nn.Sequential(nn.Linear(cs[4], cs[6]), nn.BatchNorm1d(cs[6]), nn.ReLU(True)),
            nn.Sequential(nn.Linear(cs[6], cs[8]), nn.BatchNorm1d(cs[8]), nn.ReLU(True)),
        ])
        self.dropout = nn.Dropout(0.3)
        # identity modules that forward hooks observe (no parameters, not in the state_dict)
        self.taps = nn.ModuleDict({name: TapPoint() for name in ("voxel_features", "voxel_logits", "point_features", "point_logits")})
        for module in self.modules():  # spvnas weight_initialization (BN1d: weight 1, bias 0)
            if isinstance(module, nn.BatchNorm1d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    @property
    def tap_points(self) -> dict[str, str]:
        """Tap name -> module path; forward hooks on these modules see the documented tensors."""
        taps = {name: f"taps.{name}" for name in ("point_logits", "voxel_logits", "point_features", "voxel_features")}
        taps.update({f"encoder.{i}": f"stage{i + 1}" for i in range(4)})
        taps.update({f"decoder.{i}": f"up{i + 1}.1" for i in range(4)})
        return taps

    def _input_tensor(self, batch: BackboneInput) -> SparseTensor:
        """The network input: one row per voxel, features = its representative point (x, y, z, remission)."""
        if batch.voxel_features is None:
            raise ValueError(
                f"{type(self).__name__} needs BackboneInput.voxel_features (the cubic grid's representative points); "
                "voxelise with harness.voxelize.cubic_voxelize / voxelize_for_backbone('minkunet'|'spvcnn')"
            )
        dtype = self.classifier[0].weight.dtype
        device = self.classifier[0].weight.device
        feats = batch.voxel_features.to(device=device, dtype=dtype)
        if feats.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input features, got {feats.shape[1]}")
        coords = batch.voxel_coords.to(device=device, dtype=torch.int32)
        return SparseTensor.from_coords(feats, coords, input_spatial_shape(coords, batch.spatial_shape), batch.batch_size)

    def _decode(self, up: nn.ModuleList, x: SparseTensor, skip: SparseTensor) -> SparseTensor:
        return up[1](sparse_cat(up[0](x), skip))

    def _outputs(self, batch: BackboneInput, voxel_features: torch.Tensor) -> BackboneOutput:
        """Classifier on (M, D) per-voxel features, then the per-point gather, all through the taps."""
        voxel_features = self.taps["voxel_features"](voxel_features)
        voxel_logits = self.taps["voxel_logits"](self.classifier(voxel_features))
        point_to_voxel = batch.point_to_voxel
        self.taps["point_features"](gather_to_points(voxel_features, point_to_voxel))
        point_logits = self.taps["point_logits"](gather_to_points(voxel_logits, point_to_voxel))
        return BackboneOutput(point_logits=point_logits, voxel_logits=voxel_logits)


class MinkUNet(SpvnasUNet):
    """spvnas MinkUNet: ``MinkUNet(width=1.0)`` teacher (cr 1.0), ``MinkUNet(width=0.5)`` student.

    Args:
        width: channel ratio ``cr``.
        num_classes: classifier outputs (19 = official SemanticKITTI head).
        in_channels: input features per voxel (4: x, y, z, remission).
        label_offset: learning id of logit 0 (1 for the official head, whose logits skip id 0).

    ``forward(batch) -> BackboneOutput``; see the module docstring for the output definition and
    :attr:`tap_points` for the hookable tensors: ``voxel_features`` (M, cs8) = final decoder
    features (classifier input), ``point_features`` (N, cs8) = their per-point gather, logits alike;
    ``encoder.i`` / ``decoder.i`` are SparseTensors at strides 2**(i+1) / 2**(3-i).
    """

    family = "MinkowskiNet"
    #: state_dict prefixes the forward never uses (spvnas defines them in MinkUNet too)
    UNUSED_PARAMETER_PREFIXES = ("point_transforms.",)

    def forward_parameter_count(self) -> int:
        """Parameters the forward uses (state_dict total minus ``point_transforms``)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith(self.UNUSED_PARAMETER_PREFIXES))

    def forward(self, batch: BackboneInput) -> BackboneOutput:
        x0 = self.stem(self._input_tensor(batch))
        x1 = self.stage1(x0)
        x2 = self.stage2(x1)
        x3 = self.stage3(x2)
        x4 = self.stage4(x3)
        y1 = self._decode(self.up1, x4, x3)
        y2 = self._decode(self.up2, y1, x2)
        y3 = self._decode(self.up3, y2, x1)
        y4 = self._decode(self.up4, y3, x0)
        return self._outputs(batch, y4.feats)
