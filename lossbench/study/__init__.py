"""Studies: validated YAML configs, grid of cells, training and evaluation, resumable results store, executors.

Entry points:

* :func:`lossbench.study.config.validate_study_file` (``lossbench validate``),
* :func:`lossbench.study.runner.run_study` (``lossbench run``),
* :func:`lossbench.study.store.load_results` / :func:`~lossbench.study.store.load_subjects` /
  :func:`~lossbench.study.store.load_history` to read a run folder (used by the report).

Submodules import torch, MONAI and the loss / data registries lazily, so ``import lossbench.study`` is cheap.
"""

from lossbench.study.config import SCHEMA_VERSION, StudyConfig, load_study, validate_study_file

__all__ = ["SCHEMA_VERSION", "StudyConfig", "load_study", "validate_study_file"]
