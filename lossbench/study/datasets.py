"""Turn a dataset named in a study into train / val / test lists of subject dicts.

The study runner only needs, per split, a list of subjects ``{"image": (C, *spatial) float32,
"label": (1, *spatial) {0, 1} float32, "id": str}``. This module is the one place that knows how
:func:`lossbench.data.build_dataset` returns them, and caches built datasets per process (building
the same synthetic dataset for every cell of a study would be wasted time; datasets are deterministic
functions of their parameters).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lossbench.errors import DataError

__all__ = ["build_splits", "dataset_registry", "SubjectView", "SPLITS", "clear_cache"]

SPLITS = ("train", "val", "test")
_CACHE: dict[str, dict[str, SubjectView]] = {}


def clear_cache() -> None:
    """Forget the datasets built in this process."""
    _CACHE.clear()


def _subject(item: Any, split: str, i: int) -> dict[str, Any]:
    if not isinstance(item, Mapping) or "image" not in item or "label" not in item:
        raise DataError(f"`{split}[{i}]` must be a dict with 'image' and 'label', got {type(item).__name__}")
    image = torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32)
    label = torch.as_tensor(np.asarray(item["label"]), dtype=torch.float32)
    if image.ndim not in (3, 4) or label.ndim != image.ndim or label.shape[1:] != image.shape[1:]:
        raise DataError(
            f"`{split}[{i}]` must hold image (C, *spatial) and label (1, *spatial) with 2 or 3 spatial dims, "
            f"got image {tuple(image.shape)} and label {tuple(label.shape)}"
        )
    return {"image": image.contiguous(), "label": (label > 0.5).float().contiguous(), "id": str(item.get("id", i))}


class SubjectView(Sequence):
    """A split as a read-only sequence of subject dicts with CPU float32 tensors, converted on access.

    Lazy datasets (subjects loaded from disk on access) stay lazy: nothing is read until a subject is asked for.
    """

    def __init__(self, items: Sequence[Any], split: str):
        self._items = items
        self.split = split

    @property
    def lazy(self) -> bool:
        """Whether the underlying dataset loads subjects on access."""
        return bool(getattr(self._items, "lazy", False))

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(index, int):
            raise TypeError(f"`index` must be an int, got {type(index).__name__}")
        if index < 0:
            index += len(self)
        return _subject(self._items[index], self.split, index)


def _as_splits(ds: Any) -> dict[str, Sequence[Any]]:
    if isinstance(ds, Mapping):
        return {s: ds[s] for s in SPLITS if s in ds}
    if hasattr(ds, "splits"):
        splits = ds.splits() if callable(ds.splits) else ds.splits
        return {s: splits[s] for s in SPLITS if s in splits}
    raise DataError(f"`dataset` must provide train/val/test splits, got {type(ds).__name__}")


def dataset_registry() -> tuple[Any, Any]:
    """``(DATASETS, build_dataset)`` of :mod:`lossbench.data` (imported lazily: data may be slow to import)."""
    import lossbench.data as data

    if hasattr(data, "DATASETS") and hasattr(data, "build_dataset"):
        return data.DATASETS, data.build_dataset
    from lossbench.data.registry import DATASETS, build_dataset

    return DATASETS, build_dataset


def build_splits(name: str, params: dict[str, Any]) -> dict[str, SubjectView]:
    """Build dataset ``name`` with ``params`` and return its ``train``/``val``/``test`` subject lists.

    Args:
        name: registry name in :data:`lossbench.data.DATASETS`.
        params: the dataset parameters from the study file.

    Returns:
        ``{"train": view, "val": view, "test": view}`` of :class:`SubjectView` (subjects hold CPU float32
        tensors; lazy datasets stay lazy).

    Raises:
        RegistryError: unknown dataset name.
        ConfigError: invalid parameters (raised by the dataset).
        DataError: the dataset lacks a split, a split is empty, or a subject is malformed.
    """
    key = json.dumps([name, params], sort_keys=True, default=str)
    if key in _CACHE:
        return _CACHE[key]
    _, build_dataset = dataset_registry()
    raw = _as_splits(build_dataset(name, **params))
    out: dict[str, SubjectView] = {}
    for split in SPLITS:
        items = raw.get(split)
        if not items:
            raise DataError(f"`{split}` split of dataset {name!r} must hold at least one subject, got none")
        out[split] = SubjectView(items, split)
    _CACHE[key] = out
    return out
