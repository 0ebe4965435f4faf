"""MinkowskiEngine kernel layout <-> the harness's KRSC layout (importable without MinkowskiEngine).

MinkowskiEngine 0.5 stores a conv kernel as ``(K, C_in, C_out)`` with the kernel offsets
enumerated first-spatial-axis fastest for every kernel size, odd or even
(NVIDIA/MinkowskiEngine ``src/kernel_region.hpp``; measured on 0.5.4: offset (0, 0, +1) of a
3x3x3 kernel is index 22 = 1 + 3 * 1 + 9 * 2, and offset (0, 0, 1) of a 2x2x2 kernel is index 4).
torchsparse differs for even kernels (z fastest, see :mod:`harness.backbones.weights_spvnas`),
so a k2 kernel must not be copied between the two layouts unpermuted.

The harness layout is KRSC ``(C_out, k0, k1, k2, C_in)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from harness.sparse.kernel_map import as_triple


def krsc_to_minkowski_kernel(weight: torch.Tensor) -> torch.Tensor:
    """KRSC ``(C_out, k0, k1, k2, C_in)`` -> MinkowskiEngine ``(K, C_in, C_out)``, k0 fastest.

    ME offset index ``k0 + k_0 * (k1 + k_1 * k2)`` (``k_i`` the kernel extents) holds
    ``weight[:, k0, k1, k2, :].T``. Returns a contiguous copy (a view is not enough: ME's
    C++ kernels read the raw buffer).
    """
    if weight.dim() != 5:
        raise ValueError(f"expected a KRSC weight (C_out, k0, k1, k2, C_in), got shape {tuple(weight.shape)}")
    c_out, k0, k1, k2, c_in = weight.shape
    return weight.permute(3, 2, 1, 4, 0).reshape(k0 * k1 * k2, c_in, c_out).contiguous()


def minkowski_kernel_to_krsc(kernel: torch.Tensor, kernel_size: int | Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`krsc_to_minkowski_kernel`: ``(K, C_in, C_out)`` -> KRSC, for a kernel of ``kernel_size``.

    Raises:
        ValueError: ``kernel`` is not 3-D or its K is not the volume of ``kernel_size``.
    """
    ks = as_triple(kernel_size, "kernel_size")
    volume = math.prod(ks)
    if kernel.dim() != 3 or kernel.shape[0] != volume:
        raise ValueError(f"MinkowskiEngine kernel of shape {tuple(kernel.shape)} does not match kernel size {ks} (K = {volume})")
    _, c_in, c_out = kernel.shape
    return kernel.reshape(ks[2], ks[1], ks[0], c_in, c_out).permute(4, 2, 1, 0, 3).contiguous()
