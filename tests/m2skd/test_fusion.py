"""M2SKD hard-class instance fusion (``harness.data.fusion``) on real and generated SemanticKITTI."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from harness.data.fusion import HARD_CLASSES_SEMANTICKITTI, fuse_hard_instances, sequence_poses
from harness.data.generate import generate_semantickitti
from harness.data.generate.scene import build_scene
from harness.data.generate.semantickitti import FRAME_PERIOD
from harness.data.labelmap import load_label_map
from harness.data.semantickitti import SemanticKITTI
from harness.errors import InputError

KITTI = load_label_map("semantickitti")
CAR, MOTORCYCLIST = KITTI.class_names.index("car"), KITTI.class_names.index("motorcyclist")

GEN_SEED, GEN_SCALE, GEN_SCANS = 4, 0.5, 5


def median_gap(moved: np.ndarray, target: np.ndarray) -> float:
    """Median nearest-neighbour distance [m] from each moved point to the target points."""
    return float(np.median(cKDTree(target).query(moved)[0]))


def pooled_gap(fused, past_xyz_of=None) -> float:
    """Median NN gap of all fused points to the current-frame points of their own (label, instance).

    ``past_xyz_of(inst, label)`` replaces the fused points by other coordinates (e.g. untransformed)."""
    n = fused.num_original
    gaps = []
    for label, inst in np.unique(np.c_[fused.labels[n:], fused.instance[n:]], axis=0):
        cur = (fused.labels[:n] == label) & (fused.instance[:n] == inst)
        moved = fused.points[n:][(fused.labels[n:] == label) & (fused.instance[n:] == inst), :3]
        if past_xyz_of is not None:
            moved = past_xyz_of(inst, label)
        gaps.append(cKDTree(fused.points[:n][cur, :3]).query(moved)[0])
    return float(np.median(np.concatenate(gaps)))


def test_hard_classes_are_the_thing_classes_without_car():
    names = [KITTI.class_names[i] for i in HARD_CLASSES_SEMANTICKITTI]
    assert names == ["bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist"]


# ---------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real_seq00(kitti_root: Path) -> SemanticKITTI:
    return SemanticKITTI(kitti_root, sequences=[0])


def test_real_frame0_has_nothing_to_fuse(real_seq00):
    fused = fuse_hard_instances(real_seq00, 0, num_past=4)
    scan = real_seq00[0]
    assert fused.num_fused == 0 and fused.fused_frames == ()
    np.testing.assert_array_equal(fused.points, scan.points)
    np.testing.assert_array_equal(fused.labels, scan.labels)


def test_real_moving_motorcyclist_needs_centroid_alignment(real_seq00):
    """Frames 0/1 hold one hard-class instance: a moving motorcyclist (raw 255 -> 8, instance 1, 88/73 points).

    Measured: median NN gap to its frame-1 points 0.25 m untransformed, 0.81 m after the pose transform
    (it moves with the traffic, so removing the ego motion moves it away) and 0.09 m with the authors'
    centroid offset."""
    prev, cur = real_seq00[0], real_seq00[1]
    assert set(np.unique(prev.raw_semantic[np.isin(prev.labels, HARD_CLASSES_SEMANTICKITTI)])) == {255}
    by_pose = fuse_hard_instances(real_seq00, 1, num_past=4, align="pose")
    by_centroid = fuse_hard_instances(real_seq00, 1, num_past=4, align="centroid")
    n = cur.points.shape[0]
    for fused in (by_pose, by_centroid):
        assert fused.num_original == n and fused.num_fused == 88 and fused.fused_frames == (0,)
        np.testing.assert_array_equal(fused.points[:n], cur.points)
        assert set(fused.labels[n:]) == {MOTORCYCLIST} and set(fused.instance[n:]) == {1}
        assert set(fused.source_frame[n:]) == {0} and set(fused.source_frame[:n]) == {1}
    target = cur.points[(cur.labels == MOTORCYCLIST) & (cur.instance == 1), :3]
    raw = prev.points[(prev.labels == MOTORCYCLIST) & (prev.instance == 1), :3]
    gap_raw, gap_pose = median_gap(raw, target), median_gap(by_pose.points[n:, :3], target)
    gap_centroid = median_gap(by_centroid.points[n:, :3], target)
    assert gap_centroid < 0.15, gap_centroid                      # measured 0.092 m
    assert gap_centroid < gap_raw / 2 and gap_centroid < gap_pose / 5
    assert gap_pose > 0.5, gap_pose                               # measured 0.81 m: pose fusion smears movers


def test_real_poses_align_static_instances(real_seq00):
    """The pose transform itself, on real data: frame 0's static cars (raw 10, 13 instances) fused into frame 1
    land 0.044 m (median NN gap) from frame 1's points of the same instance, 0.41 m without the transform."""
    prev = real_seq00[0]
    fused = fuse_hard_instances(real_seq00, 1, num_past=1, hard_classes=(CAR,), align="pose")
    assert fused.num_fused == int(((prev.labels == CAR) & (prev.instance > 0)).sum())
    gap = pooled_gap(fused)
    raw = pooled_gap(fused, lambda inst, label: prev.points[(prev.instance == inst) & (prev.labels == label), :3])
    assert gap < 0.08, gap
    assert gap < raw / 5, (gap, raw)


# ---------------------------------------------------------------------------------------------- generated data
@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[SemanticKITTI, dict[int, float]]:
    """5 generated scans of sequence 00 and each thing instance's world motion over them [m].

    The motion comes from the generator's own scene (rebuilt with the seeding of
    ``generate_semantickitti``), so "static" and "moving" are ground truth, not inferred from poses."""
    root = tmp_path_factory.mktemp("m2skd_gen")
    generate_semantickitti(root, scans_per_sequence=GEN_SCANS, sequences=(0,), seed=GEN_SEED, points_scale=GEN_SCALE)
    rng = np.random.default_rng(np.random.SeedSequence([GEN_SEED, 0, 0]))
    scene = build_scene(rng, np.arange(GEN_SCANS) * FRAME_PERIOD, "semantickitti", rare_far=False)
    centres: dict[int, list] = {}
    for k in range(GEN_SCANS):
        for box in scene.thing_boxes(k):
            centres.setdefault(int(box["inst"]), []).append(box["center"])
    motion = {inst: float(np.linalg.norm(np.ptp(np.asarray(c), axis=0))) for inst, c in centres.items()}
    return SemanticKITTI(root, sequences=[0]), motion


def test_generated_layout_first_n_untouched_only_hard_points_appended(generated):
    ds, _ = generated
    cur = ds[4]
    n = cur.points.shape[0]
    cur_pairs = {(int(l), int(i)) for l, i in zip(cur.labels, cur.instance)}
    for align in ("pose", "centroid"):
        fused = fuse_hard_instances(ds, 4, num_past=4, align=align)
        assert fused.num_original == n and fused.num_fused > 0
        assert fused.points.dtype == np.float32 and fused.points.shape == (n + fused.num_fused, 4)
        assert fused.labels.dtype == np.int64 and fused.instance.shape == fused.labels.shape == fused.source_frame.shape
        np.testing.assert_array_equal(fused.points[:n], cur.points)
        np.testing.assert_array_equal(fused.labels[:n], cur.labels)
        np.testing.assert_array_equal(fused.instance[:n], cur.instance)
        assert np.isin(fused.labels[n:], HARD_CLASSES_SEMANTICKITTI).all()
        assert (fused.instance[n:] > 0).all()
        # only instances the current frame has, with their stable ids and labels
        assert {(int(l), int(i)) for l, i in zip(fused.labels[n:], fused.instance[n:])} <= cur_pairs
        assert fused.fused_frames == (3, 2, 1, 0)
        assert (np.diff(-fused.source_frame[n:]) >= 0).all()          # t-1 first
        assert set(fused.source_frame[n:]) == {0, 1, 2, 3}
        # remission travels with the points
        for frame in (3, 0):
            past = ds[frame]
            keep = np.isin(past.labels, HARD_CLASSES_SEMANTICKITTI) & (past.instance > 0) & np.array(
                [(int(l), int(i)) in cur_pairs for l, i in zip(past.labels, past.instance)])
            np.testing.assert_array_equal(fused.points[n:][fused.source_frame[n:] == frame, 3], past.points[keep, 3])


def test_generated_static_instances_align_by_pose_moving_ones_need_centroids(generated):
    """Measured (seed 4, scale 0.5, frame 4 <- 0..3): static 0.085 m by pose vs 2.25 m untransformed;
    moving 1.59 m by pose vs 0.078 m with centroid alignment."""
    ds, motion = generated
    by_pose = fuse_hard_instances(ds, 4, num_past=4, align="pose")
    by_centroid = fuse_hard_instances(ds, 4, num_past=4, align="centroid")
    n = by_pose.num_original
    instances = set(by_pose.instance[n:].tolist())
    static = {i for i in instances if motion[i] < 0.05}
    moving = {i for i in instances if motion[i] > 1.0}
    assert static and moving, (static, moving)

    def gap(fused, kinds, raw=False):
        out = []
        for inst in kinds:
            target = fused.points[:n][fused.instance[:n] == inst, :3]
            sel = fused.instance[n:] == inst
            if raw:
                moved = np.concatenate([ds[int(f)].points[ds[int(f)].instance == inst, :3]
                                        for f in np.unique(fused.source_frame[n:][sel])])
            else:
                moved = fused.points[n:][sel, :3]
            out.append(cKDTree(target).query(moved)[0])
        return float(np.median(np.concatenate(out)))

    static_pose, static_raw = gap(by_pose, static), gap(by_pose, static, raw=True)
    assert static_pose < 0.15 and static_pose < static_raw / 8, (static_pose, static_raw)
    moving_pose, moving_centroid = gap(by_pose, moving), gap(by_centroid, moving)
    assert moving_pose > 0.75, moving_pose
    assert moving_centroid < 0.2 and moving_centroid < moving_pose / 5, (moving_centroid, moving_pose)


def test_generated_frame0_and_num_past(generated):
    ds, _ = generated
    first = fuse_hard_instances(ds, 0, num_past=4)
    assert first.num_fused == 0 and first.fused_frames == ()
    np.testing.assert_array_equal(first.points, ds[0].points)
    assert fuse_hard_instances(ds, 4, num_past=0).num_fused == 0
    two = fuse_hard_instances(ds, 4, num_past=2)
    assert two.fused_frames == (3, 2) and set(two.source_frame[two.num_original:]) == {2, 3}
    early = fuse_hard_instances(ds, 2, num_past=4)          # frames t-3, t-4 do not exist: skipped
    assert set(early.fused_frames) <= {1, 0}
    with pytest.raises(ValueError, match="align"):
        fuse_hard_instances(ds, 4, align="teaser")
    assert sequence_poses(ds, 0) is sequence_poses(ds, "00")   # read once per dataset and sequence


# ---------------------------------------------------------------------------------------------- bad input
@pytest.fixture()
def small_root(tmp_path) -> Path:
    generate_semantickitti(tmp_path, scans_per_sequence=4, sequences=(0,), seed=1, points_scale=0.05)
    return tmp_path


def test_missing_past_frame_is_skipped(small_root):
    (small_root / "sequences/00/velodyne/000002.bin").unlink()
    (small_root / "sequences/00/labels/000002.label").unlink()
    ds = SemanticKITTI(small_root, sequences=[0])
    fused = fuse_hard_instances(ds, ds.frames.index(next(f for f in ds.frames if f.frame == "000003")), num_past=4)
    assert fused.fused_frames == (1, 0)           # measured: (2, 1, 0) before frame 2 was removed
    assert set(fused.source_frame[fused.num_original:].tolist()) == {1, 0}


@pytest.mark.parametrize("corrupt, problem", [
    (lambda lines: lines[:2], "has 2 poses"),                                          # too few lines
    (lambda lines: [lines[0], lines[1].replace(lines[1].split()[3], "abc", 1)] + lines[2:], "line 2"),  # non-numeric
    (lambda lines: [lines[0], " ".join(lines[1].split()[:11])] + lines[2:], "11 numbers"),              # short line
])
def test_bad_pose_file_names_the_file(small_root, corrupt, problem):
    poses = small_root / "sequences/00/poses.txt"
    poses.write_text("\n".join(corrupt(poses.read_text().splitlines())) + "\n")
    ds = SemanticKITTI(small_root, sequences=[0])
    with pytest.raises(InputError, match=problem) as err:
        fuse_hard_instances(ds, 3, num_past=4, align="pose")
    assert Path(err.value.path) == poses
    assert "poses.txt" in str(err.value)
    # the authors' centroid alignment reads no poses
    fuse_hard_instances(ds, 3, num_past=4, align="centroid")


def test_unlabelled_current_scan_is_an_input_error(small_root):
    copy = small_root / "copy"
    shutil.copytree(small_root / "sequences", copy / "sequences")
    (copy / "sequences/00/labels/000003.label").unlink()
    ds = SemanticKITTI(copy, sequences=[0])
    with pytest.raises(InputError, match="needs the scan's labels") as err:
        fuse_hard_instances(ds, 3)
    assert err.value.path.endswith("000003.bin")
