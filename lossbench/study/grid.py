"""Expand a study into cells (dataset x seed x loss) with stable, readable ids.

A cell is the unit of work, of resumption and of distribution. Its ``config`` is a plain,
JSON-serialisable dict that fully determines the computation (dataset, network, training schedule,
evaluation options, loss name and parameters, seed), so a cell can be shipped to another process or
machine and re-run from its ``config.json`` alone.

Cell id: ``<slug(label)>[-<slug(dataset label)>]-s<seed>-<hash8>`` where ``hash8`` is the first 8 hex
digits of the SHA-256 of the canonical JSON of the cell's identity (:func:`cell_identity`: the config
without the human labels, training/evaluation options reduced to non-default values). The same study
file always yields the same ids; changing anything that affects the computation (a loss parameter,
the number of epochs, the connectivity of the evaluation, ...) changes the id, so a resumed run never
mixes results computed under different settings, while a lossbench upgrade that only adds options
keeps the ids of finished cells. The dataset label appears in the id only
when the study lists several datasets.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from lossbench.study.config import SCHEMA_VERSION, DatasetFacts, StudyConfig

__all__ = ["Cell", "expand_grid", "cell_hash", "cell_identity", "slug", "steps_per_epoch", "grid_steps"]


def slug(text: str, max_len: int = 40) -> str:
    """Lower-case ``text`` and replace every run of non-alphanumerics by one ``-`` (e.g. "ICI 1/4" -> "ici-1-4")."""
    s = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return (s[:max_len].rstrip("-")) or "cell"


#: Keys of a cell config that do not change what is computed (excluded from the hash).
_NOT_HASHED = ("label", "dataset_label", "study")


def cell_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a cell's id is derived from: its config minus labels, with schema defaults left out.

    ``training`` and ``evaluation`` are reduced to the values that differ from lossbench's defaults, so that a
    later lossbench adding an option (with a default) does not rename, and so recompute, the finished cells of a
    long study. Loss, dataset and model parameters are the ones written in the study file.
    """
    from lossbench.study.config import EvaluationConfig, TrainingConfig

    out = {k: v for k, v in config.items() if k not in _NOT_HASHED}
    out["training"] = TrainingConfig.model_validate(config["training"]).model_dump(mode="json", exclude_defaults=True)
    out["evaluation"] = EvaluationConfig.model_validate(config["evaluation"]).model_dump(
        mode="json", exclude_defaults=True
    )
    return out


def cell_hash(config: dict[str, Any]) -> str:
    """First 8 hex digits of the SHA-256 of the canonical JSON (sorted keys) of :func:`cell_identity`."""
    text = json.dumps(cell_identity(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


@dataclass(frozen=True)
class Cell:
    """One (dataset, seed, loss) combination of a study.

    Attributes:
        id: stable readable id, also the cell's folder name.
        index: position in the grid (dataset-major, then seed, then loss).
        label: the loss label from the study file.
        dataset_label: the dataset label.
        seed: the seed.
        config: everything the training needs, JSON-serialisable (written to ``config.json``).
    """

    id: str
    index: int
    label: str
    dataset_label: str
    seed: int
    config: dict[str, Any]


def steps_per_epoch(training: dict[str, Any], n_train: int) -> int:
    """Optimiser steps per epoch: ``ceil(items / batch_size)``, capped by ``max_steps_per_epoch``.

    ``items`` is the number of training subjects in whole-image mode and subjects x
    ``patches_per_subject`` in patch mode.
    """
    items = n_train * (training["patches_per_subject"] if training["mode"] == "patch" else 1)
    steps = math.ceil(items / training["batch_size"]) if items else 0
    cap = training.get("max_steps_per_epoch")
    return min(steps, cap) if cap else steps


def expand_grid(study: StudyConfig) -> list[Cell]:
    """All cells of ``study`` in execution order (dataset, then seed, then loss).

    Args:
        study: a schema-checked study.

    Returns:
        The cells; ids are unique within the study.
    """
    training = study.training.model_dump(mode="json")
    evaluation = study.evaluation.model_dump(mode="json")
    model = {"name": study.model.name, **study.model.params}
    several = len(study.dataset_list()) > 1
    cells: list[Cell] = []
    for _, ds in study.dataset_list():
        for seed in study.seeds:
            for loss in study.losses:
                config = {
                    "schema_version": SCHEMA_VERSION,
                    "study": study.name,
                    "label": loss.label,
                    "dataset_label": ds.label,
                    "seed": seed,
                    "loss": {"name": loss.name, **loss.params},
                    "dataset": {"name": ds.name, **ds.params},
                    "model": model,
                    "training": training,
                    "evaluation": evaluation,
                }
                # Canonicalise through JSON so that the hash and config.json see the same values.
                config = json.loads(json.dumps(config, default=str))
                parts = [slug(str(loss.label))] + ([slug(str(ds.label), 20)] if several else [])
                cid = "-".join(parts) + f"-s{seed}-{cell_hash(config)}"
                cells.append(Cell(cid, len(cells), str(loss.label), str(ds.label), seed, config))
    seen: set[str] = set()
    for c in cells:
        if c.id in seen:  # two labels with the same slug and identical configs
            raise study.error(("losses",), f"two loss configurations produce the same cell id {c.id!r}")
        seen.add(c.id)
    return cells


def grid_steps(cells: list[Cell], facts: dict[str, DatasetFacts]) -> dict[str, int]:
    """Total optimiser steps of every cell (epochs x steps per epoch), by cell id."""
    out = {}
    for c in cells:
        tr = c.config["training"]
        out[c.id] = tr["epochs"] * steps_per_epoch(tr, facts[c.dataset_label].n_train)
    return out
