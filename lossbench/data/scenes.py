"""Small deterministic synthetic scenes (label + probability map) that show each loss's behaviour at a glance.

Every scene function takes ``spatial_dims`` (2 or 3) and an optional ``size`` (side length of the square /
cubic image; default 64 in 2D and 32 in 3D) and returns a :class:`Scene`:

* ``label``: binary float32 array (values exactly 0 or 1) of shape ``(size,) * spatial_dims``;
* ``pred``: float32 probabilities in [0, 1] of the same shape. Prediction *instances* are the connected
  components of ``pred >= 0.5`` (the package-wide threshold convention);
* ``name`` and a one-paragraph ``description`` of what the scene is meant to show.

No batch or channel axis is added; :meth:`Scene.tensors` returns ``(1, 1, *spatial)`` torch tensors for losses.

Geometry is laid out in fractions of ``size`` (centers are rounded to voxels, radii never fall below half a
voxel, so the smallest instances are single voxels at small sizes), and the number of instances and which
prediction instance touches which label instance do not depend on ``size`` (nor on the connectivity) for
every ``size >= MIN_SIZE``. In 3D the same layout is used with balls placed in the middle slab, so a 3D scene
is the "thick" version of its 2D counterpart.

Scenes (``SCENES`` maps name -> function, in this order):

========================  ============================================================================
``figure1``               ICI paper Figure 1: 5 label instances of varied size; 9 predicted instances, 4 of
                          which touch a label instance and 5 are spurious (touch none); one label missed.
``figure4_bridge``        ICI paper Figure 4: one predicted blob bridging two label instances.
``missed_small``          a large instance found, a small neighbour missed (faint sub-threshold response).
``soft``                  an uncertain prediction: probabilities within [0.4, 0.6] around 0.5.
``empty_label``           no label instance; two spurious predicted blobs.
``empty_pred``            three label instances; nothing reaches the threshold.
``perfect``               prediction equal to the (Figure 1) label, exactly 0/1.
``serpentine``            one-voxel snake (longest geodesic for propagation labelling), predicted at 0.9.
``spiral``                one-voxel square spiral, predicted at 0.9.
``diagonal_line``         one-voxel diagonal: 1 component with full connectivity, ``size`` with face.
``corner_voxel``          single voxels in every image corner (the reference code drops flat index 0).
========================  ============================================================================

Example:
    >>> from lossbench.data.scenes import figure1
    >>> s = figure1(spatial_dims=2)
    >>> s.label.shape, s.label.dtype.name, float(s.pred.min()) >= 0.0
    ((64, 64), 'float32', True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lossbench.cc import shapes
from lossbench.errors import ConfigError, expect
from lossbench.registry import suggest

__all__ = [
    "Scene",
    "SCENES",
    "DEFAULT_SIZE",
    "MIN_SIZE",
    "all_scenes",
    "get_scene",
    "figure1",
    "figure4_bridge",
    "missed_small",
    "soft",
    "empty_label",
    "empty_pred",
    "perfect",
    "serpentine",
    "spiral",
    "diagonal_line",
    "corner_voxel",
]

DEFAULT_SIZE = {2: 64, 3: 32}
"""Default side length per number of spatial dims (64x64 in 2D, 32^3 in 3D)."""

MIN_SIZE = 24
"""Smallest ``size`` for which every scene keeps its documented instance layout."""

BACKGROUND = 0.05
"""Probability the scenes assign to background (confidently negative but not exactly 0, so logits are finite)."""


@dataclass(frozen=True, eq=False)
class Scene:
    """A label and a probability prediction of the same spatial shape.

    Attributes:
        name: scene name (a key of :data:`SCENES`).
        label: binary float32 array (0/1), shape ``(size,) * spatial_dims``, no batch/channel axis.
        pred: float32 probabilities in [0, 1], same shape as ``label``.
        description: what the scene shows.
    """

    name: str
    label: np.ndarray
    pred: np.ndarray
    description: str

    @property
    def spatial_dims(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.label.ndim

    def logits(self, eps: float = 1e-6) -> np.ndarray:
        """Return ``log(p / (1 - p))`` of the prediction, with ``p`` clipped to ``[eps, 1 - eps]`` (float32)."""
        p = np.clip(self.pred.astype(np.float64), eps, 1.0 - eps)
        return np.log(p / (1.0 - p)).astype(np.float32)

    def tensors(self, *, logits: bool = False, dtype=None):
        """Return ``(input, target)`` as torch tensors of shape ``(1, 1, *spatial)``.

        Args:
            logits: if True, ``input`` holds :meth:`logits` (for losses with ``sigmoid=True``), else probabilities.
            dtype: torch dtype of both tensors (default float32).

        Returns:
            ``(input, target)``; ``input`` does not require grad (call ``.requires_grad_()`` when needed).
        """
        import torch

        dtype = torch.float32 if dtype is None else dtype
        x = self.logits() if logits else self.pred
        return (
            torch.from_numpy(np.ascontiguousarray(x))[None, None].to(dtype),
            torch.from_numpy(np.ascontiguousarray(self.label))[None, None].to(dtype),
        )


# --------------------------------------------------------------------------------------------- helpers


def _check(spatial_dims: int, size: int | None, min_size: int = MIN_SIZE) -> int:
    """Validate ``spatial_dims`` and ``size``; return the size to use."""
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise expect("spatial_dims", "2 or 3", repr(spatial_dims))
    if size is None:
        return DEFAULT_SIZE[int(spatial_dims)]
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise expect("size", f"an int >= {min_size} or None", repr(size))
    if size < min_size:
        raise expect("size", f">= {min_size} so that the scene keeps its layout", size)
    return int(size)


def _ellipsoid(size: int, spatial_dims: int, center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    """Bool mask of an axis-aligned ellipse/ellipsoid given in fractions of ``size``.

    ``center`` and ``radii`` are ``(y, x)`` fractions; in 3D the center's z is the middle slice and the z radius
    equals the y radius. The center is rounded to a voxel and radii are at least half a voxel, so the mask is
    never empty.
    """
    c = [round(f * (size - 1)) for f in center]
    r = [max(f * size, 0.5) for f in radii]
    if spatial_dims == 3:
        c = [(size - 1) // 2, *c]
        r = [r[0], *r]
    grids = np.ogrid[tuple(slice(0, size) for _ in range(spatial_dims))]
    d2 = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r))
    return d2 <= 1.0


def _ball(size: int, spatial_dims: int, center: tuple[float, float], radius: float) -> np.ndarray:
    return _ellipsoid(size, spatial_dims, center, (radius, radius))


def _union(size: int, spatial_dims: int, blobs: list[tuple[tuple[float, float], float]]) -> np.ndarray:
    m = np.zeros((size,) * spatial_dims, dtype=bool)
    for center, radius in blobs:
        m |= _ball(size, spatial_dims, center, radius)
    return m


def _paint(
    size: int, spatial_dims: int, blobs: list[tuple[tuple[float, float], float, float]], background: float = BACKGROUND
) -> np.ndarray:
    """Probability map: ``background`` everywhere, each ball ``(center, radius, prob)`` painted with ``prob``."""
    p = np.full((size,) * spatial_dims, background, dtype=np.float32)
    for center, radius, prob in blobs:
        p[_ball(size, spatial_dims, center, radius)] = prob
    return p


def _scene(name: str, label: np.ndarray, pred: np.ndarray, description: str) -> Scene:
    label = np.ascontiguousarray(label, dtype=np.float32)
    pred = np.ascontiguousarray(np.clip(pred, 0.0, 1.0), dtype=np.float32)
    return Scene(name=name, label=label, pred=pred, description=description)


# Figure 1 layout, (y, x) fractions of the image side and radius as a fraction of the side.
_FIG1_LABEL = [
    ((0.30, 0.30), 0.16),  # L1 large
    ((0.28, 0.72), 0.10),  # L2 medium
    ((0.70, 0.25), 0.07),  # L3 medium-small (missed)
    ((0.72, 0.60), 0.04),  # L4 small
    ((0.55, 0.86), 0.02),  # L5 tiny
]
_FIG1_PRED = [
    ((0.33, 0.36), 0.15, 0.85),  # P1: shifted over L1 (true + false positive voxels, touches L1)
    ((0.28, 0.72), 0.12, 0.95),  # P2: covers L2 and a rim around it
    ((0.74, 0.62), 0.035, 0.70),  # P3: partly covers L4
    ((0.55, 0.86), 0.02, 0.60),  # P4: hits the tiny L5
    ((0.08, 0.90), 0.04, 0.80),  # spurious S1..S5, touching no label instance
    ((0.90, 0.08), 0.03, 0.65),
    ((0.88, 0.88), 0.05, 0.90),
    ((0.50, 0.55), 0.025, 0.75),
    ((0.88, 0.40), 0.03, 0.55),
]


# ---------------------------------------------------------------------------------------------- scenes


def figure1(spatial_dims: int = 2, size: int | None = None) -> Scene:
    """ICI paper Figure 1: instance-wise losses versus blob loss.

    Label: 5 instances with radii from 16% of the side down to a single voxel. Prediction: 9 instances;
    4 touch a label instance (one shifted over the largest, one covering a medium one with a rim, one partly
    covering a small one, one hitting the tiniest) and 5 are spurious, far from every label instance. The
    medium-small label instance at the lower left is missed. The instance-wise loss of label instance *k* only
    sees the predicted instances touching *k*; the blob loss also sees the 5 spurious ones.

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        :class:`Scene` named ``"figure1"``.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    size = _check(spatial_dims, size)
    label = _union(size, spatial_dims, _FIG1_LABEL)
    pred = _paint(size, spatial_dims, _FIG1_PRED)
    return _scene(
        "figure1",
        label,
        pred,
        "ICI paper Figure 1: 5 label instances of varied size; 9 predicted instances, 4 touching a label "
        "instance and 5 spurious ones touching none; one medium-small label instance is missed.",
    )


def figure4_bridge(spatial_dims: int = 2, size: int | None = None) -> Scene:
    """ICI paper Figure 4: one predicted blob bridging two label instances.

    Two equal label instances side by side with a gap; the prediction is a single elongated ellipse covering
    the inner parts of both and the gap between them. With ``tp_mode`` including true positives of other
    instances (Eq. 3) the part of the bridge inside instance B counts as false positive for instance A;
    Eq. 5 (``-TP``) does not count it.

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        :class:`Scene` named ``"figure4_bridge"``.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    size = _check(spatial_dims, size)
    label = _union(size, spatial_dims, [((0.5, 0.28), 0.13), ((0.5, 0.72), 0.13)])
    pred = np.full((size,) * spatial_dims, BACKGROUND, dtype=np.float32)
    pred[_ellipsoid(size, spatial_dims, (0.5, 0.5), (0.09, 0.32))] = 0.9
    return _scene(
        "figure4_bridge",
        label,
        pred,
        "ICI paper Figure 4: one predicted blob bridges two label instances, overlapping both and the gap.",
    )


def missed_small(spatial_dims: int = 2, size: int | None = None) -> Scene:
    """A large instance detected and a small instance right next to it missed.

    The prediction covers the large instance well (slightly shifted) and gives the small instance only a faint
    response of 0.3, below the 0.5 threshold. Dice barely notices the miss; instance-wise terms do.

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        :class:`Scene` named ``"missed_small"``.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    size = _check(spatial_dims, size)
    label = _union(size, spatial_dims, [((0.5, 0.38), 0.22), ((0.5, 0.80), 0.03)])
    pred = _paint(size, spatial_dims, [((0.5, 0.40), 0.21, 0.9), ((0.5, 0.80), 0.03, 0.3)])
    return _scene(
        "missed_small",
        label,
        pred,
        "A large label instance is predicted well; the small instance next to it only gets a faint "
        "sub-threshold response (0.3) and is missed.",
    )


def soft(spatial_dims: int = 2, size: int | None = None) -> Scene:
    """An uncertain prediction: probabilities within [0.4, 0.6], slightly above 0.5 on the instances.

    ``pred = 0.4 + 0.2 * gaussian_filter(label, sigma=size/32)``, so thresholding at 0.5 recovers roughly
    the (eroded) instances while every voxel stays near 0.5: losses are far from their minimum everywhere.

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        :class:`Scene` named ``"soft"``.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    size = _check(spatial_dims, size)
    label = _union(size, spatial_dims, [((0.35, 0.35), 0.16), ((0.30, 0.75), 0.09), ((0.72, 0.60), 0.06)])
    smooth = ndimage.gaussian_filter(label.astype(np.float64), sigma=max(size / 32.0, 1.0), mode="constant")
    pred = 0.4 + 0.2 * np.clip(smooth, 0.0, 1.0)
    return _scene(
        "soft",
        label,
        pred,
        "An uncertain prediction around 0.5: probabilities in [0.4, 0.6], slightly above 0.5 on the instances.",
    )


def empty_label(spatial_dims: int = 2, size: int | None = None) -> Scene:
    """No label instance; the prediction has two spurious blobs (only false positives are possible).

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        :class:`Scene` named ``"empty_label"``.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    size = _check(spatial_dims, size)
    label = np.zeros((size,) * spatial_dims, dtype=np.float32)
    pred = _paint(size, spatial_dims, [((0.3, 0.3), 0.10, 0.8), ((0.7, 0.75), 0.05, 0.6)])
    return _scene("empty_label", label, pred, "Empty label; the prediction has two spurious blobs.")


def empty_pred(spatial_dims: int = 2, size: int | None = None) -> Scene:
    """Three label instances and a prediction that is background (0.05) everywhere.

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        :class:`Scene` named ``"empty_pred"``.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    size = _check(spatial_dims, size)
    label = _union(size, spatial_dims, [((0.35, 0.35), 0.15), ((0.30, 0.75), 0.08), ((0.72, 0.60), 0.04)])
    pred = np.full((size,) * spatial_dims, BACKGROUND, dtype=np.float32)
    return _scene("empty_pred", label, pred, "Three label instances; the prediction is background (0.05) everywhere.")


def perfect(spatial_dims: int = 2, size: int | None = None) -> Scene:
    """The Figure 1 label predicted perfectly: ``pred`` equals ``label`` exactly (0/1).

    Every loss should be (close to) its minimum here.

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        :class:`Scene` named ``"perfect"``.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    size = _check(spatial_dims, size)
    label = _union(size, spatial_dims, _FIG1_LABEL)
    return _scene("perfect", label, label.astype(np.float32), "Perfect prediction: pred equals the label (0/1).")


def _stress(name: str, mask: np.ndarray, description: str) -> Scene:
    pred = np.where(mask, 0.9, BACKGROUND)
    return _scene(name, mask, pred, description + " The prediction is the same mask at probability 0.9.")


def serpentine(spatial_dims: int = 2, size: int | None = None) -> Scene:
    """One-voxel-wide snake (:func:`lossbench.cc.shapes.serpentine`): one component, very long geodesic.

    In 3D the snake lies in the middle slice. Fixed-iteration max-pool labelling splits it.

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        :class:`Scene` named ``"serpentine"``.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    size = _check(spatial_dims, size)
    return _stress(
        "serpentine",
        shapes.serpentine(size, spatial_dims),
        "Labelling stress: a one-voxel serpentine, one component with a geodesic of about size^2/2 voxels.",
    )


def spiral(spatial_dims: int = 2, size: int | None = None) -> Scene:
    """One-voxel-wide square spiral (:func:`lossbench.cc.shapes.spiral`): one component, long geodesic.

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        :class:`Scene` named ``"spiral"``.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    size = _check(spatial_dims, size)
    return _stress(
        "spiral",
        shapes.spiral(size, spatial_dims),
        "Labelling stress: a one-voxel square spiral winding inwards, one component.",
    )


def diagonal_line(spatial_dims: int = 2, size: int | None = None) -> Scene:
    """One-voxel diagonal line: one component with full connectivity, ``size`` components with connectivity 1.

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        :class:`Scene` named ``"diagonal_line"``.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    size = _check(spatial_dims, size)
    return _stress(
        "diagonal_line",
        shapes.diagonal_line(size, spatial_dims),
        "Labelling stress: a one-voxel diagonal line, 1 component with full connectivity, one per voxel "
        "with face connectivity.",
    )


def corner_voxel(spatial_dims: int = 2, size: int | None = None) -> Scene:
    """Single voxels at every image corner (4 in 2D, 8 in 3D).

    The reference ICI code treats label 0 at flat index 0 specially, so the corner at the origin is dropped there.

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        :class:`Scene` named ``"corner_voxel"``.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    size = _check(spatial_dims, size)
    return _stress(
        "corner_voxel",
        shapes.corner_voxels(size, spatial_dims),
        "Labelling stress: one-voxel instances at every image corner, including flat index 0.",
    )


SCENES: dict[str, Callable[..., Scene]] = {
    "figure1": figure1,
    "figure4_bridge": figure4_bridge,
    "missed_small": missed_small,
    "soft": soft,
    "empty_label": empty_label,
    "empty_pred": empty_pred,
    "perfect": perfect,
    "serpentine": serpentine,
    "spiral": spiral,
    "diagonal_line": diagonal_line,
    "corner_voxel": corner_voxel,
}
"""Scene name -> function ``f(spatial_dims=2, size=None) -> Scene``, in gallery order."""


def get_scene(name: str, spatial_dims: int = 2, size: int | None = None) -> Scene:
    """Build the scene called ``name``.

    Args:
        name: a key of :data:`SCENES`.
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D).

    Returns:
        The :class:`Scene`.

    Raises:
        ConfigError: for an unknown name (with a suggestion) or invalid ``spatial_dims``/``size``.
    """
    if not isinstance(name, str) or name not in SCENES:
        raise ConfigError(f"`name` must be one of {list(SCENES)}, got {name!r}." + suggest(str(name), list(SCENES)))
    return SCENES[name](spatial_dims=spatial_dims, size=size)


def all_scenes(spatial_dims: int = 2, size: int | None = None) -> list[Scene]:
    """Every scene of :data:`SCENES`, in order, for ``spatial_dims`` (and ``size``, default per dims).

    Args:
        spatial_dims: 2 or 3.
        size: image side (default 64 in 2D, 32 in 3D; at least :data:`MIN_SIZE`).

    Returns:
        List of :class:`Scene`, one per entry of :data:`SCENES`.

    Raises:
        ConfigError: for invalid ``spatial_dims`` or ``size``.
    """
    _check(spatial_dims, size)
    return [f(spatial_dims=spatial_dims, size=size) for f in SCENES.values()]
