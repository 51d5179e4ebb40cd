"""``nifti_folder``: your own NIfTI images and binary masks, e.g. the ATLAS R2.0 release in its BIDS layout.

Two layouts are understood (``layout="auto"`` picks ``"folders"`` when ``root/image_dir`` exists, else
``"atlas"``):

``"folders"`` — images and masks in two folders, matched by file name (nnU-Net style suffixes allowed)::

    root/images/case01.nii.gz        root/labels/case01.nii.gz
    root/images/case02_0000.nii.gz   root/labels/case02.nii.gz      (image_suffix="_0000")

``"atlas"`` — BIDS as in the ATLAS R2.0 release: searched recursively, image and mask side by side, with the
same file-name prefix (the subject id)::

    root/.../sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz
    root/.../sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz

All pairs are found and their headers are checked when the dataset is built (missing partners and shape
mismatches raise :class:`~lossbench.errors.DataError` listing the subjects); voxel data is read when a subject
is accessed (the subject lists are lazy), when masks are also checked to be binary. Each subject is then
optionally resampled to ``resolution`` mm (image: linear, mask: linear then ``>= 0.5``) and center-cropped or
zero-padded to ``size``. Splits come from a JSON ``split_file`` (``{"train": [ids], "val": [...],
"test": [...]}``) or from a seeded permutation of the sorted ids.
"""

from __future__ import annotations

import json
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
    check_spatial_dims,
)
from lossbench.errors import DataError, expect

__all__ = ["nifti_folder", "find_pairs", "LAYOUTS", "ATLAS_IMAGE_SUFFIX", "ATLAS_LABEL_SUFFIX"]

LAYOUTS = ("auto", "folders", "atlas")
ATLAS_IMAGE_SUFFIX = "_T1w"
ATLAS_LABEL_SUFFIX = "_label-L_desc-T1lesion_mask"
_EXTS = (".nii.gz", ".nii")


def _stem(path: Path) -> str | None:
    """File name without the NIfTI extension, or None for a non-NIfTI file."""
    for ext in _EXTS:
        if path.name.endswith(ext):
            return path.name[: -len(ext)]
    return None


def _index(files: list[Path], suffix: str, what: str) -> dict[str, Path]:
    """Map case id -> file for NIfTI files whose stem ends with ``suffix`` (id = stem minus suffix)."""
    out: dict[str, Path] = {}
    for f in sorted(files):
        stem = _stem(f)
        if stem is None or not stem.endswith(suffix) or len(stem) == len(suffix):
            continue
        key = stem[: len(stem) - len(suffix)] if suffix else stem
        if key in out:
            raise DataError(f"`{what}` must have one file per subject, got {out[key]} and {f} for {key!r}")
        out[key] = f
    return out


def find_pairs(
    root: str | Path,
    layout: str = "auto",
    image_dir: str = "images",
    label_dir: str = "labels",
    image_suffix: str | None = None,
    label_suffix: str | None = None,
) -> dict[str, tuple[Path, Path]]:
    """Find (image, mask) file pairs under ``root``.

    Args:
        root: dataset folder.
        layout: ``"auto"``, ``"folders"`` or ``"atlas"`` (see the module docstring).
        image_dir: images folder (``"folders"`` layout).
        label_dir: masks folder (``"folders"`` layout).
        image_suffix: file-name suffix (before the extension) of images; default ``""`` for ``"folders"``
            and ``"_T1w"`` for ``"atlas"``.
        label_suffix: suffix of masks; default ``""`` / ``"_label-L_desc-T1lesion_mask"``.

    Returns:
        ``{id: (image_path, label_path)}`` sorted by id.

    Raises:
        DataError: if ``root`` is missing, nothing is found, or an image or mask has no partner.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"`root` must be an existing folder, got {str(root)!r}")
    layout = check_choice("layout", layout, LAYOUTS)
    if layout == "auto":
        layout = "folders" if (root / image_dir).is_dir() else "atlas"
    if layout == "folders":
        isuf = "" if image_suffix is None else image_suffix
        lsuf = "" if label_suffix is None else label_suffix
        for name, sub in (("image_dir", image_dir), ("label_dir", label_dir)):
            if not (root / sub).is_dir():
                raise DataError(f"`{name}` must be a folder inside {str(root)!r}, got {sub!r} (not found)")
        images = _index(list((root / image_dir).iterdir()), isuf, "image_dir")
        labels = _index(list((root / label_dir).iterdir()), lsuf, "label_dir")
    else:
        isuf = ATLAS_IMAGE_SUFFIX if image_suffix is None else image_suffix
        lsuf = ATLAS_LABEL_SUFFIX if label_suffix is None else label_suffix
        if not isuf or not lsuf or isuf == lsuf:
            raise expect("image_suffix", "non-empty and different from label_suffix for layout='atlas'", repr(isuf))
        files = [p for p in root.rglob("*.nii*") if p.is_file()]
        images = _index(files, isuf, "root")
        labels = _index(files, lsuf, "root")
    if not images and not labels:
        raise DataError(
            f"`root` must contain NIfTI images and masks ({layout!r} layout, image suffix {isuf!r}, "
            f"mask suffix {lsuf!r}), got none in {str(root)!r}"
        )
    no_label = sorted(set(images) - set(labels))
    no_image = sorted(set(labels) - set(images))
    if no_label or no_image:
        parts = []
        if no_label:
            parts.append(f"{len(no_label)} image(s) without a mask (suffix {lsuf!r}), e.g. {no_label[:5]}")
        if no_image:
            parts.append(f"{len(no_image)} mask(s) without an image (suffix {isuf!r}), e.g. {no_image[:5]}")
        raise DataError(f"`root` must hold complete image/mask pairs, got {'; '.join(parts)}")
    return {k: (images[k], labels[k]) for k in sorted(images)}


def _squeeze(shape: tuple[int, ...], spatial_dims: int, path: Path) -> tuple[int, ...]:
    s = list(shape)
    while len(s) > spatial_dims and s[-1] == 1:
        s.pop()
    if len(s) != spatial_dims:
        raise DataError(f"`{path.name}` must be a {spatial_dims}D volume, got shape {tuple(shape)}")
    return tuple(s)


def _fit(vol: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Center-crop or zero-pad ``vol`` to ``shape``."""
    out = np.zeros(shape, dtype=vol.dtype)
    src, dst = [], []
    for n, m in zip(vol.shape, shape):
        a = abs(n - m) // 2
        src.append(slice(a, a + m) if n >= m else slice(0, n))
        dst.append(slice(0, m) if n >= m else slice(a, a + n))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def _read_split_file(path: str | Path, ids: list[str]) -> dict[str, list[str]]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"`split_file` must be an existing JSON file, got {str(p)!r}")
    try:
        spec = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"`split_file` must be valid JSON, got an error at line {err.lineno}: {err.msg}") from err
    if not isinstance(spec, dict) or set(spec) - {"train", "val", "test"} or "train" not in spec:
        got = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise DataError(f"`split_file` must map 'train' (and optionally 'val', 'test') to lists of ids, got {got}")
    known, seen = set(ids), set()
    out = {}
    for split in ("train", "val", "test"):
        lst = spec.get(split, [])
        if not isinstance(lst, list) or not all(isinstance(i, str) for i in lst):
            raise DataError(f"`split_file['{split}']` must be a list of subject ids (strings), got {lst!r:.80}")
        unknown = [i for i in lst if i not in known]
        if unknown:
            raise DataError(
                f"`split_file['{split}']` must list subjects found in `root`, got unknown ids {unknown[:5]}"
            )
        dup = [i for i in lst if i in seen]
        if dup:
            raise DataError(f"`split_file` must list every subject once, got {dup[:5]} more than once")
        seen.update(lst)
        out[split] = list(lst)
    if not out["train"]:
        raise DataError("`split_file['train']` must list at least one subject, got none")
    return out


def nifti_folder(
    root: str,
    layout: str = "auto",
    image_dir: str = "images",
    label_dir: str = "labels",
    image_suffix: str | None = None,
    label_suffix: str | None = None,
    spatial_dims: int = 3,
    size: int | list[int] | None = None,
    resolution: float | list[float] | None = None,
    binarize: bool = False,
    split_file: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache: bool = False,
) -> SegmentationDataset:
    """A folder of NIfTI images and binary masks (your own data, e.g. ATLAS R2.0) as a dataset.

    Args:
        root: dataset folder.
        layout: ``"auto"``, ``"folders"`` or ``"atlas"`` (see the module docstring).
        image_dir: images folder name for ``"folders"``.
        label_dir: masks folder name for ``"folders"``.
        image_suffix: image file-name suffix before the extension (default ``""``; ``"_T1w"`` for atlas).
        label_suffix: mask suffix (default ``""``; ``"_label-L_desc-T1lesion_mask"`` for atlas).
        spatial_dims: 3, or 2 for 2D NIfTI files (trailing singleton axes are dropped).
        size: output shape (int or list), center-cropped/zero-padded; ``None`` keeps the (resampled) shape,
            which then must agree across subjects.
        resolution: target voxel size in mm (number or one per axis); ``None`` keeps the voxel grid.
        binarize: treat every non-zero mask value as foreground; if False, masks must be 0/1.
        split_file: JSON file ``{"train": [...], "val": [...], "test": [...]}`` of subject ids; subjects not
            listed are not used. If ``None``, the sorted ids are permuted with ``seed`` and split by fractions.
        val_fraction: fraction of subjects for validation (rounded; without ``split_file``).
        test_fraction: fraction for testing (rounded; without ``split_file``).
        seed: seed of the split permutation.
        cache: keep loaded subjects in memory (faster epochs, more memory).

    Returns:
        :class:`~lossbench.data.base.SegmentationDataset` with lazy subject lists; ``metadata[id]`` has
        ``image`` and ``label`` paths, the original ``shape`` and ``spacing``.

    Raises:
        ConfigError: naming an invalid parameter.
        DataError: missing folders or partners, shape mismatches, unequal shapes without ``size``; when a subject
            is loaded: a non-binary mask (with ``binarize=False``) or non-finite image values.
    """
    d = check_spatial_dims(spatial_dims)
    opts = _Options(
        shape_out=None if size is None else check_shape("size", size, d, lo=1),
        res=_check_resolution(resolution, d),
        binarize=check_bool("binarize", binarize),
        **_check_fractions(val_fraction, test_fraction),
        seed=check_int("seed", seed, lo=0),
        cache=check_bool("cache", cache),
    )
    _check_names(image_dir, label_dir, image_suffix, label_suffix, split_file)
    pairs = find_pairs(root, layout, image_dir, label_dir, image_suffix, label_suffix)
    metadata = _read_headers(pairs, d, opts)
    ids = list(pairs)
    if split_file is not None:
        assign = _read_split_file(split_file, ids)
    else:
        assign = _split_by_fractions(ids, opts)
    load = _SubjectReader(pairs, metadata, opts)
    splits = {k: SubjectList(v, loader=load) for k, v in assign.items()}
    return SegmentationDataset(
        name="nifti_folder",
        spatial_dims=d,
        splits=splits,
        params={
            "root": str(root),
            "layout": layout,
            "image_dir": image_dir,
            "label_dir": label_dir,
            "image_suffix": image_suffix,
            "label_suffix": label_suffix,
            "spatial_dims": d,
            "size": None if opts.shape_out is None else list(opts.shape_out),
            "resolution": None if opts.res is None else list(opts.res),
            "binarize": opts.binarize,
            "split_file": None if split_file is None else str(split_file),
            "val_fraction": opts.vf,
            "test_fraction": opts.tf,
            "seed": opts.seed,
            "cache": opts.cache,
        },  # fmt: skip
        metadata=metadata,
        description=f"NIfTI folder {root} ({len(ids)} subjects)",
    )


@dataclass(frozen=True)
class _Options:
    """The checked options of :func:`nifti_folder` that shape the subjects and the splits."""

    shape_out: tuple[int, ...] | None
    res: tuple[float, ...] | None
    binarize: bool
    vf: float
    tf: float
    seed: int
    cache: bool


def _check_resolution(resolution: float | list[float] | None, d: int) -> tuple[float, ...] | None:
    if resolution is None:
        return None
    if isinstance(resolution, (list, tuple)):
        if len(resolution) != d:
            raise expect("resolution", f"a number or a list of {d} numbers", repr(resolution))
        return tuple(check_float(f"resolution[{i}]", r, lo=0.0, lo_open=True) for i, r in enumerate(resolution))
    return (check_float("resolution", resolution, lo=0.0, lo_open=True),) * d


def _check_fractions(val_fraction: float, test_fraction: float) -> dict[str, float]:
    vf = check_float("val_fraction", val_fraction, lo=0.0, hi=1.0)
    tf = check_float("test_fraction", test_fraction, lo=0.0, hi=1.0)
    if vf + tf >= 1.0:
        raise expect("val_fraction + test_fraction", "< 1 (some subjects must be left for training)", vf + tf)
    return {"vf": vf, "tf": tf}


def _check_names(image_dir: Any, label_dir: Any, image_suffix: Any, label_suffix: Any, split_file: Any) -> None:
    """Folder names are non-empty strings, suffixes strings or None, the split file a path or None."""
    for name, value in (("image_dir", image_dir), ("label_dir", label_dir)):
        if not isinstance(value, str) or not value:
            raise expect(name, "a non-empty folder name", repr(value))
    for name, value in (("image_suffix", image_suffix), ("label_suffix", label_suffix)):
        if value is not None and not isinstance(value, str):
            raise expect(name, "a string or None", repr(value))
    if split_file is not None and not isinstance(split_file, (str, Path)):
        raise expect("split_file", "a path or None", repr(split_file))


def _read_headers(pairs: dict[str, tuple[Path, Path]], d: int, opts: _Options) -> dict[str, dict[str, Any]]:
    """Per subject: paths, shape and voxel size from the headers (no voxel data is read).

    Raises:
        DataError: a mask whose shape differs from its image's, a voxel size that cannot be resampled, or subjects
            of different (resampled) shapes without ``size``.
    """
    import nibabel as nib

    metadata: dict[str, dict[str, Any]] = {}
    final_shapes = {}
    for sid, (ip, lp) in pairs.items():
        ih, lh = nib.load(str(ip)).header, nib.load(str(lp)).header
        ishape = _squeeze(tuple(int(n) for n in ih.get_data_shape()), d, ip)
        lshape = _squeeze(tuple(int(n) for n in lh.get_data_shape()), d, lp)
        if ishape != lshape:
            raise DataError(
                f"`{lp.name}` must have the shape of its image {ip.name} {ishape}, got {lshape} (subject {sid!r})"
            )
        spacing = tuple(float(z) for z in ih.get_zooms()[:d])
        if opts.res is not None and any(z <= 0 for z in spacing):
            raise DataError(f"`{ip.name}` must have positive voxel sizes to resample, got {spacing}")
        metadata[sid] = {"image": str(ip), "label": str(lp), "shape": list(ishape), "spacing": list(spacing)}
        if opts.shape_out is None and opts.res is None:
            final_shapes[sid] = ishape
        elif opts.shape_out is None:
            final_shapes[sid] = tuple(int(round(n * z / r)) for n, z, r in zip(ishape, spacing, opts.res))
    if opts.shape_out is None and len(set(final_shapes.values())) > 1:
        examples = dict(list(final_shapes.items())[:3])
        raise DataError(
            f"`size` must be set when subjects have different shapes, got shapes such as {examples}",
        )
    return metadata


def _split_by_fractions(ids: list[str], opts: _Options) -> dict[str, list[str]]:
    """A seeded permutation of the sorted ids cut by the validation and test fractions."""
    order = [ids[i] for i in np.random.default_rng(opts.seed).permutation(len(ids))]
    n_test = int(round(opts.tf * len(ids)))
    n_val = int(round(opts.vf * len(ids)))
    if len(ids) - n_val - n_test < 1:
        raise DataError(f"`root` must hold enough subjects for a training split, got {len(ids)}")
    return {
        "train": sorted(order[n_val + n_test :]),
        "val": sorted(order[:n_val]),
        "test": sorted(order[n_val : n_val + n_test]),
    }


class _SubjectReader:
    """Reads one subject when it is accessed: checks, optional resampling and cropping; caches when asked."""

    def __init__(self, pairs: dict[str, tuple[Path, Path]], metadata: dict[str, dict[str, Any]], opts: _Options):
        self.pairs = pairs
        self.metadata = metadata
        self.opts = opts
        self.store: dict[str, dict[str, Any]] = {}

    def __call__(self, sid: str) -> dict[str, Any]:
        if sid in self.store:
            return self.store[sid]
        image, label = self._read(sid)
        opts = self.opts
        if opts.res is not None:
            factors = [z / r for z, r in zip(self.metadata[sid]["spacing"], opts.res)]
            if any(abs(f - 1.0) > 1e-6 for f in factors):
                image = ndimage.zoom(image, factors, order=1)
                label = (ndimage.zoom(label, factors, order=1) >= 0.5).astype(np.float32)
        if opts.shape_out is not None:
            image, label = _fit(image, opts.shape_out), _fit(label, opts.shape_out)
        subject = {"image": image.astype(np.float32)[None], "label": label[None], "id": sid}
        if opts.cache:
            self.store[sid] = subject
        return subject

    def _read(self, sid: str) -> tuple[np.ndarray, np.ndarray]:
        """The image (float32) and the mask (0/1 float32) as stored, after checking their values."""
        import nibabel as nib

        ip, lp = self.pairs[sid]
        shape = self.metadata[sid]["shape"]
        image = np.asarray(nib.load(str(ip)).get_fdata(dtype=np.float32)).reshape(shape)
        label = np.asarray(nib.load(str(lp)).dataobj).reshape(shape)
        if not np.isfinite(image).all():
            raise DataError(f"`{ip.name}` must hold finite values, got NaN or inf (subject {sid!r})")
        if self.opts.binarize:
            label = label != 0
        else:
            values = np.unique(label)
            if not np.isin(values, (0, 1)).all():
                raise DataError(
                    f"`{lp.name}` must be a binary mask (0/1), got values {values[:6].tolist()} (subject {sid!r}); "
                    "use binarize=True to treat every non-zero value as foreground"
                )
        return image, label.astype(np.float32)
