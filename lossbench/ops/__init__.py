"""Small tensor primitives the losses and metrics are built from, each behind one numpy-or-torch decision.

Detached integer and bool bookkeeping (comparisons, ``nonzero``, gathers, sorts) runs several times faster through
numpy views of CPU tensors than through torch's CPU kernels, with identical results. Each primitive here takes and
returns torch tensors and makes that choice once, with :func:`use_numpy`; every other device runs the torch code.
:func:`torch_only` runs the torch code on CPU too (the tests use it to cover what a GPU runs).

* :mod:`lossbench.ops.dispatch`: the decision.
* :mod:`lossbench.ops.indexing`: nonzero positions, gathers, thresholds, sorted uniques, segment sums.
* :mod:`lossbench.ops.boxes`: axis-aligned boxes: their voxels, coverage counts, window and box sums.
* :mod:`lossbench.ops.bitmaps`: sets of voxels as 64-bit words along the last axis (numpy, CPU).
* :mod:`lossbench.ops.cubes`: label and prediction cubes streamed plane by plane (numba, CPU): counts, weights.
"""

from lossbench.ops.bitmaps import (
    bitmap_contains,
    bitmap_positions,
    box_row_words,
    popcount,
    row_words,
    union_bitmap,
)
from lossbench.ops.boxes import (
    box_grid,
    box_sums,
    box_voxels,
    coverage_dtype,
    coverage_work_size,
    covering_sums,
    cube_coverage,
    inverse_coverage_sums,
    window_sums,
)
from lossbench.ops.cubes import CubeGeometry, cube_geometry
from lossbench.ops.dispatch import torch_only, use_numpy
from lossbench.ops.indexing import (
    count_nonzero_rows,
    flat_nonzero,
    segment_sum,
    take_flat,
    take_rows,
    threshold_mask,
    unique_sorted,
)

__all__ = [
    "use_numpy",
    "torch_only",
    "flat_nonzero",
    "take_flat",
    "take_rows",
    "threshold_mask",
    "count_nonzero_rows",
    "unique_sorted",
    "segment_sum",
    "box_voxels",
    "window_sums",
    "cube_coverage",
    "coverage_work_size",
    "coverage_dtype",
    "box_grid",
    "box_sums",
    "covering_sums",
    "inverse_coverage_sums",
    "CubeGeometry",
    "cube_geometry",
    "row_words",
    "box_row_words",
    "union_bitmap",
    "popcount",
    "bitmap_positions",
    "bitmap_contains",
]
