"""Cylinder3D (teacher 1.0x and PVKD 0.5x student) on the harness sparse-conv interface.

Follows xinge008/Cylinder3D (``network/cylinder_fea_generator.py``, ``network/segmentator_3d_asymm_spconv.py``,
``network/cylinder_spconv_3d.py``) and cardwing/Codes-for-PVKD's configs (facts read, code not copied); the
differences, none of which changes the function: docs/readings.md#cylinder3d-port-equivalence. Shapes
(c = ``init_size``, F = ``num_input_features``, C classes, N points, M voxels of the 480 x 360 x 32 grid)::

    point MLP (PPmodel):      (N, 9) -> (N, out_fea_dim)      max-pooled per voxel, compressed to (M, F)
    3-D net (Asymm_3d_spconv): (M, F) -> up1e (M, 2c) -> voxel_features = cat(ReconNet(up1e), up1e) (M, 4c)
    logits:                   voxel_logits (M, C)
    point refinement head:    [voxel_features[point_to_voxel] | PPmodel out] (N, 4c + out_fea_dim)
                              -> 256 -> 128 -> point_features (N, 64) -> point_logits (N, C)

``width`` scales only ``init_size = round(32 * width)`` (1.0: the teacher, c = 32; 0.5: the PVKD student,
c = 16) [docs/readings.md#cylinder3d-width]; F defaults to 16 [docs/readings.md#cylinder3d-f];
:func:`harness.backbones.weights_cylinder3d.cylinder3d_from_official` reads c and F from a checkpoint.
``legacy_spconv1_keys=True`` (default) reproduces spconv 1.2.1's kernel-map sharing, needed for the
official/PVKD weights; the mode is :attr:`Cylinder3D.kernel_map_mode` [docs/readings.md#cylinder3d-legacy-keys].
``point_refinement=True`` adds the paper's point-wise refinement head, absent from the released code
[docs/readings.md#cylinder3d-point-head-design, #pvd-point-head]; without it ``point_logits`` is
``voxel_logits`` gathered at each point's voxel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from harness.backbones.base import Backbone, BackboneInput, BackboneOutput, TapPoint
from harness.sparse.conv import SparseConv3d, SparseInverseConv3d, SubMConv3d
from harness.sparse.selection import set_backend, sparse_conv_modules
from harness.sparse.tensor import SparseTensor

Triple = tuple[int, int, int]

__all__ = [
    "Asymm3dSpconv",
    "Cylinder3D",
    "CylinderFeatureGenerator",
    "PointRefinement",
    "ReconBlock",
    "ResBlock",
    "ResContextBlock",
    "UpBlock",
]

#: kernel-map mode names recorded in run metadata
LEGACY_MODE = "spconv1_shared_keys"
NOMINAL_MODE = "nominal"


def _subm(in_channels: int, out_channels: int, kernel: Triple, key: str, first_user_kernel: Triple, legacy: bool) -> SubMConv3d:
    """A bias-free submanifold conv of nominal ``kernel`` under the official ``key``.

    ``legacy``: spconv-1 sharing -- the key's kernel map has ``first_user_kernel`` geometry.
    Otherwise the nominal kernel under a per-geometry key (spconv 2.x rule).
    """
    if legacy:
        map_kernel = None if tuple(first_user_kernel) == tuple(kernel) else first_user_kernel
        return SubMConv3d(in_channels, out_channels, kernel, indice_key=key, bias=False, map_kernel_size=map_kernel)
    return SubMConv3d(in_channels, out_channels, kernel, indice_key=f"{key}_{''.join(map(str, kernel))}", bias=False)


def _act_bn(x: SparseTensor, act: nn.Module, bn: nn.Module) -> SparseTensor:
    """Official order: activation, then BatchNorm1d, on the features (new tensors, no in-place)."""
    return x.replace_feature(bn(act(x.feats)))


class CylinderFeatureGenerator(nn.Module):
    """Point MLP + per-voxel max-pool + compression (official ``cylinder_fea``).

    ``PPmodel``: BN1d(fea_dim) -> Linear(fea_dim, 64) -> BN -> ReLU -> Linear(64, 128) -> BN ->
    ReLU -> Linear(128, 256) -> BN -> ReLU -> Linear(256, out_fea_dim); ``fea_compression``:
    Linear(out_fea_dim, num_input_features) -> ReLU (xinge008/Cylinder3D
    ``network/cylinder_fea_generator.py``). The unused, parameter-free ``local_pool_op`` is omitted.
    """

    def __init__(self, fea_dim: int = 9, out_pt_fea_dim: int = 256, fea_compre: int = 16) -> None:
        super().__init__()
        self.PPmodel = nn.Sequential(
            nn.BatchNorm1d(fea_dim),
            nn.Linear(fea_dim, 64),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.Linear(64, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(),
            nn.Linear(128, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Linear(256, out_pt_fea_dim),
        )
        self.fea_compression = nn.Sequential(nn.Linear(out_pt_fea_dim, fea_compre), nn.ReLU())
        self.pool_dim = out_pt_fea_dim
        self.pt_fea_dim = fea_compre

    def forward(self, point_features: torch.Tensor, point_to_voxel: torch.Tensor, num_voxels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-point MLP features and compressed per-voxel features.

        Args:
            point_features: (N, fea_dim) cylindrical point features (all scans of the batch).
            point_to_voxel: (N,) int64 voxel row of each point; rows < 0 are left out of pooling.
            num_voxels: M.

        Returns:
            (N, out_fea_dim) ``PPmodel`` output per point and (M, num_input_features) voxel features
            (channel-wise max over the voxel's points, then ``fea_compression``; 0 for a voxel
            without points, torch_scatter's fill value).
        """
        processed = self.PPmodel(point_features)
        index, source = point_to_voxel, processed
        if bool((point_to_voxel < 0).any()):
            keep = point_to_voxel >= 0
            index, source = point_to_voxel[keep], processed[keep]
        index = index.long().view(-1, 1).expand(-1, source.shape[1])
        pooled = source.new_zeros((num_voxels, source.shape[1])).scatter_reduce(0, index, source, "amax", include_self=False)
        return processed, self.fea_compression(pooled)


class ResContextBlock(nn.Module):
    """Official ``ResContextBlock``: shortcut conv1 (1,3,3) -> conv1_2 (3,1,3); main conv2 (3,1,3) -> conv3 (1,3,3); sum.

    All four share key ``<key>bef``; first user conv1 -> spconv-1 geometry (1,3,3) everywhere.
    """

    def __init__(self, in_filters: int, out_filters: int, indice_key: str, legacy: bool) -> None:
        super().__init__()
        key, first = indice_key + "bef", (1, 3, 3)
        self.conv1 = _subm(in_filters, out_filters, (1, 3, 3), key, first, legacy)
        self.bn0 = nn.BatchNorm1d(out_filters)
        self.act1 = nn.LeakyReLU()
        self.conv1_2 = _subm(out_filters, out_filters, (3, 1, 3), key, first, legacy)
        self.bn0_2 = nn.BatchNorm1d(out_filters)
        self.act1_2 = nn.LeakyReLU()
        self.conv2 = _subm(in_filters, out_filters, (3, 1, 3), key, first, legacy)
        self.act2 = nn.LeakyReLU()
        self.bn1 = nn.BatchNorm1d(out_filters)
        self.conv3 = _subm(out_filters, out_filters, (1, 3, 3), key, first, legacy)
        self.act3 = nn.LeakyReLU()
        self.bn2 = nn.BatchNorm1d(out_filters)

    def forward(self, x: SparseTensor) -> SparseTensor:
        shortcut = _act_bn(self.conv1(x), self.act1, self.bn0)
        shortcut = _act_bn(self.conv1_2(shortcut), self.act1_2, self.bn0_2)
        res = _act_bn(self.conv2(x), self.act2, self.bn1)
        res = _act_bn(self.conv3(res), self.act3, self.bn2)
        return res.replace_feature(res.feats + shortcut.feats)


class ResBlock(nn.Module):
    """Official ``ResBlock``: shortcut conv1 (3,1,3) -> conv1_2 (1,3,3); main conv2 (1,3,3) -> conv3 (3,1,3); sum; pool.

    ``pool``: SparseConv3d 3x3x3, padding 1, stride 2 (``height_pooling``) or (2, 2, 1), key
    ``indice_key``. Returns ``(pooled, pre-pool sum)``. The subm convs share ``<key>bef``; first
    user conv1 -> spconv-1 geometry (3,1,3) everywhere.
    """

    def __init__(self, in_filters: int, out_filters: int, indice_key: str, height_pooling: bool, legacy: bool) -> None:
        super().__init__()
        key, first = indice_key + "bef", (3, 1, 3)
        self.conv1 = _subm(in_filters, out_filters, (3, 1, 3), key, first, legacy)
        self.act1 = nn.LeakyReLU()
        self.bn0 = nn.BatchNorm1d(out_filters)
        self.conv1_2 = _subm(out_filters, out_filters, (1, 3, 3), key, first, legacy)
        self.act1_2 = nn.LeakyReLU()
        self.bn0_2 = nn.BatchNorm1d(out_filters)
        self.conv2 = _subm(in_filters, out_filters, (1, 3, 3), key, first, legacy)
        self.act2 = nn.LeakyReLU()
        self.bn1 = nn.BatchNorm1d(out_filters)
        self.conv3 = _subm(out_filters, out_filters, (3, 1, 3), key, first, legacy)
        self.act3 = nn.LeakyReLU()
        self.bn2 = nn.BatchNorm1d(out_filters)
        stride = (2, 2, 2) if height_pooling else (2, 2, 1)
        self.pool = SparseConv3d(out_filters, out_filters, 3, stride=stride, padding=1, indice_key=indice_key, bias=False)

    def forward(self, x: SparseTensor) -> tuple[SparseTensor, SparseTensor]:
        shortcut = _act_bn(self.conv1(x), self.act1, self.bn0)
        shortcut = _act_bn(self.conv1_2(shortcut), self.act1_2, self.bn0_2)
        res = _act_bn(self.conv2(x), self.act2, self.bn1)
        res = _act_bn(self.conv3(res), self.act3, self.bn2)
        res = res.replace_feature(res.feats + shortcut.feats)
        return self.pool(res), res


class UpBlock(nn.Module):
    """Official ``UpBlock``: trans_dilao 3x3x3 (key ``<key>new_up``), up_subm (inverse of ``up_key``), + skip, conv1..3.

    conv1 (1,3,3), conv2 (3,1,3), conv3 (3,3,3) share key ``<key>``; first user conv1 -> spconv-1
    geometry (1,3,3) for all three, conv3 then uses weight slices 0..8 of its 27.
    """

    def __init__(self, in_filters: int, out_filters: int, indice_key: str, up_key: str, legacy: bool) -> None:
        super().__init__()
        first = (1, 3, 3)
        self.trans_dilao = SubMConv3d(in_filters, out_filters, 3, indice_key=indice_key + "new_up", bias=False)
        self.trans_act = nn.LeakyReLU()
        self.trans_bn = nn.BatchNorm1d(out_filters)
        self.conv1 = _subm(out_filters, out_filters, (1, 3, 3), indice_key, first, legacy)
        self.act1 = nn.LeakyReLU()
        self.bn1 = nn.BatchNorm1d(out_filters)
        self.conv2 = _subm(out_filters, out_filters, (3, 1, 3), indice_key, first, legacy)
        self.act2 = nn.LeakyReLU()
        self.bn2 = nn.BatchNorm1d(out_filters)
        self.conv3 = _subm(out_filters, out_filters, (3, 3, 3), indice_key, first, legacy)
        self.act3 = nn.LeakyReLU()
        self.bn3 = nn.BatchNorm1d(out_filters)
        self.up_subm = SparseInverseConv3d(out_filters, out_filters, 3, indice_key=up_key, bias=False)

    def forward(self, x: SparseTensor, skip: SparseTensor) -> SparseTensor:
        up = _act_bn(self.trans_dilao(x), self.trans_act, self.trans_bn)
        up = self.up_subm(up)
        up = up.replace_feature(up.feats + skip.feats)
        out = _act_bn(self.conv1(up), self.act1, self.bn1)
        out = _act_bn(self.conv2(out), self.act2, self.bn2)
        return _act_bn(self.conv3(out), self.act3, self.bn3)


class ReconBlock(nn.Module):
    """Official ``ReconBlock`` (DDCM): three convs (3,1,1), (1,3,1), (1,1,3) -> BN -> Sigmoid, summed, times input.

    They share key ``<key>bef``; first user conv1 -> spconv-1 geometry (3,1,1) for all three.
    Note the order here is BN then activation, unlike the other blocks (as official).
    """

    def __init__(self, in_filters: int, out_filters: int, indice_key: str, legacy: bool) -> None:
        super().__init__()
        key, first = indice_key + "bef", (3, 1, 1)
        self.conv1 = _subm(in_filters, out_filters, (3, 1, 1), key, first, legacy)
        self.bn0 = nn.BatchNorm1d(out_filters)
        self.act1 = nn.Sigmoid()
        self.conv1_2 = _subm(in_filters, out_filters, (1, 3, 1), key, first, legacy)
        self.bn0_2 = nn.BatchNorm1d(out_filters)
        self.act1_2 = nn.Sigmoid()
        self.conv1_3 = _subm(in_filters, out_filters, (1, 1, 3), key, first, legacy)
        self.bn0_3 = nn.BatchNorm1d(out_filters)
        self.act1_3 = nn.Sigmoid()

    def forward(self, x: SparseTensor) -> SparseTensor:
        a = self.act1(self.bn0(self.conv1(x).feats))
        b = self.act1_2(self.bn0_2(self.conv1_2(x).feats))
        c = self.act1_3(self.bn0_3(self.conv1_3(x).feats))
        return x.replace_feature((a + b + c) * x.feats)


class Asymm3dSpconv(nn.Module):
    """The asymmetric 3-D sparse UNet (official ``Asymm_3d_spconv``), sparse output.

    ``forward`` returns ``(features, logits)``: the 4c-channel ``cat(ReconNet(up1e), up1e)`` tensor
    and the (M, nclasses) voxel logits of the biased SubM 3x3x3 ``logits`` conv, both on the input
    voxels in input order (never densified).
    """

    def __init__(self, num_input_features: int = 16, init_size: int = 32, nclasses: int = 20, legacy: bool = True) -> None:
        super().__init__()
        c = init_size
        self.nclasses = nclasses
        self.downCntx = ResContextBlock(num_input_features, c, "pre", legacy)
        self.resBlock2 = ResBlock(c, 2 * c, "down2", True, legacy)
        self.resBlock3 = ResBlock(2 * c, 4 * c, "down3", True, legacy)
        self.resBlock4 = ResBlock(4 * c, 8 * c, "down4", False, legacy)
        self.resBlock5 = ResBlock(8 * c, 16 * c, "down5", False, legacy)
        self.upBlock0 = UpBlock(16 * c, 16 * c, "up0", "down5", legacy)
        self.upBlock1 = UpBlock(16 * c, 8 * c, "up1", "down4", legacy)
        self.upBlock2 = UpBlock(8 * c, 4 * c, "up2", "down3", legacy)
        self.upBlock3 = UpBlock(4 * c, 2 * c, "up3", "down2", legacy)
        self.ReconNet = ReconBlock(2 * c, 2 * c, "recon", legacy)
        self.logits = SubMConv3d(4 * c, nclasses, 3, indice_key="logit", bias=True)

    def forward(self, x: SparseTensor) -> tuple[SparseTensor, SparseTensor]:
        ret = self.downCntx(x)
        down1c, down1b = self.resBlock2(ret)
        down2c, down2b = self.resBlock3(down1c)
        down3c, down3b = self.resBlock4(down2c)
        down4c, down4b = self.resBlock5(down3c)
        up4e = self.upBlock0(down4c, down4b)
        up3e = self.upBlock1(up4e, down3b)
        up2e = self.upBlock2(up3e, down2b)
        up1e = self.upBlock3(up2e, down1b)
        up0e = self.ReconNet(up1e)
        features = up0e.replace_feature(torch.cat((up0e.feats, up1e.feats), 1))
        return features, self.logits(features)


class PointRefinement(nn.Module):
    """Point-wise refinement head (reading of xinge008/Cylinder3D#28, docs/readings.md#cylinder3d-point-head-design).

    ``mlp``: BN1d(voxel_channels + point_channels) -> Linear(., w0) -> BN -> ReLU -> Linear(w0, w1)
    -> BN -> ReLU -> Linear(w1, w2) -> BN -> ReLU with ``widths = (w0, w1, w2) = (256, 128, 64)``;
    ``classifier``: Linear(w2, num_classes).
    """

    def __init__(self, voxel_channels: int, point_channels: int, num_classes: int, widths: Sequence[int] = (256, 128, 64)) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths:
            raise ValueError("refinement widths must not be empty")
        self.voxel_channels = voxel_channels
        self.point_channels = point_channels
        in_channels = voxel_channels + point_channels
        layers: list[nn.Module] = [nn.BatchNorm1d(in_channels)]
        for width in widths:
            layers += [nn.Linear(in_channels, width), nn.BatchNorm1d(width), nn.ReLU()]
            in_channels = width
        self.mlp = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels, num_classes)

    def extract(self, voxel_features: torch.Tensor, point_features: torch.Tensor, point_to_voxel: torch.Tensor) -> torch.Tensor:
        """(M, Cv) voxel features, (N, Cp) point features, (N,) point -> voxel rows -> (N, w2) point features.

        Points with ``point_to_voxel < 0`` (no voxel) get zero voxel features.
        """
        gathered = _gather_rows(voxel_features, point_to_voxel)
        return self.mlp(torch.cat((gathered, point_features), dim=1))

    def forward(self, voxel_features: torch.Tensor, point_features: torch.Tensor, point_to_voxel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`extract`, then the classifier: returns ((N, classes) logits, (N, w2) features)."""
        features = self.extract(voxel_features, point_features, point_to_voxel)
        return self.classifier(features), features


def _gather_rows(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``values[rows]`` with zero rows where ``rows < 0``."""
    if bool((rows < 0).any()):
        valid = rows >= 0
        out = values.new_zeros((rows.shape[0], values.shape[1]))
        return out.index_put((valid.nonzero().squeeze(1),), values[rows[valid]])
    return values.index_select(0, rows.long())


class Cylinder3D(Backbone):
    """Cylinder3D backbone: ``BackboneInput`` (cylindrical voxelisation) -> point and voxel logits.

    Args:
        width: 1.0 = teacher (init_size 32), 0.5 = PVKD student (init_size 16); ``init_size =
            round(32 * width)`` unless ``init_size`` is given.
        num_classes: logits width (20 SemanticKITTI, 17 nuScenes).
        num_input_features: F, the 3-D net's input width (default 16: Cylinder3D and PVKD student
            configs; PVKD's committed teacher config uses 32).
        init_size: base width c of the 3-D network (overrides ``width``).
        out_fea_dim: ``PPmodel`` output width (256; the nuScenes student config uses 128).
        fea_dim: per-point input features (9 for the cylindrical features).
        legacy_spconv1_keys: emulate spconv 1.2.1 kernel-map sharing (docs/readings.md#cylinder3d-legacy-keys).
        point_refinement: add the point-wise refinement head (docs/readings.md#cylinder3d-point-head-design); otherwise point
            logits are the logits of each point's voxel.
        refinement_widths: hidden widths of the refinement MLP.
        sparse_backend: backend for every sparse conv (``"auto"``, ``"torchref"``, ``"spconv"``...).

    State dict: the official keys (``cylinder_3d_generator.*``, ``cylinder_3d_spconv_seg.*``; conv
    weights in KRSC) plus ``point_refinement.*``. Tap points: :attr:`tap_points`.
    """

    grid = "cylindrical"
    family = "Cylinder3D"
    label_offset = 0           # the head includes the ignored class 0 (20 SemanticKITTI / 17 nuScenes outputs)
    node_cell = (4, 4, 2)      # 480 x 360 x 32 cylindrical grid -> at most 120 x 90 x 16 graph nodes
    config_options = ("legacy_spconv1_keys", "num_input_features", "point_refinement")

    def __init__(
        self,
        width: float = 1.0,
        num_classes: int = 20,
        num_input_features: int | None = None,
        init_size: int | None = None,
        out_fea_dim: int = 256,
        fea_dim: int = 9,
        legacy_spconv1_keys: bool = True,
        point_refinement: bool = True,
        refinement_widths: Sequence[int] = (256, 128, 64),
        sparse_backend: str = "auto",
    ) -> None:
        super().__init__()
        if init_size is None:
            if width <= 0:
                raise ValueError(f"width must be positive, got {width}")
            init_size = int(round(32 * width))
        else:
            width = init_size / 32
        if init_size < 1:
            raise ValueError(f"init_size must be >= 1, got {init_size}")
        num_input_features = 16 if num_input_features is None else int(num_input_features)
        self.width = float(width)
        self.init_size = int(init_size)
        self.num_classes = int(num_classes)
        self.num_input_features = num_input_features
        self.out_fea_dim = int(out_fea_dim)
        self.fea_dim = int(fea_dim)
        self.legacy_spconv1_keys = bool(legacy_spconv1_keys)
        self.has_point_refinement = bool(point_refinement)
        self.refinement_widths = tuple(int(w) for w in refinement_widths)

        self.cylinder_3d_generator = CylinderFeatureGenerator(self.fea_dim, self.out_fea_dim, num_input_features)
        self.cylinder_3d_spconv_seg = Asymm3dSpconv(num_input_features, self.init_size, self.num_classes, self.legacy_spconv1_keys)
        self.point_refinement = (
            PointRefinement(4 * self.init_size, self.out_fea_dim, self.num_classes, self.refinement_widths)
            if self.has_point_refinement
            else None
        )
        # identity modules so hooks see plain (rows, channels) tensors; no parameters or buffers
        self.taps = nn.ModuleDict({name: TapPoint() for name in ("point_logits", "voxel_logits", "point_features", "voxel_features")})
        set_backend(self, sparse_backend)

    # ------------------------------------------------------------------ metadata
    @property
    def kernel_map_mode(self) -> str:
        """``"spconv1_shared_keys"`` (legacy emulation) or ``"nominal"``: write it into run metadata."""
        return LEGACY_MODE if self.legacy_spconv1_keys else NOMINAL_MODE

    @property
    def config(self) -> dict:
        """Constructor arguments that define the architecture: ``Cylinder3D(**model.config)`` rebuilds it.

        Record it with :attr:`kernel_map_mode` and :func:`harness.sparse.describe_backend` in run metadata.
        """
        return {
            "width": self.width,
            "num_classes": self.num_classes,
            "num_input_features": self.num_input_features,
            "init_size": self.init_size,
            "out_fea_dim": self.out_fea_dim,
            "fea_dim": self.fea_dim,
            "legacy_spconv1_keys": self.legacy_spconv1_keys,
            "point_refinement": self.has_point_refinement,
            "refinement_widths": list(self.refinement_widths),
        }

    @property
    def has_point_head(self) -> bool:
        """Point logits come from their own head (the refinement MLP), so they get their own loss."""
        return self.has_point_refinement

    @property
    def tap_points(self) -> dict[str, str]:
        """Tap name -> module path (forward hooks on these paths see the documented values).

        * ``point_logits`` (N, classes), ``voxel_logits`` (M, classes), ``point_features`` (N, 64
          with refinement, else the 4c voxel features of each point's voxel), ``voxel_features``
          (M, 4c): plain tensors through :class:`TapPoint` modules (a hook that returns a value
          replaces the tensor downstream; without refinement ``point_features`` feeds nothing);
        * ``encoder.i`` (i = 0..3): ``resBlock{i+2}.pool`` outputs, SparseTensor with 2c, 4c, 8c,
          16c channels at strides (2,2,2), (4,4,4), (8,8,4), (16,16,4);
        * ``decoder.i`` (i = 0..3): ``upBlock{i}`` outputs, SparseTensor with 16c, 8c, 4c, 2c
          channels at strides (8,8,4), (4,4,4), (2,2,2), (1,1,1).
        """
        taps = {name: f"taps.{name}" for name in ("point_logits", "voxel_logits", "point_features", "voxel_features")}
        for i in range(4):
            taps[f"encoder.{i}"] = f"cylinder_3d_spconv_seg.resBlock{i + 2}.pool"
        for i in range(4):
            taps[f"decoder.{i}"] = f"cylinder_3d_spconv_seg.upBlock{i}"
        return taps

    def official_parameters(self) -> int:
        """Parameters of the official network (generator + 3-D net), refinement head excluded."""
        return sum(p.numel() for p in self.cylinder_3d_generator.parameters()) + sum(
            p.numel() for p in self.cylinder_3d_spconv_seg.parameters()
        )

    def dead_parameters(self) -> int:
        """Weight entries never used by the forward under the current kernel-map mode (0 if nominal)."""
        dead = 0
        for _, conv in sparse_conv_modules(self):
            unused = math.prod(conv.kernel_size) - math.prod(conv.map_kernel_size)
            dead += unused * conv.in_channels * conv.out_channels
        return dead

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts per part, for reports (``official``: the counts of the released checkpoints)"""
        generator = sum(p.numel() for p in self.cylinder_3d_generator.parameters())
        sparse_net = sum(p.numel() for p in self.cylinder_3d_spconv_seg.parameters())
        refinement = sum(p.numel() for p in self.point_refinement.parameters()) if self.point_refinement is not None else 0
        dead = self.dead_parameters()
        return {
            "point_generator": generator,
            "sparse_net": sparse_net,
            "official": generator + sparse_net,
            "point_refinement": refinement,
            "total": generator + sparse_net + refinement,
            "dead_under_kernel_map_mode": dead,
            "effective": generator + sparse_net + refinement - dead,
        }

    def dense_macs(self, num_points: int, num_voxels: int) -> dict[str, int]:
        """Multiply-accumulates of the dense (Linear) layers for one input, by layer shapes.

        The sparse convs are counted from their kernel maps (:func:`harness.sparse.count_sparse_macs`,
        PVKD supplement §3: ``pairs x C_in x C_out``); this adds the per-point / per-voxel Linear
        layers, as the supplement's per-scan MACs count them. BatchNorm and activations are not counted.
        """
        linear_macs = lambda module: sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))  # noqa: E731
        counts = {
            "point_mlp": num_points * linear_macs(self.cylinder_3d_generator.PPmodel),
            "fea_compression": num_voxels * linear_macs(self.cylinder_3d_generator.fea_compression),
            "point_refinement": num_points * linear_macs(self.point_refinement) if self.point_refinement is not None else 0,
        }
        counts["total"] = sum(counts.values())
        return counts

    # ------------------------------------------------------------------ forward
    def forward(self, batch: BackboneInput) -> BackboneOutput:
        """Point logits (N, classes) for every input point and voxel logits (M, classes) for every voxel.

        ``batch.voxel_coords`` rows are the voxels (``[b, rho, phi, z]``), ``batch.point_to_voxel``
        maps points to them; pooling is per voxel, and voxels carry their scan index, so scans
        never mix (except through train-mode BatchNorm statistics, as in the original).
        """
        dtype = self.cylinder_3d_generator.PPmodel[0].weight.dtype
        point_to_voxel = batch.point_to_voxel.long()
        num_voxels = int(batch.voxel_coords.shape[0])
        point_feats, voxel_input = self.cylinder_3d_generator(batch.point_features.to(dtype), point_to_voxel, num_voxels)
        x = SparseTensor.from_coords(voxel_input, batch.voxel_coords, batch.spatial_shape, batch.batch_size)
        features, logits = self.cylinder_3d_spconv_seg(x)
        voxel_features = self.taps["voxel_features"](features.feats)
        voxel_logits = self.taps["voxel_logits"](logits.feats)
        if self.point_refinement is not None:
            point_features = self.taps["point_features"](self.point_refinement.extract(voxel_features, point_feats, point_to_voxel))
            point_logits = self.point_refinement.classifier(point_features)
        else:
            point_features = self.taps["point_features"](_gather_rows(voxel_features, point_to_voxel))
            point_logits = _gather_rows(voxel_logits, point_to_voxel)
        point_logits = self.taps["point_logits"](point_logits)
        return BackboneOutput(point_logits=point_logits, voxel_logits=voxel_logits)
