"""``synthetic_lesions``: subjects with many small and few large irregular lesions, in 2D or 3D.

The dataset is built to show the *instance imbalance problem*: lesion volumes follow a heavy-tailed law, so
most lesions are small and a few large ones dominate the foreground voxel count, and the intensity model
makes small lesions genuinely harder to see. It follows the subject format of :mod:`lossbench.data.base`.

Generative model of one subject (every random choice comes from a generator seeded with
``(seed, split, index)``, so a subject does not change when other splits change size):

1. **Body**: an ellipse/ellipsoid with semi-axes ``U(0.40, 0.46) * size`` per axis; outside it the image is
   air (intensity 0 before noise).
2. **Lesion count** ``K ~ UniformInt(n_lesions[0], n_lesions[1])`` (zero allowed).
3. **Volumes** (target voxel counts) ``V_k`` from ``size_distribution``:

   * ``"loguniform"``: ``log V ~ U(log v_min, log v_max)`` (density proportional to ``1/V``);
   * ``"pareto"``: truncated Pareto on ``[v_min, v_max]`` with density proportional to ``V^-(alpha+1)``.

4. **Shape** of a lesion of volume ``V``: a randomly rotated ellipsoid with jittered axes (ratio up to ~2.7)
   holding most of the volume, united with up to 3 smaller rotated ellipsoid lobes attached to it; only the
   face-connected part containing the center is kept, so each lesion is one component for any connectivity.
5. **Placement**: largest first, at a random center such that the lesion stays inside the body; with
   ``non_touching=True`` a lesion may not touch (not even diagonally) an earlier one, so lesions and connected
   components coincide for every connectivity. With probability ``clustering`` a lesion is instead placed next
   to an earlier one (one of its voxels within two voxels of it: a one-voxel gap with ``non_touching``, touching
   without), as lesions cluster around the ventricles. A lesion that finds no room after 50 tries is dropped (the
   metadata holds what was placed).
6. **Intensity**: ``image = body * T * (1 + E) * B + noise * N(0, 1)`` with a textured tissue
   ``T = 1 + texture * t`` (``t`` smooth Gaussian noise of unit std), a lesion effect map ``E`` that is
   ``c_k = contrast * (small_contrast + (1 - small_contrast) * s_k)`` inside lesion ``k`` where
   ``s_k = log(V_k / v_min) / log(v_max / v_min)`` in [0, 1] (small lesions get less contrast), blurred with a
   Gaussian of std ``blur`` voxels (partial volume: small lesions lose their peak contrast), and a smooth
   multiplicative bias field ``B = exp(bias_field * b)`` (``b`` a sum of random low-frequency cosines).

With the defaults a large lesion differs from tissue by ~7 noise standard deviations, a one-voxel lesion by
about one: large lesions are easy, small ones are hard, and a small U-Net learns the task on a CPU in minutes.
A subject takes milliseconds to generate on one CPU core, so a dataset is built in memory in one go.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from lossbench.data.base import (
    SPLITS,
    SegmentationDataset,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_shape,
    check_spatial_dims,
    materialise_splits,
)
from lossbench.errors import expect

__all__ = [
    "LesionModel",
    "synthetic_lesions",
    "make_subject",
    "draw_volumes",
    "lesion_shape",
    "place_lesions",
    "DEFAULT_SIZE",
]

DEFAULT_SIZE = {2: 64, 3: 48}
"""Default image side per number of spatial dims."""

SIZE_DISTRIBUTIONS = ("loguniform", "pareto")
_SPLIT_CODE = {name: i for i, name in enumerate(SPLITS)}
_MAX_TRIES = 50


# ------------------------------------------------------------------------------------------- lesions


def draw_volumes(
    rng: np.random.Generator,
    n: int,
    v_min: float,
    v_max: float,
    distribution: str = "loguniform",
    pareto_alpha: float = 1.0,
) -> np.ndarray:
    """Draw ``n`` target lesion volumes (voxels) from a heavy-tailed law on ``[v_min, v_max]``.

    ``"loguniform"``: ``V = v_min * (v_max / v_min)^U``. ``"pareto"``: inverse CDF of the truncated Pareto,
    ``V = v_min * (1 - U * (1 - (v_min / v_max)^alpha))^(-1 / alpha)``, with ``U ~ U(0, 1)``.

    Returns:
        float64 array of shape ``(n,)``.
    """
    u = rng.random(n)
    if distribution == "loguniform":
        return v_min * (v_max / v_min) ** u
    tail = 1.0 - (v_min / v_max) ** pareto_alpha
    return v_min * (1.0 - u * tail) ** (-1.0 / pareto_alpha)


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _axes(rng: np.random.Generator, d: int) -> np.ndarray:
    """Axis scale factors with geometric mean 1 and a ratio of at most ~2.7 (not needle-thin)."""
    a = np.clip(rng.normal(0.0, 0.25, d), -0.5, 0.5)
    return np.exp(a - a.mean())


def lesion_shape(rng: np.random.Generator, volume: float, spatial_dims: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Rasterise one irregular lesion of about ``volume`` voxels.

    A rotated ellipsoid with jittered axes plus 0-3 smaller rotated lobes centered inside it (lesions under 10
    voxels get no lobes); only the face-connected part containing the center voxel is kept.

    Args:
        rng: random generator.
        volume: target volume in voxels (> 0).
        spatial_dims: 2 or 3.

    Returns:
        ``(mask, center)``: a bool array cropped to the lesion's bounding box (never empty, one face-connected
        component) and the index of the lesion center inside it.
    """
    d = spatial_dims
    unit = math.pi if d == 2 else 4.0 / 3.0 * math.pi
    n_lobes = int(rng.integers(0, 4)) if volume >= 10 else 0
    main_frac = rng.uniform(0.6, 0.85) if n_lobes else 1.0
    r = (volume / unit) ** (1.0 / d)
    blobs = [(np.zeros(d), (volume * main_frac / unit) ** (1.0 / d) * _axes(rng, d), _rotation(rng, d))]
    for _ in range(n_lobes):
        direction = rng.standard_normal(d)
        direction /= np.linalg.norm(direction)
        offset = direction * blobs[0][1].min() * rng.uniform(0.4, 0.8)
        blobs.append((offset, r * rng.uniform(0.35, 0.6) * _axes(rng, d), _rotation(rng, d)))
    h = int(math.ceil(max(np.abs(o).max() + radii.max() for o, radii, _ in blobs))) + 1
    coords = np.stack(np.meshgrid(*(np.arange(-h, h + 1),) * d, indexing="ij"), axis=-1).astype(np.float64)
    mask = np.zeros((2 * h + 1,) * d, dtype=bool)
    for offset, radii, rot in blobs:
        local = (coords - offset) @ rot
        mask |= ((local / radii) ** 2).sum(-1) <= 1.0
    mask[(h,) * d] = True
    comp, _ = ndimage.label(mask)
    mask = comp == comp[(h,) * d]
    nz = np.nonzero(mask)
    lo = [int(a.min()) for a in nz]
    hi = [int(a.max()) + 1 for a in nz]
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    return np.ascontiguousarray(crop), tuple(h - a for a in lo)


def place_lesions(
    rng: np.random.Generator,
    allowed: np.ndarray,
    shapes: list[tuple[np.ndarray, tuple[int, ...]]],
    non_touching: bool = True,
    centers: np.ndarray | None = None,
    *,
    clustering: float = 0.0,
) -> tuple[np.ndarray, list[int]]:
    """Place lesion masks at random centers so that each lies inside ``allowed``.

    Args:
        rng: random generator.
        allowed: bool array (spatial): where lesion voxels may be.
        shapes: ``(mask, center)`` pairs from :func:`lesion_shape`, placed in the given order.
        non_touching: if True, a lesion may not touch an earlier one, not even at a corner (one voxel gap).
        centers: optional bool array: where lesion centers may be (default: anywhere in ``allowed``).
        clustering: probability that a lesion after the first is placed right next to an earlier one: one of its
            voxels lands within two voxels (Chebyshev) of an earlier lesion, so with ``non_touching`` the two are
            separated by a one-voxel gap (separate components, which a prediction one voxel too wide bridges) and
            without it they may touch (confluent: one component). 0 draws nothing extra from ``rng``.

    Returns:
        ``(instances, placed)``: int32 map (0 background, ``k`` = k-th placed lesion) and the indices into
        ``shapes`` of the lesions placed (a lesion without room after 50 tries is skipped).
    """
    shape = allowed.shape
    d = len(shape)
    instances = np.zeros(shape, dtype=np.int32)
    blocked = np.zeros(shape, dtype=bool)
    candidates = np.flatnonzero(allowed if centers is None else (centers & allowed))
    placed: list[int] = []
    if candidates.size == 0:
        return instances, placed
    full = np.ones((3,) * d, dtype=bool)
    for i, (mask, center) in enumerate(shapes):
        near = None
        if clustering > 0 and placed and rng.random() < clustering:
            near = _near_voxels(instances, blocked, allowed, full)
        for _ in range(_MAX_TRIES):
            c = _propose(rng, candidates, near, mask, center, shape)
            lo = [ci - ce for ci, ce in zip(c, center)]
            hi = [a + m for a, m in zip(lo, mask.shape)]
            if any(a < 0 for a in lo) or any(b > s for b, s in zip(hi, shape)):
                continue
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            if (mask & ~allowed[box]).any() or (mask & blocked[box]).any():
                continue
            instances[box][mask] = len(placed) + 1
            if non_touching:
                # block the lesion grown by one voxel in every direction (full connectivity)
                glo = [max(a - 1, 0) for a in lo]
                ghi = [min(b + 1, s) for b, s in zip(hi, shape)]
                gbox = tuple(slice(a, b) for a, b in zip(glo, ghi))
                blocked[gbox] |= ndimage.binary_dilation(instances[gbox] == len(placed) + 1, structure=full)
            placed.append(i)
            break
    return instances, placed


def _near_voxels(instances: np.ndarray, blocked: np.ndarray, allowed: np.ndarray, full: np.ndarray) -> np.ndarray:
    """Flat positions within two voxels (Chebyshev) of a placed lesion where a new lesion voxel may go."""
    near = ndimage.binary_dilation(instances > 0, structure=full, iterations=2) & ~blocked & allowed & (instances == 0)
    return np.flatnonzero(near)


def _propose(
    rng: np.random.Generator,
    candidates: np.ndarray,
    near: np.ndarray | None,
    mask: np.ndarray,
    center: tuple[int, ...],
    shape: tuple[int, ...],
) -> tuple[int, ...]:
    """A lesion center: a random candidate, or (clustered) one that puts a random lesion voxel on a ``near`` voxel."""
    if near is None or near.size == 0:
        return np.unravel_index(int(candidates[rng.integers(candidates.size)]), shape)
    target = np.unravel_index(int(near[rng.integers(near.size)]), shape)
    voxels = np.argwhere(mask)
    u = voxels[rng.integers(len(voxels))]
    return tuple(int(t - (ui - ce)) for t, ui, ce in zip(target, u, center))


# ----------------------------------------------------------------------------------- intensity model


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation (float32)."""
    t = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=sigma, truncate=3.0)
    std = float(t.std())
    return t / std if std > 0 else t


def _bias(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth field: per axis a sum of two random low-frequency cosines, summed over axes (unit-ish scale)."""
    field = np.zeros(shape, dtype=np.float32)
    for axis, n in enumerate(shape):
        x = np.arange(n, dtype=np.float32) / max(n - 1, 1)
        f = sum(rng.normal() * np.cos(np.pi * (j * x + rng.random())) for j in (1, 2))
        view = [1] * len(shape)
        view[axis] = n
        field = field + (f / math.sqrt(2 * len(shape))).astype(np.float32).reshape(view)
    return field


@dataclass(frozen=True)
class LesionModel:
    """Validated parameters of the synthetic lesion generator (see the module docstring for the model).

    Build with :meth:`create`, which checks every value and fills the size-dependent defaults.
    """

    spatial_dims: int
    shape: tuple[int, ...]
    n_lesions: tuple[int, int]
    min_volume: float
    max_volume: float
    size_distribution: str
    pareto_alpha: float
    non_touching: bool
    clustering: float
    contrast: float
    small_contrast: float
    noise: float
    texture: float
    bias_field: float
    blur: float

    @classmethod
    def create(
        cls,
        spatial_dims: int = 3,
        size: int | list[int] | None = None,
        n_lesions: list[int] | tuple[int, int] = (0, 8),
        min_volume: float = 4.0,
        max_volume: float | None = None,
        size_distribution: str = "loguniform",
        pareto_alpha: float = 1.0,
        non_touching: bool = True,
        clustering: float = 0.0,
        contrast: float = -0.6,
        small_contrast: float = 0.4,
        noise: float = 0.08,
        texture: float = 0.08,
        bias_field: float = 0.15,
        blur: float = 0.5,
    ) -> LesionModel:
        """Validate the parameters and return the model (``ConfigError`` naming the first bad parameter)."""
        d = check_spatial_dims(spatial_dims)
        shape = check_shape("size", DEFAULT_SIZE[d] if size is None else size, d, lo=16)
        if not isinstance(n_lesions, (list, tuple)) or len(n_lesions) != 2:
            raise expect("n_lesions", "a pair [min, max] of ints", repr(n_lesions))
        lo = check_int("n_lesions[0]", n_lesions[0], lo=0, hi=200)
        hi = check_int("n_lesions[1]", n_lesions[1], lo=lo, hi=200)
        vmin = check_float("min_volume", min_volume, lo=1.0)
        total = float(np.prod(shape))
        if max_volume is None:
            vmax = max(min({2: 400.0, 3: 2000.0}[d], total / 8.0), 2.0 * vmin)
        else:
            vmax = check_float("max_volume", max_volume, lo=vmin, lo_open=True)
        if vmax > total / 4.0:
            raise expect("max_volume", f"<= a quarter of the image ({total / 4.0:g} voxels)", vmax)
        dist = check_choice("size_distribution", size_distribution, SIZE_DISTRIBUTIONS)
        alpha = check_float("pareto_alpha", pareto_alpha, lo=0.0, hi=5.0, lo_open=True)
        touching = check_bool("non_touching", non_touching)
        c = check_float("contrast", contrast, lo=-1.0, hi=2.0)
        if c == 0.0:
            raise expect("contrast", "non-zero (negative: hypointense lesions, positive: hyperintense)", c)
        return cls(
            spatial_dims=d,
            shape=shape,
            n_lesions=(lo, hi),
            min_volume=vmin,
            max_volume=vmax,
            size_distribution=dist,
            pareto_alpha=alpha,
            non_touching=touching,
            clustering=check_float("clustering", clustering, lo=0.0, hi=1.0),
            contrast=c,
            small_contrast=check_float("small_contrast", small_contrast, lo=0.0, hi=1.0),
            noise=check_float("noise", noise, lo=0.0, hi=10.0),
            texture=check_float("texture", texture, lo=0.0, hi=0.9),
            bias_field=check_float("bias_field", bias_field, lo=0.0, hi=1.0),
            blur=check_float("blur", blur, lo=0.0, hi=5.0),
        )

    def as_params(self) -> dict[str, Any]:
        """Resolved parameters as plain Python values (for results files)."""
        out = asdict(self)
        out["size"] = list(out.pop("shape"))
        out["n_lesions"] = list(out["n_lesions"])
        return out

    def lesion_contrast(self, volumes: np.ndarray) -> np.ndarray:
        """Per-lesion contrast ``contrast * (small_contrast + (1 - small_contrast) * s)`` with ``s`` in [0, 1]."""
        s = np.clip(
            np.log(np.maximum(volumes, 1e-9) / self.min_volume) / math.log(self.max_volume / self.min_volume), 0, 1
        )
        return self.contrast * (self.small_contrast + (1.0 - self.small_contrast) * s)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Draw one subject.

        Returns:
            ``(image, label, meta)``: float32 ``(1, *shape)`` image, float32 ``(1, *shape)`` 0/1 label, and
            ``meta`` with ``n_lesions`` (placed), ``volumes`` (voxels per placed lesion, placement order) and
            ``target_volumes``.
        """
        d, shape = self.spatial_dims, self.shape
        grids = np.ogrid[tuple(slice(0, s) for s in shape)]
        semi = [s * rng.uniform(0.40, 0.46) for s in shape]
        center = [(s - 1) / 2 + rng.uniform(-2, 2) for s in shape]
        r2 = sum(((g - c) / a) ** 2 for g, c, a in zip(grids, center, semi))
        body = r2 <= 1.0
        inner = sum(((g - c) / max(a - 3, 1.0)) ** 2 for g, c, a in zip(grids, center, semi)) <= 1.0

        k = int(rng.integers(self.n_lesions[0], self.n_lesions[1] + 1))
        targets = np.sort(
            draw_volumes(rng, k, self.min_volume, self.max_volume, self.size_distribution, self.pareto_alpha)
        )[::-1]
        shapes = [lesion_shape(rng, v, d) for v in targets]
        instances, placed = place_lesions(rng, inner, shapes, self.non_touching, clustering=self.clustering)
        volumes = np.bincount(instances.ravel(), minlength=len(placed) + 1)[1:]

        tissue = np.float32(1.0) + np.float32(self.texture) * _smooth_noise(rng, shape, 1.5)
        if placed:
            lut = np.zeros(len(placed) + 1, dtype=np.float32)
            lut[1:] = self.lesion_contrast(targets[placed])
            effect = lut[instances]
            if self.blur > 0:
                effect = ndimage.gaussian_filter(effect, sigma=self.blur, truncate=3.0)
            tissue *= np.float32(1.0) + effect
        bias = np.exp(np.float32(self.bias_field) * _bias(rng, shape))
        image = np.where(body, tissue * bias, np.float32(0.0))
        if self.noise > 0:
            image += np.float32(self.noise) * rng.standard_normal(shape, dtype=np.float32)
        label = (instances > 0).astype(np.float32)
        meta = {
            "n_lesions": len(placed),
            "volumes": volumes.astype(int).tolist(),
            "target_volumes": [float(v) for v in targets[placed]],
        }
        return image.astype(np.float32)[None], label[None], meta


def _subject_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)]))


def make_subject(model: LesionModel, seed: int, split: str, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate subject ``index`` of ``split`` for ``seed`` (independent of the other subjects and splits).

    Returns:
        ``(subject, meta)``: the subject dict (image, label, id) and its metadata (see :meth:`LesionModel.sample`).
    """
    image, label, meta = model.sample(_subject_rng(seed, split, index))
    return {"image": image, "label": label, "id": f"{split}-{index:04d}"}, meta


def synthetic_lesions(
    spatial_dims: int = 3,
    size: int | list[int] | None = None,
    n_train: int = 24,
    n_val: int = 8,
    n_test: int = 16,
    seed: int = 0,
    n_lesions: list[int] | tuple[int, int] = (0, 8),
    min_volume: float = 4.0,
    max_volume: float | None = None,
    size_distribution: str = "loguniform",
    pareto_alpha: float = 1.0,
    non_touching: bool = True,
    clustering: float = 0.0,
    contrast: float = -0.6,
    small_contrast: float = 0.4,
    noise: float = 0.08,
    texture: float = 0.08,
    bias_field: float = 0.15,
    blur: float = 0.5,
) -> SegmentationDataset:
    """Synthetic lesion dataset with heavy-tailed lesion sizes (instance imbalance), 2D or 3D.

    Args:
        spatial_dims: 2 or 3.
        size: image side (int) or shape (list of ``spatial_dims`` ints, each >= 16); default 64 (2D) / 48 (3D).
        n_train: number of training subjects (>= 1).
        n_val: number of validation subjects (>= 0).
        n_test: number of test subjects (>= 0).
        seed: seed; subject ``i`` of a split depends only on ``(seed, split, i)`` and the other parameters.
        n_lesions: ``[min, max]`` lesions per subject, drawn uniformly (inclusive; 0 allowed).
        min_volume: smallest target lesion volume in voxels (>= 1).
        max_volume: largest target volume (default: 400 in 2D, 2000 in 3D, at most an eighth of the image);
            ``max_volume / min_volume`` is the spread (default 100x in 2D, 500x in 3D).
        size_distribution: ``"loguniform"`` or ``"pareto"`` (truncated, tail index ``pareto_alpha``).
        pareto_alpha: Pareto tail index in (0, 5]; larger means more small lesions.
        non_touching: keep a one-voxel gap between lesions, so lesions equal connected components.
        clustering: probability in [0, 1] that a lesion is placed right next to an earlier one (with
            ``non_touching``: a one-voxel gap, as periventricular lesion clusters; without: confluent lesions).
        contrast: relative intensity change of the largest lesions (negative: hypointense, like T1w stroke).
        small_contrast: contrast factor for the smallest lesions (rising log-linearly to 1 at ``max_volume``).
        noise: std of additive Gaussian noise (tissue mean is 1).
        texture: std of the smooth multiplicative tissue texture.
        bias_field: strength of the smooth multiplicative bias field (log scale).
        blur: std (voxels) of the partial-volume blur of the lesion contrast.

    Returns:
        :class:`~lossbench.data.base.SegmentationDataset` with materialised subjects; ``metadata[id]`` holds
        ``n_lesions``, ``volumes`` and ``target_volumes``.

    Raises:
        ConfigError: naming the first invalid parameter.

    Example:
        >>> ds = synthetic_lesions(spatial_dims=2, size=32, n_train=2, n_val=1, n_test=1, seed=0)
        >>> ds.train[0]["image"].shape, ds.train[0]["label"].dtype.name
        ((1, 32, 32), 'float32')
    """
    model = LesionModel.create(
        spatial_dims=spatial_dims,
        size=size,
        n_lesions=n_lesions,
        min_volume=min_volume,
        max_volume=max_volume,
        size_distribution=size_distribution,
        pareto_alpha=pareto_alpha,
        non_touching=non_touching,
        clustering=clustering,
        contrast=contrast,
        small_contrast=small_contrast,
        noise=noise,
        texture=texture,
        bias_field=bias_field,
        blur=blur,
    )
    counts = {
        "train": check_int("n_train", n_train, lo=1),
        "val": check_int("n_val", n_val, lo=0),
        "test": check_int("n_test", n_test, lo=0),
    }
    seed = check_int("seed", seed, lo=0)
    splits, metadata = materialise_splits(counts, functools.partial(make_subject, model, seed))
    params = {**model.as_params(), "n_train": counts["train"], "n_val": counts["val"], "n_test": counts["test"]}
    params["seed"] = seed
    return SegmentationDataset(
        name="synthetic_lesions",
        spatial_dims=model.spatial_dims,
        splits=splits,
        params=params,
        metadata=metadata,
        description=(
            f"synthetic lesions {model.spatial_dims}D {'x'.join(map(str, model.shape))}, "
            f"{model.n_lesions[0]}-{model.n_lesions[1]} lesions of {model.min_volume:g}-{model.max_volume:g} voxels "
            f"({model.size_distribution})"
        ),
    )
