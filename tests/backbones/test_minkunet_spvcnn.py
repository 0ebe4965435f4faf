"""MinkUNet / SPVCNN (mit-han-lab/spvnas) on the harness sparse interface.

Independent references used here:

* the spvnas state_dict (names and torchsparse shapes) is transcribed below from
  ``core/models/semantic_kitti/{minkunet,spvcnn}.py`` -- it is not generated from our modules;
* torchsparse's convolution semantics (offset order: odd kernels x fastest, even kernels z
  fastest; output ``o`` reads input ``o * stride + offset``; transposed = the swapped map) are
  re-implemented by brute force over coordinate dictionaries in NumPy, and a whole spvnas forward
  (MinkUNet and SPVCNN, eval mode) is rebuilt from them and the spvnas-layout weights;
* trilinear weights are hand-computed numbers.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.backbones.base import BACKBONES, BackboneInput, collate_scans
from harness.backbones.minkunet import MinkUNet
from harness.backbones.spvcnn import SPVCNN, trilinear_corners, trilinear_weights
from harness.backbones.weights_spvnas import (
    convert_spvnas_state_dict,
    load_spvnas_checkpoint,
    to_spvnas_state_dict,
    torchsparse_kernel_to_krsc,
)
from harness.sparse import SparseConv3d, SparseInverseConv3d, SparseTensor, SubMConv3d, backend_available, set_backend

# ---------------------------------------------------------------------------------------------
# spvnas state_dict, transcribed from core/models/semantic_kitti/minkunet.py (torchsparse layout)
# ---------------------------------------------------------------------------------------------


def spvnas_shapes(cr: float, num_classes: int = 19) -> dict[str, tuple[int, ...]]:
    """Every state_dict entry of spvnas MinkUNet/SPVCNN(cr) with its torchsparse shape."""
    cs = [int(cr * x) for x in [32, 32, 64, 128, 256, 256, 128, 96, 96]]
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(prefix, cin, cout, ks):
        shapes[f"{prefix}.kernel"] = (cin, cout) if ks == 1 else (ks**3, cin, cout)

    def bn(prefix, c):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{leaf}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    def res(prefix, cin, cout):
        conv(f"{prefix}.net.0", cin, cout, 3)
        bn(f"{prefix}.net.1", cout)
        conv(f"{prefix}.net.3", cout, cout, 3)
        bn(f"{prefix}.net.4", cout)
        if cin != cout:
            conv(f"{prefix}.downsample.0", cin, cout, 1)
            bn(f"{prefix}.downsample.1", cout)

    conv("stem.0", 4, cs[0], 3)
    bn("stem.1", cs[0])
    conv("stem.3", cs[0], cs[0], 3)
    bn("stem.4", cs[0])
    for i in range(1, 5):
        conv(f"stage{i}.0.net.0", cs[i - 1], cs[i - 1], 2)
        bn(f"stage{i}.0.net.1", cs[i - 1])
        res(f"stage{i}.1", cs[i - 1], cs[i])
        res(f"stage{i}.2", cs[i], cs[i])
    ups = [(cs[4], cs[5], cs[3]), (cs[5], cs[6], cs[2]), (cs[6], cs[7], cs[1]), (cs[7], cs[8], cs[0])]
    for j, (cin, cout, skip) in enumerate(ups, start=1):
        conv(f"up{j}.0.net.0", cin, cout, 2)
        bn(f"up{j}.0.net.1", cout)
        res(f"up{j}.1.0", cout + skip, cout)
        res(f"up{j}.1.1", cout, cout)
    shapes["classifier.0.weight"] = (num_classes, cs[8])
    shapes["classifier.0.bias"] = (num_classes,)
    for i, (cin, cout) in enumerate([(cs[0], cs[4]), (cs[4], cs[6]), (cs[6], cs[8])]):
        shapes[f"point_transforms.{i}.0.weight"] = (cout, cin)
        shapes[f"point_transforms.{i}.0.bias"] = (cout,)
        bn(f"point_transforms.{i}.1", cout)
    return shapes


def random_spvnas_state_dict(cr: float, seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Random values in the spvnas layout; BN statistics positive and away from 0/1 so they matter."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in spvnas_shapes(cr).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g, dtype=dtype) + 0.5
        elif key.endswith("running_mean"):
            sd[key] = 0.1 * torch.randn(shape, generator=g, dtype=dtype)
        elif key.endswith(".kernel"):
            fan_in = shape[-2] * (shape[0] if len(shape) == 3 else 1)
            sd[key] = torch.randn(shape, generator=g, dtype=dtype) / fan_in**0.5
        elif ".1.weight" in key or key.endswith("net.4.weight") or key.endswith("stem.4.weight"):
            sd[key] = 1.0 + 0.2 * torch.randn(shape, generator=g, dtype=dtype)
        else:
            sd[key] = 0.1 * torch.randn(shape, generator=g, dtype=dtype)
    return sd


def _learnable(sd: dict[str, tuple[int, ...]]) -> int:
    return sum(int(np.prod(s)) for k, s in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


# ---------------------------------------------------------------------------------------------
# brute-force torchsparse-convention convolutions (NumPy, coordinate dictionaries)
# ---------------------------------------------------------------------------------------------


def _offset_odd(k: int) -> tuple[int, int, int]:  # k3: index = (dx+1) + 3 (dy+1) + 9 (dz+1)
    return (k % 3 - 1, (k // 3) % 3 - 1, k // 9 - 1)


def _offset_even(k: int) -> tuple[int, int, int]:  # k2: index = 4 dx + 2 dy + dz
    return (k // 4, (k // 2) % 2, k % 2)


def ts_subm(coords: list[tuple], feats: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """torchsparse stride-1 conv (k3 or k1): output on the input coordinates."""
    if kernel.ndim == 2:
        return feats @ kernel
    row = {c: i for i, c in enumerate(coords)}
    out = np.zeros((len(coords), kernel.shape[2]))
    for k in range(27):
        dx, dy, dz = _offset_odd(k)
        for i, (b, x, y, z) in enumerate(coords):
            j = row.get((b, x + dx, y + dy, z + dz))
            if j is not None:
                out[i] += feats[j] @ kernel[k]
    return out


def ts_down(coords: list[tuple], feats: np.ndarray, kernel: np.ndarray) -> tuple[list[tuple], np.ndarray]:
    """torchsparse conv k2 s2: outputs = unique floor(c / 2), output o reads input 2 o + offset."""
    row = {c: i for i, c in enumerate(coords)}
    out_coords = sorted({(b, x // 2, y // 2, z // 2) for b, x, y, z in coords})
    out = np.zeros((len(out_coords), kernel.shape[2]))
    for i, (b, x, y, z) in enumerate(out_coords):
        for k in range(8):
            dx, dy, dz = _offset_even(k)
            j = row.get((b, 2 * x + dx, 2 * y + dy, 2 * z + dz))
            if j is not None:
                out[i] += feats[j] @ kernel[k]
    return out_coords, out


def ts_up(coarse: list[tuple], feats: np.ndarray, kernel: np.ndarray, fine: list[tuple]) -> np.ndarray:
    """torchsparse transposed conv k2 s2 back onto ``fine`` (the swapped downsampling map)."""
    row = {c: i for i, c in enumerate(coarse)}
    out = np.zeros((len(fine), kernel.shape[2]))
    for i, (b, x, y, z) in enumerate(fine):
        dx, dy, dz = x % 2, y % 2, z % 2
        out[i] = feats[row[(b, x // 2, y // 2, z // 2)]] @ kernel[4 * dx + 2 * dy + dz]
    return out


class SpvnasReference:
    """spvnas MinkUNet / SPVCNN forward in eval mode from an spvnas-layout state_dict (NumPy float64)."""

    def __init__(self, sd: dict[str, torch.Tensor]) -> None:
        self.p = {k: v.double().numpy() for k, v in sd.items()}

    def bn(self, prefix: str, x: np.ndarray) -> np.ndarray:
        p = self.p
        return (x - p[f"{prefix}.running_mean"]) / np.sqrt(p[f"{prefix}.running_var"] + 1e-5) * p[f"{prefix}.weight"] + p[f"{prefix}.bias"]

    def res(self, prefix: str, coords, x):
        h = np.maximum(self.bn(f"{prefix}.net.1", ts_subm(coords, x, self.p[f"{prefix}.net.0.kernel"])), 0)
        h = self.bn(f"{prefix}.net.4", ts_subm(coords, h, self.p[f"{prefix}.net.3.kernel"]))
        if f"{prefix}.downsample.0.kernel" in self.p:
            x = self.bn(f"{prefix}.downsample.1", ts_subm(coords, x, self.p[f"{prefix}.downsample.0.kernel"]))
        return np.maximum(h + x, 0)

    def stem(self, coords, x):
        x = np.maximum(self.bn("stem.1", ts_subm(coords, x, self.p["stem.0.kernel"])), 0)
        return np.maximum(self.bn("stem.4", ts_subm(coords, x, self.p["stem.3.kernel"])), 0)

    def stage(self, i, coords, x):
        c, h = ts_down(coords, x, self.p[f"stage{i}.0.net.0.kernel"])
        h = np.maximum(self.bn(f"stage{i}.0.net.1", h), 0)
        return c, self.res(f"stage{i}.2", c, self.res(f"stage{i}.1", c, h))

    def up(self, j, coarse, x, fine, skip):
        h = np.maximum(self.bn(f"up{j}.0.net.1", ts_up(coarse, x, self.p[f"up{j}.0.net.0.kernel"], fine)), 0)
        h = np.concatenate([h, skip], axis=1)
        return self.res(f"up{j}.1.1", fine, self.res(f"up{j}.1.0", fine, h))

    def linear_bn_relu(self, i, x):
        p = self.p
        return np.maximum(self.bn(f"point_transforms.{i}.1", x @ p[f"point_transforms.{i}.0.weight"].T + p[f"point_transforms.{i}.0.bias"]), 0)

    def classify(self, x):
        return x @ self.p["classifier.0.weight"].T + self.p["classifier.0.bias"]

    def minkunet(self, coords, feats):
        c0 = coords
        x0 = self.stem(c0, feats)
        c1, x1 = self.stage(1, c0, x0)
        c2, x2 = self.stage(2, c1, x1)
        c3, x3 = self.stage(3, c2, x2)
        c4, x4 = self.stage(4, c3, x3)
        y1 = self.up(1, c4, x4, c3, x3)
        y2 = self.up(2, c3, y1, c2, x2)
        y3 = self.up(3, c2, y2, c1, x1)
        y4 = self.up(4, c1, y3, c0, x0)
        return self.classify(y4)

    @staticmethod
    def devox(coords_s, feats, pts, stride):
        """calc_ti_weights (float32 weights, missing corners 0, / (sum + 1e-8)) + spdevoxelize."""
        row = {c: i for i, c in enumerate(coords_s)}
        out = np.zeros((len(pts), feats.shape[1]))
        for i, (b, *xyz) in enumerate(pts):
            p = np.asarray(xyz, dtype=np.float32) / np.float32(stride)
            f = np.floor(p)
            w = np.zeros(8, dtype=np.float32)
            rows = []
            for k in range(8):
                d = np.array(_offset_even(k))
                corner = (b, *(int(v) for v in f + d))
                rows.append(row.get(corner))
                factors = np.where(d == 1, p - f, f + 1 - p).astype(np.float32)
                w[k] = 0 if rows[-1] is None else factors[0] * factors[1] * factors[2]
            w = w / (w.sum() + np.float32(1e-8))
            for k in range(8):
                if rows[k] is not None:
                    out[i] += float(w[k]) * feats[rows[k]]
        return out

    @staticmethod
    def p2v(coords_s, pts, feats, stride):
        row = {c: i for i, c in enumerate(coords_s)}
        total = np.zeros((len(coords_s), feats.shape[1]))
        count = np.zeros(len(coords_s))
        for i, (b, *xyz) in enumerate(pts):
            j = row[(b, *(int(v) for v in np.floor(np.asarray(xyz, dtype=np.float32) / np.float32(stride))))]
            total[j] += feats[i]
            count[j] += 1
        return total / count[:, None]

    def spvcnn(self, coords, feats):
        # the points are the voxel samples at float32 (c * 0.05) / 0.05 (spvnas initial_voxelize, pres = vres)
        pos = (np.asarray(coords, dtype=np.float32)[:, 1:] * np.float32(0.05)) / np.float32(0.05)
        pts = [(c[0], *p) for c, p in zip(coords, pos)]
        c0 = sorted(coords)
        order = [coords.index(c) for c in c0]
        x0 = self.stem(c0, feats[order])
        z0 = self.devox(c0, x0, pts, 1)
        c1, x1 = self.stage(1, c0, self.p2v(c0, pts, z0, 1))
        c2, x2 = self.stage(2, c1, x1)
        c3, x3 = self.stage(3, c2, x2)
        c4, x4 = self.stage(4, c3, x3)
        z1 = self.devox(c4, x4, pts, 16) + self.linear_bn_relu(0, z0)
        y1 = self.up(1, c4, self.p2v(c4, pts, z1, 16), c3, x3)
        y2 = self.up(2, c3, y1, c2, x2)
        z2 = self.devox(c2, y2, pts, 4) + self.linear_bn_relu(1, z1)
        y3 = self.up(3, c2, self.p2v(c2, pts, z2, 4), c1, x1)
        y4 = self.up(4, c1, y3, c0, x0)
        z3 = self.devox(c0, y4, pts, 1) + self.linear_bn_relu(2, z2)
        return self.classify(z3)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------


def synthetic_batch(num_voxels: int, box: int, batch_size: int = 2, seed: int = 0) -> BackboneInput:
    """Random unique voxels (sorted per scan), one point per voxel, random features."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(batch_size):
        cells = np.unique(rng.integers(0, box, (num_voxels, 3)), axis=0)
        rows.append(np.c_[np.full(len(cells), b), cells])
    coords = torch.from_numpy(np.concatenate(rows).astype(np.int32))
    m = coords.shape[0]
    feats = torch.from_numpy(rng.normal(size=(m, 4)).astype(np.float32))
    return BackboneInput(point_features=feats, point_coords=coords, point_to_voxel=torch.arange(m), voxel_coords=coords,
                         spatial_shape=(box, box, box), batch_size=batch_size, point_batch=coords[:, 0].long(),
                         voxel_features=feats)


def real_crop(kitti_root, radius: float):
    from harness.data.semantickitti import read_points
    from harness.backbones.base import voxelize_for_backbone

    points = read_points(kitti_root / "sequences" / "00" / "velodyne" / "000000.bin")
    near = points[np.linalg.norm(points[:, :3], axis=1) < radius]
    return collate_scans([voxelize_for_backbone("minkunet", near)])


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _single_intra_op_thread():
    """One torch thread for this module: on the shared 2-core box, OpenMP workers contending with other
    processes made these CPU forwards 5-50x slower (measured: 228 s vs 23 s for this file)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("cls,width,total,used", [
    (MinkUNet, 1.0, 21_778_003, 21_723_315),
    (MinkUNet, 0.5, 5_449_267, 5_435_235),
    (SPVCNN, 1.0, 21_778_003, 21_778_003),
    (SPVCNN, 0.5, 5_449_267, 5_449_267),
])
def test_parameter_counts(cls, width, total, used):
    model = cls(width)
    assert sum(p.numel() for p in model.parameters()) == total
    assert model.forward_parameter_count() == used
    assert _learnable(spvnas_shapes(width)) == total  # the transcription agrees with the official count
    assert BACKBONES.get("minkunet" if cls is MinkUNet else "spvcnn") is cls


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_official_state_dict_loads_strict(width):
    shapes = spvnas_shapes(width)
    if width == 1.0:  # examples from mit-han-lab/spvnas (torchsparse layer shapes)
        assert shapes["stem.0.kernel"] == (27, 4, 32)
        assert shapes["stage1.0.net.0.kernel"] == (8, 32, 32)
        assert shapes["up1.0.net.0.kernel"] == (8, 256, 256)
        assert shapes["up1.1.0.net.0.kernel"] == (27, 384, 256)
        assert shapes["up1.1.0.downsample.0.kernel"] == (384, 256)
        assert shapes["stage2.1.downsample.0.kernel"] == (32, 64)
        assert shapes["classifier.0.weight"] == (19, 96)
    sd = random_spvnas_state_dict(width, dtype=torch.float32)
    for cls in (MinkUNet, SPVCNN):
        model = cls(width)
        model.load_state_dict(convert_spvnas_state_dict(sd, model), strict=True)
        assert model.state_dict()["up1.1.0.downsample.0.weight"].shape[1:4] == (1, 1, 1)
        back = to_spvnas_state_dict(model)  # round trip to the torchsparse layout
        assert back.keys() == sd.keys()
        assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_load_spvnas_checkpoint_file(tmp_path):
    sd = random_spvnas_state_dict(0.5, seed=3, dtype=torch.float32)
    path = tmp_path / "init"
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 15}, path)
    model = load_spvnas_checkpoint(MinkUNet(0.5), path)
    assert torch.equal(model.stem[0].weight, torchsparse_kernel_to_krsc(sd["stem.0.kernel"], 3))
    bad = dict(sd)
    bad.pop("classifier.0.bias")
    torch.save({"model": bad}, path)
    with pytest.raises(RuntimeError, match="classifier.0.bias"):
        load_spvnas_checkpoint(MinkUNet(0.5), path)


def _tiny_tensor(seed: int, cin: int):
    rng = np.random.default_rng(seed)
    cells = np.unique(rng.integers(0, 7, (90, 3)), axis=0)
    coords = [(0, *map(int, c)) for c in cells] + [(1, *map(int, c)) for c in cells[::3]]
    feats = rng.normal(size=(len(coords), cin))
    st = SparseTensor.from_coords(torch.tensor(feats), torch.tensor(coords, dtype=torch.int32), (8, 8, 8), 2)
    return coords, feats, st


@pytest.mark.parametrize("ks", [3, 1])
def test_kernel_offset_order_stride1(ks):
    coords, feats, st = _tiny_tensor(0, 5)
    kernel = np.random.default_rng(1).normal(size=(5, 6) if ks == 1 else (27, 5, 6))
    expected = ts_subm(coords, feats, kernel)
    conv = SubMConv3d(5, 6, ks).double()
    with torch.no_grad():
        conv.weight.copy_(torchsparse_kernel_to_krsc(torch.tensor(kernel), ks))
    out = conv(st)
    np.testing.assert_allclose(out.feats.detach().numpy(), expected, atol=1e-12)
    if ks == 3:  # the reordering matters: a plain reshape computes something else
        with torch.no_grad():
            conv.weight.copy_(torch.tensor(kernel).permute(2, 0, 1).reshape(6, 3, 3, 3, 5))
        assert np.abs(conv(st).feats.detach().numpy() - expected).max() > 1e-3


def test_kernel_offset_order_k2_stride2_and_transposed():
    coords, feats, st = _tiny_tensor(2, 5)
    rng = np.random.default_rng(3)
    k_down, k_up = rng.normal(size=(8, 5, 6)), rng.normal(size=(8, 6, 4))
    coarse, expected = ts_down(coords, feats, k_down)
    expected_up = ts_up(coarse, expected, k_up, coords)
    down = SparseConv3d(5, 6, 2, 2, 0, indice_key="d").double()
    up = SparseInverseConv3d(6, 4, 2, indice_key="d").double()
    with torch.no_grad():
        down.weight.copy_(torchsparse_kernel_to_krsc(torch.tensor(k_down), 2))
        up.weight.copy_(torchsparse_kernel_to_krsc(torch.tensor(k_up), 2))
    y = down(st)
    got = {tuple(c): f for c, f in zip(y.coords.tolist(), y.feats.detach().numpy())}
    assert sorted(got) == coarse
    np.testing.assert_allclose(np.stack([got[c] for c in coarse]), expected, atol=1e-12)
    z = up(y)
    assert z.coords.tolist() == [list(c) for c in coords]
    np.testing.assert_allclose(z.feats.detach().numpy(), expected_up, atol=1e-12)


@pytest.mark.parametrize("cls", [MinkUNet, SPVCNN])
def test_whole_network_equals_bruteforce_spvnas(cls):
    """Random spvnas-layout weights -> converter -> our net (eval, float64) == brute-force spvnas forward."""
    batch = synthetic_batch(70, 20, batch_size=2, seed=5)
    sd = random_spvnas_state_dict(0.5, seed=11)
    model = cls(0.5).double().eval()
    model.load_state_dict(convert_spvnas_state_dict(sd, model), strict=True)
    with torch.no_grad():
        out = model(batch)
    coords = [tuple(c) for c in batch.voxel_coords.tolist()]
    ref = SpvnasReference(sd)
    feats = batch.voxel_features.double().numpy()
    expected = ref.minkunet(coords, feats) if cls is MinkUNet else ref.spvcnn(coords, feats)
    assert out.voxel_logits.shape == (len(coords), 19)
    scale = np.abs(expected).max()
    assert scale > 0.1
    np.testing.assert_allclose(out.voxel_logits.numpy(), expected, atol=1e-9 * scale, rtol=0)
    np.testing.assert_array_equal(out.point_logits.numpy(), out.voxel_logits.numpy())


def test_trilinear_weights_hand_computed_with_missing_corner():
    # point at input cell (5, 6, 3), level stride 4: p = (1.25, 1.5, 0.75), floor (1, 1, 0)
    # factors: x (0.75, 0.25), y (0.5, 0.5), z (0.25, 0.75); corner order 4 dx + 2 dy + dz
    raw = [0.09375, 0.28125, 0.09375, 0.28125, 0.03125, 0.09375, 0.03125, 0.09375]
    present = [(0, 1, 1, 0), (0, 1, 1, 1), (0, 1, 2, 0), (0, 1, 2, 1), (0, 2, 1, 0), (0, 2, 2, 0), (0, 2, 2, 1), (0, 7, 7, 7)]
    # corner (dx, dy, dz) = (1, 0, 1) -> cell (2, 1, 1) is missing
    coords = torch.tensor(present, dtype=torch.int32)
    feats = torch.arange(1.0, 9.0, dtype=torch.float64).unsqueeze(1)  # row r has value r + 1
    x = SparseTensor(feats, coords, (8, 8, 8), 1, stride=(4, 4, 4))
    rows, weights = trilinear_corners(x, torch.tensor([[5.0, 6.0, 3.0]]), torch.tensor([0]))
    assert rows.tolist() == [[0, 1, 2, 3, 4, -1, 5, 6]]
    expected = np.array(raw) / (1.0 - 0.09375)
    expected[5] = 0.0
    np.testing.assert_allclose(weights[0].numpy(), expected, rtol=1e-6)
    # value = sum w * (row + 1) over present corners
    hand = (0.09375 * 1 + 0.28125 * 2 + 0.09375 * 3 + 0.28125 * 4 + 0.03125 * 5 + 0.03125 * 6 + 0.09375 * 7) / 0.90625
    from harness.backbones.spvcnn import devoxelize

    np.testing.assert_allclose(devoxelize(feats, rows, weights).item(), hand, rtol=1e-6)
    # all corners present: plain trilinear weights, summing to 1; a point on a voxel: weight 1 on it
    w_full = trilinear_weights(torch.tensor([[1.25, 1.5, 0.75]]), torch.zeros(1, 8, dtype=torch.long))
    np.testing.assert_allclose(w_full[0].numpy(), raw, rtol=1e-6)
    w_on = trilinear_weights(torch.tensor([[3.0, 4.0, 5.0]]), torch.zeros(1, 8, dtype=torch.long))
    np.testing.assert_allclose(w_on[0].numpy(), [1, 0, 0, 0, 0, 0, 0, 0], atol=1e-7)


def test_devoxelize_gradient():
    from harness.backbones.spvcnn import devoxelize

    feats = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([[0, 1, -1, 2, 3, -1, 4, 5], [5, -1, -1, -1, 0, 0, 1, 2]])
    weights = torch.rand(2, 8)
    assert torch.autograd.gradcheck(lambda f: devoxelize(f, rows, weights), (feats,))


@pytest.mark.real_data
@pytest.mark.parametrize("cls,width", [(MinkUNet, 1.0), (MinkUNet, 0.5), (SPVCNN, 1.0), (SPVCNN, 0.5)])
def test_forward_backward_real_crop(kitti_root, cls, width):
    batch = real_crop(kitti_root, 5.0)  # seq 00 frame 0, points within 5 m
    n, m = batch.point_features.shape[0], batch.voxel_coords.shape[0]
    assert 1000 < m < 8000
    torch.manual_seed(0)
    model = cls(width).train()
    out = model(batch)
    assert out.point_logits.shape == (n, 19) and out.voxel_logits.shape == (m, 19)
    assert torch.isfinite(out.point_logits).all() and torch.isfinite(out.voxel_logits).all()
    torch.testing.assert_close(out.point_logits, out.voxel_logits[batch.point_to_voxel])
    probe = torch.randn(out.voxel_logits.shape, generator=torch.Generator().manual_seed(1))
    ((out.voxel_logits * probe).sum() + out.point_logits.square().mean()).backward()
    unused = {name for name, _ in model.named_parameters() if name.startswith("point_transforms.")} if cls is MinkUNet else set()
    for name, p in model.named_parameters():
        if name in unused:
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert sum(p.numel() for n_, p in model.named_parameters() if p.grad is not None) == model.forward_parameter_count()


def test_dropped_voxels_give_zero_point_logits():
    batch = synthetic_batch(300, 24, batch_size=1, seed=2)
    m = batch.voxel_coords.shape[0]
    p2v = torch.cat([torch.arange(m), torch.tensor([-1, 3, -1])])
    batch.point_to_voxel = p2v
    batch.point_features = batch.voxel_features[p2v.clamp(min=0)]
    out = SPVCNN(0.5).eval()(batch)
    assert out.point_logits.shape == (m + 3, 19)
    assert (out.point_logits[m] == 0).all() and (out.point_logits[m + 2] == 0).all()
    assert torch.equal(out.point_logits[m + 1], out.voxel_logits[3])


@pytest.mark.parametrize("cls", [MinkUNet, SPVCNN])
def test_tap_points_shapes(cls):
    batch = synthetic_batch(400, 32, batch_size=2, seed=4)
    batch.point_to_voxel = torch.cat([batch.point_to_voxel, torch.tensor([0, 1])])  # N != M
    n, m = batch.point_to_voxel.shape[0], batch.voxel_coords.shape[0]
    model = cls(0.5, num_classes=20, label_offset=0)
    cs = model.channels
    captured = {}
    modules = dict(model.named_modules())
    handles = [modules[path].register_forward_hook(lambda mod, inp, out, name=name: captured.__setitem__(name, out))
               for name, path in model.tap_points.items()]
    out = model(batch)
    for h in handles:
        h.remove()
    assert set(captured) == {"point_logits", "voxel_logits", "point_features", "voxel_features",
                             *(f"encoder.{i}" for i in range(4)), *(f"decoder.{i}" for i in range(4))}
    assert captured["point_logits"].shape == (n, 20) and captured["voxel_logits"].shape == (m, 20)
    assert captured["point_features"].shape == (n, cs[8]) and captured["voxel_features"].shape == (m, cs[8])
    assert captured["point_logits"] is out.point_logits and captured["voxel_logits"] is out.voxel_logits
    for i in range(4):
        enc, dec = captured[f"encoder.{i}"], captured[f"decoder.{i}"]
        assert isinstance(enc, SparseTensor) and enc.num_channels == cs[i + 1] and enc.stride == (2 ** (i + 1),) * 3
        assert isinstance(dec, SparseTensor) and dec.num_channels == cs[5 + i] and dec.stride == (2 ** (3 - i),) * 3
    assert torch.equal(captured["decoder.3"].coords, batch.voxel_coords)


@pytest.mark.skipif(not backend_available("spconv"), reason="spconv-cu126==2.3.8 not importable: torchref-vs-spconv check skipped")
@pytest.mark.parametrize("cls", [MinkUNet, SPVCNN])
def test_torchref_equals_spconv_float64(cls):
    batch = synthetic_batch(500, 32, batch_size=2, seed=7)
    results = {}
    torch.manual_seed(0)
    model = cls(0.5).double().train()
    model.dropout.eval()  # BN in training mode; no dropout (its mask would follow backend-specific row orders)
    probe = torch.randn(batch.voxel_coords.shape[0], 19, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for backend in ("torchref", "spconv"):
        set_backend(model, backend)
        model.zero_grad(set_to_none=True)
        out = model(batch)
        (out.voxel_logits * probe).sum().backward()
        results[backend] = (out.voxel_logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    ref, sp = results["torchref"], results["spconv"]
    assert (ref[0] - sp[0]).abs().max().item() <= 1e-10
    assert ref[1].keys() == sp[1].keys() and len(ref[1]) > 100
    worst = max(ref[1], key=lambda k: (ref[1][k] - sp[1][k]).abs().max().item())
    assert (ref[1][worst] - sp[1][worst]).abs().max().item() <= 1e-10, worst
