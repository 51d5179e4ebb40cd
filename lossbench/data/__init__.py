"""Synthetic scenes and datasets, real datasets from installed packages, and MONAI transforms.

* :mod:`lossbench.data.scenes`: small deterministic label/prediction scenes (``SCENES``, ``all_scenes``).
* :mod:`lossbench.data.base`: the dataset contract: a :class:`SegmentationDataset` with ``splits`` train/val/test,
  each a sequence of subject dicts ``{"image": float32 (1, *spatial), "label": float32 (1, *spatial) 0/1,
  "id": str}``.
* ``DATASETS`` / ``build_dataset(name, **params)``: the registry used by study files (``synthetic_lesions``,
  ``nuclei2d``, ``brain_lesions``, ``nifti_folder``).
* ``make_transforms(mode, spatial_dims, patch_size, augment)``: the paper's MONAI training/eval transforms.
"""

from lossbench.data.base import SegmentationDataset, SubjectList
from lossbench.data.registry import DATASETS, build_dataset, list_datasets
from lossbench.data.scenes import SCENES, Scene, all_scenes, get_scene
from lossbench.data.transforms import TransformPair, make_transforms

__all__ = [
    "Scene",
    "SCENES",
    "all_scenes",
    "get_scene",
    "SegmentationDataset",
    "SubjectList",
    "DATASETS",
    "build_dataset",
    "list_datasets",
    "make_transforms",
    "TransformPair",
]
