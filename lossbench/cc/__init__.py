"""Exact connected-component labelling with one API and several backends.

``label_components(mask, connectivity=None, backend="auto")`` labels a batch of 2D or 3D binary
masks. Every backend returns exactly the same int64 label array: 0 is background and components
are numbered 1..N per image in raster (C) order of each component's first voxel, which is the
numbering of ``scipy.ndimage.label``.

Connectivity is counted in orthogonal hops, as in scikit-image::

    connectivity=1 (2D: 4-neighbours)    connectivity=2 (2D: 8-neighbours)
          . x .                                x x x
          x o x                                x o x
          . x .                                x x x

In 3D, 1 -> 6 (faces), 2 -> 18 (faces + edges), 3 -> 26 (faces + edges + corners).
``None`` means full connectivity (8 in 2D, 26 in 3D), which is what the ICI paper's code uses.

Backends:

* ``"cc3d"``: connected-components-3d (CPU reference, fastest on CPU; the default there).
* ``"scipy"``: ``scipy.ndimage.label`` (CPU reference).
* ``"torch"``: exact union-find style hooking with ``scatter_reduce`` and pointer jumping, on any
  device, int64 ids only; the default for CUDA tensors.
* ``"maxpool"``: the reference ICI code's iterative max-pool propagation for a fixed
  ``num_iterations`` (full connectivity only). It splits components whose in-component geodesic
  distance exceeds the iteration count; ``CCResult.converged`` says whether it converged.

``voronoi_components(mask, connectivity=None, spacing=None)`` (and ``voronoi_regions(labels, spacing=None)`` for
labels at hand) gives every voxel the id of its nearest component by Euclidean distance, ties to the smallest id:
the exact Voronoi regions of the components, numbered as ``label_components`` numbers them.
"""

from lossbench.cc.api import BACKENDS, CCResult, label_batch, label_components, structure_offsets
from lossbench.cc.voronoi import VoronoiResult, voronoi_components, voronoi_regions

__all__ = [
    "label_components",
    "label_batch",
    "CCResult",
    "BACKENDS",
    "structure_offsets",
    "voronoi_components",
    "voronoi_regions",
    "VoronoiResult",
]
