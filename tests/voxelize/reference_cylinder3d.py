"""A plain restatement of Cylinder3D's ``cylinder_dataset.__getitem__`` + ``nb_process_label``
(xinge008/Cylinder3D dataloader/dataset_semantickitti.py, fixed_volume_space=True), written
independently of the harness for equivalence tests: full (N, 3) broadcasting, a dense label grid
and a per-point voting loop, exactly the original's order of operations. Slow on purpose."""
import numpy as np

GRID = np.array([480, 360, 32])
MAX_B = np.array([50, np.pi, 2])
MIN_B = np.array([0, -np.pi, -4])


def original_cylinder_getitem(xyz: np.ndarray, labels: np.ndarray, sig: np.ndarray):
    rho = np.sqrt(xyz[:, 0] ** 2 + xyz[:, 1] ** 2)
    phi = np.arctan2(xyz[:, 1], xyz[:, 0])
    xyz_pol = np.stack((rho, phi, xyz[:, 2]), axis=1)
    intervals = (MAX_B - MIN_B) / (GRID - 1)
    grid_ind = np.floor((np.clip(xyz_pol, MIN_B, MAX_B) - MIN_B) / intervals).astype(np.int64)
    processed_label = np.zeros(tuple(GRID), dtype=np.uint8)  # ignore_label 0
    pairs = np.concatenate([grid_ind, labels.reshape(-1, 1)], axis=1)
    pairs = pairs[np.lexsort((grid_ind[:, 0], grid_ind[:, 1], grid_ind[:, 2])), :]
    counter = np.zeros(256, dtype=np.uint16)
    counter[pairs[0, 3]] = 1
    cur = pairs[0, :3]
    for i in range(1, pairs.shape[0]):
        ind = pairs[i, :3]
        if not np.array_equal(ind, cur):
            processed_label[cur[0], cur[1], cur[2]] = np.argmax(counter)
            counter[:] = 0
            cur = ind
        counter[pairs[i, 3]] += 1
    processed_label[cur[0], cur[1], cur[2]] = np.argmax(counter)
    voxel_centers = (grid_ind.astype(np.float32) + 0.5) * intervals + MIN_B
    return_xyz = xyz_pol - voxel_centers
    return_fea = np.concatenate((return_xyz, xyz_pol, xyz[:, :2], sig[:, None]), axis=1)
    return grid_ind, processed_label, return_fea
