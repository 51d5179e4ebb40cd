"""Dataset registry: study files name a dataset, the registry turns the name and parameters into data.

``build_dataset(name, **params)`` first checks that every parameter name is one the factory accepts
(:class:`~lossbench.errors.ConfigError` naming the unknown parameter, with a suggestion), then the factory
checks every value. A study runner calls it with the study file's ``dataset:`` mapping minus ``name``, plus
``seed``::

    build_dataset("synthetic_lesions", spatial_dims=3, size=48, n_train=24, n_val=8, n_test=16, seed=0)

Registered datasets (all return a :class:`~lossbench.data.base.SegmentationDataset`):

* ``synthetic_lesions``: :func:`lossbench.data.synthetic.synthetic_lesions` (2D/3D, no extra needed);
* ``nuclei2d``: :func:`lossbench.data.real.nuclei2d` (extra ``realdata``);
* ``brain_lesions``: :func:`lossbench.data.real.brain_lesions` (extra ``realdata``);
* ``nifti_folder``: :func:`lossbench.data.nifti.nifti_folder` (your own NIfTI data, e.g. ATLAS R2.0).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from lossbench.data.base import SegmentationDataset
from lossbench.data.nifti import nifti_folder
from lossbench.data.real import brain_lesions, nuclei2d
from lossbench.data.synthetic import synthetic_lesions
from lossbench.errors import ConfigError
from lossbench.registry import Registry

__all__ = ["DATASETS", "build_dataset", "list_datasets"]

DATASETS: Registry[SegmentationDataset] = Registry("dataset")
DATASETS.register("synthetic_lesions", tags=("synthetic",))(synthetic_lesions)
DATASETS.register("nuclei2d", tags=("real", "realdata"))(nuclei2d)
DATASETS.register("brain_lesions", tags=("real", "realdata"))(brain_lesions)
DATASETS.register("nifti_folder", tags=("user",))(nifti_folder)


def build_dataset(name: str | Mapping[str, Any], /, **params: Any) -> SegmentationDataset:
    """Build a registered dataset.

    Args:
        name: registry name, or a mapping with a ``name`` key and the parameters (like a study's ``dataset:``).
        **params: factory parameters (merged over the mapping's; the mapping itself is not modified).

    Returns:
        The :class:`~lossbench.data.base.SegmentationDataset`.

    Raises:
        RegistryError: for an unknown name (with a "did you mean").
        ConfigError: naming an unknown or invalid parameter.
        MissingExtraError: if a real-data dataset needs the ``realdata`` extra.
    """
    if isinstance(name, Mapping):
        if "name" not in name:
            raise ConfigError(f"`dataset` must have a `name` key, got keys {sorted(name)}")
        params = {**{k: v for k, v in name.items() if k != "name"}, **params}
        name = name["name"]
    return DATASETS.build(name, **params)


def list_datasets() -> list[dict[str, Any]]:
    """Registered datasets with summary, tags and parameter defaults (required parameters show ``"<required>"``)."""
    return [
        {
            "name": e.name,
            "summary": e.summary,
            "tags": list(e.tags),
            "params": {k: ("<required>" if v is inspect.Parameter.empty else v) for k, v in e.params.items()},
        }
        for e in DATASETS
    ]
