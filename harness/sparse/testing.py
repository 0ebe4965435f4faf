"""A small Cylinder3D-like sparse UNet block used by the sparse tests and benchmarks.

Layer pattern of xinge008/Cylinder3D ``network/segmentator_3d_asymm_spconv.py``
(``ResContextBlock``, ``ResBlock`` with a stride-2 ``SparseConv3d`` pool, ``UpBlock`` with
``SparseInverseConv3d`` and a skip connection, a biased 3x3x3 logits conv), reduced to one
level, with one ``indice_key`` per kernel shape (spconv 2.x semantics) and the original's
"conv -> LeakyReLU -> BatchNorm1d" order. It is a fixture, not one of the harness backbones.
"""

from __future__ import annotations

from torch import nn

from harness.sparse.conv import SparseConv3d, SparseInverseConv3d, SubMConv3d
from harness.sparse.tensor import SparseTensor


class _ActBn(nn.Module):
    """LeakyReLU then BatchNorm1d on the features (Cylinder3D's order)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.act = nn.LeakyReLU()
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace_feature(self.bn(self.act(x.feats)))


class ContextBlock(nn.Module):
    """Cylinder3D ``ResContextBlock``: (1,3,3)->(3,1,3) shortcut plus (3,1,3)->(1,3,3) main path."""

    def __init__(self, in_channels: int, out_channels: int, key: str) -> None:
        super().__init__()
        self.conv1 = SubMConv3d(in_channels, out_channels, (1, 3, 3), indice_key=f"{key}_133")
        self.bn0 = _ActBn(out_channels)
        self.conv1_2 = SubMConv3d(out_channels, out_channels, (3, 1, 3), indice_key=f"{key}_313")
        self.bn0_2 = _ActBn(out_channels)
        self.conv2 = SubMConv3d(in_channels, out_channels, (3, 1, 3), indice_key=f"{key}_313")
        self.bn1 = _ActBn(out_channels)
        self.conv3 = SubMConv3d(out_channels, out_channels, (1, 3, 3), indice_key=f"{key}_133")
        self.bn2 = _ActBn(out_channels)

    def forward(self, x: SparseTensor) -> SparseTensor:
        shortcut = self.bn0_2(self.conv1_2(self.bn0(self.conv1(x))))
        main = self.bn2(self.conv3(self.bn1(self.conv2(x))))
        return main.replace_feature(main.feats + shortcut.feats)


class DownBlock(nn.Module):
    """Cylinder3D ``ResBlock`` with pooling: returns (pooled, pre-pool skip)."""

    def __init__(self, in_channels: int, out_channels: int, key: str, pool_stride: tuple[int, int, int] = (2, 2, 2)) -> None:
        super().__init__()
        self.conv1 = SubMConv3d(in_channels, out_channels, (3, 1, 3), indice_key=f"{key}_313")
        self.bn0 = _ActBn(out_channels)
        self.conv1_2 = SubMConv3d(out_channels, out_channels, (1, 3, 3), indice_key=f"{key}_133")
        self.bn0_2 = _ActBn(out_channels)
        self.conv2 = SubMConv3d(in_channels, out_channels, (1, 3, 3), indice_key=f"{key}_133")
        self.bn1 = _ActBn(out_channels)
        self.conv3 = SubMConv3d(out_channels, out_channels, (3, 1, 3), indice_key=f"{key}_313")
        self.bn2 = _ActBn(out_channels)
        self.pool = SparseConv3d(out_channels, out_channels, 3, pool_stride, 1, indice_key=f"{key}_pool")

    def forward(self, x: SparseTensor) -> tuple[SparseTensor, SparseTensor]:
        shortcut = self.bn0_2(self.conv1_2(self.bn0(self.conv1(x))))
        main = self.bn2(self.conv3(self.bn1(self.conv2(x))))
        skip = main.replace_feature(main.feats + shortcut.feats)
        return self.pool(skip), skip


class UpBlock(nn.Module):
    """Cylinder3D ``UpBlock``: 3x3x3 conv, inverse conv of the pool, + skip, three convs."""

    def __init__(self, in_channels: int, out_channels: int, key: str, pool_key: str) -> None:
        super().__init__()
        self.trans_dilao = SubMConv3d(in_channels, out_channels, 3, indice_key=f"{key}_333_low")
        self.trans_bn = _ActBn(out_channels)
        self.up_subm = SparseInverseConv3d(out_channels, out_channels, 3, indice_key=pool_key)
        self.conv1 = SubMConv3d(out_channels, out_channels, (1, 3, 3), indice_key=f"{key}_133")
        self.bn1 = _ActBn(out_channels)
        self.conv2 = SubMConv3d(out_channels, out_channels, (3, 1, 3), indice_key=f"{key}_313")
        self.bn2 = _ActBn(out_channels)
        self.conv3 = SubMConv3d(out_channels, out_channels, 3, indice_key=f"{key}_333")
        self.bn3 = _ActBn(out_channels)

    def forward(self, x: SparseTensor, skip: SparseTensor) -> SparseTensor:
        up = self.up_subm(self.trans_bn(self.trans_dilao(x)))
        up = up.replace_feature(up.feats + skip.feats)
        return self.bn3(self.conv3(self.bn2(self.conv2(self.bn1(self.conv1(up))))))


class MiniCylinderUNet(nn.Module):
    """Context block -> down block (stride-2 pool) -> context block -> up block -> logits.

    Args:
        in_channels: input feature width.
        width: channels at full resolution; the half-resolution level has ``2 * width``.
        num_classes: logits width.
        pool_stride: stride of the pool (Cylinder3D uses (2, 2, 2) and (2, 2, 1)).
    """

    def __init__(self, in_channels: int = 32, width: int = 32, num_classes: int = 20, pool_stride: tuple[int, int, int] = (2, 2, 2)) -> None:
        super().__init__()
        self.context = ContextBlock(in_channels, width, "pre")
        self.down = DownBlock(width, 2 * width, "down", pool_stride)
        self.context_low = ContextBlock(2 * width, 2 * width, "low")
        self.up = UpBlock(2 * width, 2 * width, "up", pool_key="down_pool")
        self.logits = SubMConv3d(2 * width, num_classes, 3, indice_key="logit", bias=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        x = self.context(x)
        pooled, skip = self.down(x)
        low = self.context_low(pooled)
        return self.logits(self.up(low, skip))
