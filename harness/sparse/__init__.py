"""Sparse 3-D convolution with switchable backends (torchref, spconv, minkowski).

Backbones build on this interface only::

    from harness.sparse import SparseTensor, SubMConv3d, SparseConv3d, SparseInverseConv3d

    x = SparseTensor.from_coords(feats, coords, spatial_shape=(480, 360, 32), batch_size=2)
    y = SubMConv3d(16, 32, (1, 3, 3), indice_key="pre")(x)

Parameters are owned by the modules (KRSC ``weight``, optional ``bias``), so state_dicts do
not depend on the backend; switch with :func:`set_backend` / :func:`use_backend` and record
:func:`describe_backend` in run metadata. spconv and MinkowskiEngine are imported only when
their backend is first used.
"""

from harness.sparse.backends import AUTO, BACKEND_NAMES, backend_available, resolve_backend
from harness.sparse.conv import SparseConv3d, SparseConvModule, SparseInverseConv3d, SubMConv3d
from harness.sparse.macs import LayerMacs, SparseMacsCounter, count_sparse_macs
from harness.sparse.point_ops import query_coords, scatter_max, scatter_mean, sparse_cat
from harness.sparse.selection import describe_backend, set_backend, sparse_conv_modules, use_backend
from harness.sparse.tensor import ConvRecord, SparseCache, SparseTensor

__all__ = [
    "AUTO",
    "BACKEND_NAMES",
    "ConvRecord",
    "LayerMacs",
    "SparseCache",
    "SparseConv3d",
    "SparseConvModule",
    "SparseInverseConv3d",
    "SparseMacsCounter",
    "SparseTensor",
    "SubMConv3d",
    "backend_available",
    "count_sparse_macs",
    "describe_backend",
    "query_coords",
    "resolve_backend",
    "scatter_max",
    "scatter_mean",
    "set_backend",
    "sparse_cat",
    "sparse_conv_modules",
    "use_backend",
]
