"""The dataset contract shared by every dataset factory, and parameter checks used by them.

A dataset factory (see :mod:`lossbench.data.registry`) returns a :class:`SegmentationDataset`:

* ``dataset.splits``: ``{"train": subjects, "val": subjects, "test": subjects}``, where ``subjects`` is a
  :class:`SubjectList` (a read-only sequence; it may load lazily from disk and caches nothing itself);
* ``dataset.train`` / ``dataset.val`` / ``dataset.test``: the same three sequences;
* each subject is a dict ``{"image": float32 (1, *spatial), "label": float32 (1, *spatial) with values 0/1,
  "id": str}`` — channel-first, MONAI dictionary style, ready for ``monai.data.Dataset`` and the transforms of
  :func:`lossbench.data.transforms.make_transforms` (which do the per-subject z-score normalisation);
* ``dataset.metadata``: ``{id: {...}}`` extra facts per subject (for synthetic data e.g. the number of lesions
  and their volumes), kept out of the subject dicts so that collation only sees image/label/id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossbench.errors import ConfigError, DataError, expect

__all__ = [
    "Subject",
    "SubjectList",
    "SegmentationDataset",
    "SPLITS",
    "check_int",
    "check_float",
    "check_bool",
    "check_choice",
    "check_spatial_dims",
    "check_shape",
    "check_subject",
    "materialise_splits",
]

Subject = dict[str, Any]
SPLITS = ("train", "val", "test")


class SubjectList(Sequence):
    """Read-only sequence of subjects: either materialised dicts or ids plus a loader called on access.

    Args:
        ids: subject ids, in order.
        loader: ``loader(id) -> subject dict``; ``None`` when ``items`` are given.
        items: materialised subject dicts (same order as ``ids``).
    """

    def __init__(
        self,
        ids: Sequence[str],
        loader: Callable[[str], Subject] | None = None,
        items: Sequence[Subject] | None = None,
    ):
        if (loader is None) == (items is None):
            raise ConfigError("SubjectList needs exactly one of `loader` and `items`")
        self.ids = list(ids)
        self._loader = loader
        self._items = list(items) if items is not None else None

    @classmethod
    def of(cls, items: Sequence[Subject]) -> SubjectList:
        """Wrap already materialised subject dicts."""
        return cls([s["id"] for s in items], items=items)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._items is not None:
            return self._items[index]
        return self._loader(self.ids[index])

    def __iter__(self) -> Iterator[Subject]:
        for i in range(len(self)):
            yield self[i]

    @property
    def lazy(self) -> bool:
        """True when subjects are loaded on access."""
        return self._items is None

    def __repr__(self) -> str:
        return f"SubjectList(n={len(self)}, lazy={self.lazy})"


@dataclass
class SegmentationDataset:
    """Train/val/test subjects of one binary segmentation task (see the module docstring for the subject format).

    Attributes:
        name: registry name of the dataset.
        spatial_dims: 2 or 3.
        splits: ``{"train", "val", "test"}`` -> :class:`SubjectList`.
        params: the resolved parameters the dataset was built with (for results files).
        metadata: subject id -> dict of extra facts.
        description: one line for reports.
    """

    name: str
    spatial_dims: int
    splits: dict[str, SubjectList]
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""

    @property
    def train(self) -> SubjectList:
        """Training subjects."""
        return self.splits["train"]

    @property
    def val(self) -> SubjectList:
        """Validation subjects."""
        return self.splits["val"]

    @property
    def test(self) -> SubjectList:
        """Test subjects."""
        return self.splits["test"]

    def split(self, name: str) -> SubjectList:
        """Return split ``name`` (one of ``"train"``, ``"val"``, ``"test"``)."""
        if name not in self.splits:
            raise expect("split", f"one of {list(self.splits)}", repr(name))
        return self.splits[name]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"SegmentationDataset({self.name!r}, {self.spatial_dims}D, {sizes})"


# ------------------------------------------------------------------------------------------ checks


def materialise_splits(
    counts: dict[str, int], make: Callable[[str, int], tuple[Subject, dict[str, Any]]]
) -> tuple[dict[str, SubjectList], dict[str, dict[str, Any]]]:
    """Build every subject of every split now, in split order, then index order.

    Args:
        counts: split name -> number of subjects.
        make: ``make(split, index) -> (subject, metadata)``.

    Returns:
        ``(splits, metadata)``: split name -> :class:`SubjectList`, subject id -> its metadata.
    """
    splits: dict[str, SubjectList] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for split, n in counts.items():
        items = []
        for i in range(n):
            subject, meta = make(split, i)
            items.append(subject)
            metadata[subject["id"]] = meta
        splits[split] = SubjectList.of(items)
    return splits, metadata


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as int if it is an integer in ``[lo, hi]``, else raise :class:`ConfigError` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise expect(name, "an int" + _range(lo, hi), repr(value))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise expect(name, "an int" + _range(lo, hi), value)
    return int(value)


def check_float(
    name: str, value: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
) -> float:
    """Return ``value`` as float if it is a finite number in ``[lo, hi]`` (``(lo, hi]`` if ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise expect(name, "a number" + _range(lo, hi, lo_open), repr(value))
    v = float(value)
    bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
    if not math.isfinite(v) or bad_lo or (hi is not None and v > hi):
        raise expect(name, "a finite number" + _range(lo, hi, lo_open), value)
    return v


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else raise :class:`ConfigError`."""
    if not isinstance(value, (bool, np.bool_)):
        raise expect(name, "true or false", repr(value))
    return bool(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise :class:`ConfigError` with a suggestion."""
    from lossbench.registry import suggest

    if not isinstance(value, str) or value not in choices:
        raise expect(name, f"one of {list(choices)}", repr(value), suggest(str(value), list(choices)).strip())
    return value


def check_spatial_dims(value: Any) -> int:
    """Return ``spatial_dims`` if it is 2 or 3."""
    if isinstance(value, bool) or value not in (2, 3):
        raise expect("spatial_dims", "2 or 3", repr(value))
    return int(value)


def check_shape(name: str, value: Any, spatial_dims: int, lo: int = 1) -> tuple[int, ...]:
    """Turn an int or a sequence of ``spatial_dims`` ints (each ``>= lo``) into a shape tuple."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,) * spatial_dims
    if not isinstance(value, (list, tuple)) or len(value) != spatial_dims:
        raise expect(name, f"an int or a list of {spatial_dims} ints", repr(value))
    return tuple(check_int(f"{name}[{i}]", v, lo=lo) for i, v in enumerate(value))


def _range(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def check_subject(subject: Subject, spatial_dims: int | None = None) -> None:
    """Raise :class:`DataError` unless ``subject`` follows the documented subject format.

    Args:
        subject: dict with ``image`` and ``label`` float32 arrays of shape ``(1, *spatial)`` and a str ``id``.
        spatial_dims: expected number of spatial dims (``None``: 2 or 3).

    Raises:
        DataError: naming the offending key.
    """
    for key in ("image", "label", "id"):
        if key not in subject:
            raise DataError(f"`subject` must have keys image, label, id, got {sorted(subject)}")
    if not isinstance(subject["id"], str):
        raise DataError(f"`subject['id']` must be a str, got {type(subject['id']).__name__}")
    img, lab = subject["image"], subject["label"]
    dims = (spatial_dims,) if spatial_dims else (2, 3)
    for key, arr in (("image", img), ("label", lab)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
            raise DataError(f"`subject['{key}']` must be a float32 ndarray, got {getattr(arr, 'dtype', type(arr))}")
        if arr.ndim - 1 not in dims or arr.shape[0] != 1:
            raise DataError(
                f"`subject['{key}']` must have shape (1, *spatial) with {dims} spatial dims, got {arr.shape}"
            )
    if img.shape != lab.shape:
        raise DataError(f"`subject['label']` must have the image's shape {img.shape}, got {lab.shape}")
    if not np.isin(lab, (0.0, 1.0)).all():
        raise DataError(f"`subject['label']` must be binary (0/1), got values {np.unique(lab)[:5].tolist()}")
