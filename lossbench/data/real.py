"""Real labelled data that ships inside installable packages (extra ``realdata``).

* :func:`nuclei2d`: the fluorescence nuclei image of the 2018 Data Science Bowl (Caicedo et al., Nature
  Methods 2019) that ``stardist`` ships in ``stardist/data/images`` (``img2d.tif``: 512x512 uint16;
  ``mask2d.tif``: instance labels of **125 nuclei**). The files are read directly with ``tifffile``;
  stardist's own (TensorFlow-dependent) modules are never imported. Touching nuclei are separated by
  removing the voxels of the higher-numbered nucleus that touch a lower-numbered one (8-neighbourhood), so
  that connected components of the binary mask are nuclei for every connectivity: the whole image then has
  exactly 125 components. The image is cut into non-overlapping square tiles that are assigned to
  train/val/test by a seeded permutation (default: 128x128 tiles, 16 of them: 10 train, 2 val, 4 test).
* :func:`brain_lesions`: real brain anatomy, the ICBM 2009a symmetric MNI152 T1 template with its white and
  grey matter probability maps that ``nilearn`` ships in ``nilearn/datasets/data`` (read with ``nibabel``),
  resampled to ``resolution`` mm and cropped to the brain; each subject gets synthetic hypointense lesions of
  heavy-tailed sizes centered in white matter (the ATLAS task is T1w stroke lesion segmentation), a smooth
  bias field and noise. All subjects share the anatomy; lesions, bias and noise differ.

Both return a :class:`~lossbench.data.base.SegmentationDataset`; a missing ``tifffile``/``stardist``/
``nilearn`` raises :class:`~lossbench.errors.MissingExtraError` naming the extra.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lossbench.data.base import (
    SegmentationDataset,
    SubjectList,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_shape,
    materialise_splits,
)
from lossbench.data.synthetic import (
    SIZE_DISTRIBUTIONS,
    _bias,
    _subject_rng,
    draw_volumes,
    lesion_shape,
    place_lesions,
)
from lossbench.errors import DataError, MissingExtraError, expect

__all__ = ["nuclei2d", "brain_lesions", "load_nuclei_image", "load_mni_template", "package_data_dir"]

EXTRA_HINT = "pip install 'lossbench[realdata]'"
NUCLEI_COUNT = 125
NUCLEI_SHAPE = (512, 512)


def package_data_dir(package: str, *parts: str) -> Path:
    """Folder ``parts`` inside the installed ``package``, located without importing the package.

    Raises:
        MissingExtraError: if the package is not installed (names the ``realdata`` extra).
        DataError: if the package is installed but the folder is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"`{package}` must be installed for this dataset, got it missing ({EXTRA_HINT})")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_dir():
        raise DataError(f"`{package}` must ship the data folder {path}, got it missing (reinstall {package})")
    return path


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"`{module}` must be installed for this dataset, got it missing ({EXTRA_HINT})"
        ) from err


# ------------------------------------------------------------------------------------------ nuclei2d


def separate_touching(instances: np.ndarray) -> np.ndarray:
    """Make instances pairwise non-adjacent so that connected components of ``instances > 0`` are the instances.

    1. Voxels of an instance that touch (8-/26-neighbourhood) an instance with a smaller non-zero id are set
       to 0, so no two different instances remain adjacent for any connectivity.
    2. Each instance keeps only its largest face-connected piece (step 1, or the annotation itself, can leave a
       few-voxel fragment attached by a corner only), so it is one component for every connectivity.

    Args:
        instances: int array (spatial), 0 = background.

    Returns:
        A copy of ``instances`` with the removed voxels set to 0 (each instance id that survives is one
        face-connected component).
    """
    lab = instances.astype(np.int64)
    big = int(lab.max()) + 1
    # smallest non-zero id in each voxel's full neighbourhood (background counts as +inf)
    low = ndimage.minimum_filter(np.where(lab > 0, lab, big), size=3, mode="constant", cval=big)
    out = instances.copy()
    out[(lab > 0) & (low < lab)] = 0
    pieces, n = ndimage.label(out > 0)  # face connectivity; a piece lies inside one instance after step 1
    if n == 0:
        return out
    sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
    owner = np.zeros(n, dtype=np.int64)
    owner[pieces[out > 0] - 1] = out[out > 0]
    # for each owner, the piece with the largest size wins (ties: lowest piece number)
    order = np.lexsort((np.arange(n), -sizes, owner))
    first = np.ones(n, dtype=bool)
    first[1:] = owner[order][1:] != owner[order][:-1]
    keep = np.zeros(n + 1, dtype=bool)
    keep[order[first] + 1] = True
    out[~keep[pieces]] = 0
    return out


def load_nuclei_image() -> tuple[np.ndarray, np.ndarray]:
    """Read stardist's 2D nuclei image and its instance mask.

    Returns:
        ``(image, instances)``: uint16 ``(512, 512)`` image and integer instance labels (125 nuclei).

    Raises:
        MissingExtraError: if ``stardist`` or ``tifffile`` is missing.
    """
    tifffile = _require("tifffile")
    folder = package_data_dir("stardist", "data", "images")
    image = tifffile.imread(folder / "img2d.tif")
    instances = tifffile.imread(folder / "mask2d.tif")
    if image.shape != NUCLEI_SHAPE or instances.shape != NUCLEI_SHAPE:
        raise DataError(f"`stardist` nuclei files must be {NUCLEI_SHAPE}, got {image.shape} and {instances.shape}")
    return image, instances


def nuclei2d(
    tile_size: int = 128,
    n_val: int = 2,
    n_test: int = 4,
    seed: int = 0,
    separate: bool = True,
) -> SegmentationDataset:
    """Real fluorescence nuclei (512x512, 125 nuclei) from stardist's data folder, tiled into train/val/test.

    Args:
        tile_size: side of the square, non-overlapping tiles in [32, 512]; ``(512 // tile_size)^2`` tiles
            (the remainder at the right/bottom edge is dropped).
        n_val: tiles for validation (>= 0).
        n_test: tiles for testing (>= 0); at least one tile must remain for training.
        seed: seed of the permutation that assigns tiles to splits.
        separate: separate touching nuclei (see :func:`separate_touching`) so components are nuclei.

    Returns:
        :class:`~lossbench.data.base.SegmentationDataset` with 2D subjects ``(1, tile, tile)``; ids are
        ``"tile-r{row}c{col}"``; ``metadata[id]`` has ``row``, ``col`` and ``n_instances`` (components of the
        tile's label with full connectivity).

    Raises:
        ConfigError: naming an invalid parameter.
        MissingExtraError: if the ``realdata`` extra is missing.
    """
    tile = check_int("tile_size", tile_size, lo=32, hi=512)
    n_tiles = (NUCLEI_SHAPE[0] // tile) * (NUCLEI_SHAPE[1] // tile)
    n_val = check_int("n_val", n_val, lo=0)
    n_test = check_int("n_test", n_test, lo=0)
    if n_val + n_test >= n_tiles:
        raise expect(
            "n_val + n_test",
            f"< the number of tiles ({n_tiles} for tile_size={tile})",
            n_val + n_test,
            "leave at least one tile for training",
        )
    seed = check_int("seed", seed, lo=0)
    separate = check_bool("separate", separate)

    image, instances = load_nuclei_image()
    if separate:
        instances = separate_touching(instances)
    img = image.astype(np.float32)
    lab = (instances > 0).astype(np.float32)
    per_row = NUCLEI_SHAPE[1] // tile
    order = np.random.default_rng(seed).permutation(n_tiles)
    assign = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    splits: dict[str, SubjectList] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for split in ("train", "val", "test"):
        items = []
        for t in sorted(int(i) for i in assign[split]):
            r, c = divmod(t, per_row)
            box = (slice(r * tile, (r + 1) * tile), slice(c * tile, (c + 1) * tile))
            sid = f"tile-r{r}c{c}"
            label = np.ascontiguousarray(lab[box])[None]
            items.append({"image": np.ascontiguousarray(img[box])[None], "label": label, "id": sid})
            n_inst = int(ndimage.label(label[0], structure=np.ones((3, 3)))[1])
            metadata[sid] = {"row": r, "col": c, "n_instances": n_inst}
        splits[split] = SubjectList.of(items)
    return SegmentationDataset(
        name="nuclei2d",
        spatial_dims=2,
        splits=splits,
        params={"tile_size": tile, "n_val": n_val, "n_test": n_test, "seed": seed, "separate": separate},
        metadata=metadata,
        description=f"stardist DSB2018 nuclei 512x512 (125 nuclei), {n_tiles} tiles of {tile}x{tile}",
    )


# ------------------------------------------------------------------------------------- brain_lesions

_MNI = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
}


@functools.lru_cache(maxsize=4)
def load_mni_template(resolution: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load nilearn's MNI152 (ICBM 2009a sym) T1, white matter and grey matter maps at ``resolution`` mm.

    The 1 mm volumes (197x233x189) are smoothed with a Gaussian of std ``(resolution - 1) / 2`` voxels (anti-
    aliasing) and resampled with linear interpolation, then cropped to the bounding box of the brain
    (``T1 > 0``). The T1 is scaled so that the mean white matter intensity is 1; tissue maps are
    probabilities in [0, 1].

    Returns:
        ``(t1, wm, gm)`` float32 arrays of equal shape (cached per resolution; do not modify them).

    Raises:
        MissingExtraError: if ``nilearn`` is not installed.
    """
    import nibabel as nib

    folder = package_data_dir("nilearn", "datasets", "data")
    vols = []
    for key in ("t1", "wm", "gm"):
        path = folder / _MNI[key]
        if not path.is_file():
            raise DataError(f"`nilearn` must ship {path.name}, got it missing in {folder}")
        vols.append(np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32)))
    t1, wm, gm = vols
    wm, gm = wm / 255.0, gm / 255.0
    if resolution != 1.0:
        sigma = max((resolution - 1.0) / 2.0, 0.0)
        out = []
        for v in (t1, wm, gm):
            if sigma > 0:
                v = ndimage.gaussian_filter(v, sigma=sigma)
            out.append(ndimage.zoom(v, 1.0 / resolution, order=1))
        t1, wm, gm = out
    nz = np.nonzero(t1 > 1e-3 * t1.max())
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in nz)
    t1, wm, gm = (np.ascontiguousarray(v[box], dtype=np.float32) for v in (t1, wm, gm))
    t1 /= float(t1[wm > 0.9].mean())
    np.clip(t1, 0.0, None, out=t1)
    np.clip(wm, 0.0, 1.0, out=wm)
    np.clip(gm, 0.0, 1.0, out=gm)
    for v in (t1, wm, gm):
        v.setflags(write=False)
    return t1, wm, gm


def _fit(vol: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Center-crop or zero-pad ``vol`` to ``shape``."""
    out = np.zeros(shape, dtype=vol.dtype)
    src, dst = [], []
    for n, m in zip(vol.shape, shape):
        if n >= m:
            a = (n - m) // 2
            src.append(slice(a, a + m))
            dst.append(slice(0, m))
        else:
            a = (m - n) // 2
            src.append(slice(0, n))
            dst.append(slice(a, a + n))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def brain_lesions(
    resolution: float = 2.0,
    size: int | list[int] | None = None,
    n_train: int = 24,
    n_val: int = 8,
    n_test: int = 16,
    seed: int = 0,
    n_lesions: list[int] | tuple[int, int] = (1, 6),
    min_volume: float = 3.0,
    max_volume: float = 1500.0,
    size_distribution: str = "loguniform",
    pareto_alpha: float = 1.0,
    non_touching: bool = True,
    contrast: float = -0.5,
    small_contrast: float = 0.4,
    noise: float = 0.05,
    bias_field: float = 0.1,
    blur: float = 0.5,
) -> SegmentationDataset:
    """Real MNI152 brain anatomy with synthetic hypointense white-matter lesions of heavy-tailed sizes (3D).

    Lesions are drawn as in :mod:`lossbench.data.synthetic` (volumes in voxels at ``resolution``), centered on
    voxels with white matter probability > 0.5 and kept inside the brain (WM + GM probability > 0.5). A lesion
    multiplies the T1 by ``1 + blur(c_k)`` with ``c_k = contrast * (small_contrast + (1 - small_contrast) * s_k)``
    (``s_k`` = log-position of the lesion volume in ``[min_volume, max_volume]``), then a bias field
    ``exp(bias_field * b)`` and Gaussian noise of std ``noise`` (white matter is 1) are applied.

    Args:
        resolution: voxel size in mm in [1, 4] (2 mm gives a 74x91x78 brain box; the paper's ATLAS data is 1 mm).
        size: output shape (int or 3 ints >= 16), center-cropped/zero-padded from the brain bounding box;
            ``None`` pads the bounding box up to multiples of 16 (80x96x80 at 2 mm).
        n_train: number of training subjects (>= 1).
        n_val: number of validation subjects (>= 0).
        n_test: number of test subjects (>= 0).
        seed: seed; subject ``i`` of a split depends only on ``(seed, split, i)`` and the parameters.
        n_lesions: ``[min, max]`` lesions per subject (uniform, inclusive).
        min_volume: smallest target lesion volume in voxels (>= 1).
        max_volume: largest target lesion volume in voxels (> ``min_volume``).
        size_distribution: ``"loguniform"`` or ``"pareto"``.
        pareto_alpha: Pareto tail index in (0, 5].
        non_touching: keep a one-voxel gap between lesions.
        contrast: relative intensity change of the largest lesions (negative = hypointense, as T1w stroke).
        small_contrast: contrast factor of the smallest lesions in [0, 1].
        noise: std of additive Gaussian noise.
        bias_field: strength of the multiplicative bias field.
        blur: partial-volume blur (voxels) of the lesion contrast.

    Returns:
        :class:`~lossbench.data.base.SegmentationDataset` of 3D subjects ``(1, *size)`` with ids
        ``"{split}-{index:04d}"``; ``metadata[id]`` has ``n_lesions`` and ``volumes``.

    Raises:
        ConfigError: naming an invalid parameter.
        MissingExtraError: if ``nilearn`` (the ``realdata`` extra) is missing.
    """
    p = _LesionParams.check(
        resolution=resolution, size=size, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed,
        n_lesions=n_lesions, min_volume=min_volume, max_volume=max_volume, size_distribution=size_distribution,
        pareto_alpha=pareto_alpha, non_touching=non_touching, contrast=contrast, small_contrast=small_contrast,
        noise=noise, bias_field=bias_field, blur=blur,
    )  # fmt: skip
    anatomy = _Anatomy.load(p)
    counts = {"train": p.n_train, "val": p.n_val, "test": p.n_test}
    splits, metadata = materialise_splits(counts, functools.partial(_lesion_subject, p, anatomy))
    return SegmentationDataset(
        name="brain_lesions",
        spatial_dims=3,
        splits=splits,
        params=p.as_params(anatomy.shape),
        metadata=metadata,
        description=f"MNI152 brain at {p.res:g} mm {'x'.join(map(str, anatomy.shape))} with synthetic WM lesions",
    )


@dataclass(frozen=True)
class _LesionParams:
    """The checked parameters of :func:`brain_lesions` (``shape`` None: padded brain box)."""

    res: float
    n_train: int
    n_val: int
    n_test: int
    seed: int
    lo: int
    hi: int
    vmin: float
    vmax: float
    dist: str
    alpha: float
    non_touching: bool
    contrast: float
    small_contrast: float
    noise: float
    bias_field: float
    blur: float
    shape: tuple[int, ...] | None

    @classmethod
    def check(cls, **kw: Any) -> _LesionParams:
        """Check every parameter, in signature order (the first invalid one is named)."""
        res = check_float("resolution", kw["resolution"], lo=1.0, hi=4.0)
        n_train = check_int("n_train", kw["n_train"], lo=1)
        n_val = check_int("n_val", kw["n_val"], lo=0)
        n_test = check_int("n_test", kw["n_test"], lo=0)
        seed = check_int("seed", kw["seed"], lo=0)
        n_lesions = kw["n_lesions"]
        if not isinstance(n_lesions, (list, tuple)) or len(n_lesions) != 2:
            raise expect("n_lesions", "a pair [min, max] of ints", repr(n_lesions))
        lo = check_int("n_lesions[0]", n_lesions[0], lo=0, hi=100)
        hi = check_int("n_lesions[1]", n_lesions[1], lo=lo, hi=100)
        vmin = check_float("min_volume", kw["min_volume"], lo=1.0)
        vmax = check_float("max_volume", kw["max_volume"], lo=vmin, lo_open=True)
        dist = check_choice("size_distribution", kw["size_distribution"], SIZE_DISTRIBUTIONS)
        alpha = check_float("pareto_alpha", kw["pareto_alpha"], lo=0.0, hi=5.0, lo_open=True)
        non_touching = check_bool("non_touching", kw["non_touching"])
        contrast = check_float("contrast", kw["contrast"], lo=-1.0, hi=2.0)
        if contrast == 0.0:
            raise expect("contrast", "non-zero", contrast)
        return cls(
            res=res, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed, lo=lo, hi=hi, vmin=vmin, vmax=vmax,
            dist=dist, alpha=alpha, non_touching=non_touching, contrast=contrast,
            small_contrast=check_float("small_contrast", kw["small_contrast"], lo=0.0, hi=1.0),
            noise=check_float("noise", kw["noise"], lo=0.0, hi=10.0),
            bias_field=check_float("bias_field", kw["bias_field"], lo=0.0, hi=1.0),
            blur=check_float("blur", kw["blur"], lo=0.0, hi=5.0),
            shape=None if kw["size"] is None else check_shape("size", kw["size"], 3, lo=16),
        )  # fmt: skip

    def as_params(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """The resolved parameters (recorded with the dataset)."""
        return {
            "resolution": self.res, "size": list(shape), "n_train": self.n_train, "n_val": self.n_val,
            "n_test": self.n_test, "seed": self.seed, "n_lesions": [self.lo, self.hi], "min_volume": self.vmin,
            "max_volume": self.vmax, "size_distribution": self.dist, "pareto_alpha": self.alpha,
            "non_touching": self.non_touching, "contrast": self.contrast, "small_contrast": self.small_contrast,
            "noise": self.noise, "bias_field": self.bias_field, "blur": self.blur,
        }  # fmt: skip


@dataclass(frozen=True)
class _Anatomy:
    """The template fitted to the output shape: T1, brain mask and the voxels where lesions may be centered."""

    t1: np.ndarray
    brain: np.ndarray
    centers: np.ndarray
    shape: tuple[int, ...]

    @classmethod
    def load(cls, p: _LesionParams) -> _Anatomy:
        """Load the template at the resolution and fit it; check that the largest lesion fits in the brain."""
        t1, wm, gm = load_mni_template(p.res)
        shape = p.shape if p.shape is not None else tuple(int(np.ceil(n / 16) * 16) for n in t1.shape)
        t1, wm, gm = (_fit(v, shape) for v in (t1, wm, gm))
        brain = (wm + gm) > 0.5
        if p.vmax > brain.sum() / 4:
            raise expect(
                "max_volume", f"<= a quarter of the brain ({brain.sum() / 4:g} voxels at {p.res:g} mm)", p.vmax
            )
        return cls(t1=t1, brain=brain, centers=wm > 0.5, shape=shape)


def _lesion_subject(p: _LesionParams, a: _Anatomy, split: str, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Subject ``index`` of ``split``: lesions placed in white matter, contrast, bias field and noise."""
    rng = _subject_rng(p.seed, split, index)
    k = int(rng.integers(p.lo, p.hi + 1))
    targets = np.sort(draw_volumes(rng, k, p.vmin, p.vmax, p.dist, p.alpha))[::-1]
    shapes = [lesion_shape(rng, v, 3) for v in targets]
    instances, placed = place_lesions(rng, a.brain, shapes, p.non_touching, centers=a.centers)
    image = a.t1.copy()
    if placed:
        s = np.clip(np.log(targets[placed] / p.vmin) / np.log(p.vmax / p.vmin), 0.0, 1.0)
        lut = np.zeros(len(placed) + 1, dtype=np.float32)
        lut[1:] = p.contrast * (p.small_contrast + (1.0 - p.small_contrast) * s)
        effect = lut[instances]
        if p.blur > 0:
            effect = ndimage.gaussian_filter(effect, sigma=p.blur, truncate=3.0)
        image *= 1.0 + effect
    image *= np.exp(np.float32(p.bias_field) * _bias(rng, a.shape))
    if p.noise > 0:
        image += np.float32(p.noise) * rng.standard_normal(a.shape, dtype=np.float32)
    sid = f"{split}-{index:04d}"
    subject = {
        "image": image.astype(np.float32)[None],
        "label": (instances > 0).astype(np.float32)[None],
        "id": sid,
    }
    volumes = np.bincount(instances.ravel(), minlength=len(placed) + 1)[1:]
    return subject, {"n_lesions": len(placed), "volumes": volumes.astype(int).tolist()}
