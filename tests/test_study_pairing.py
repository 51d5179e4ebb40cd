"""Cells that share a seed share the data split, the initial weights and the order of the training data.

The run-level verdicts pair cells by seed (loss minus baseline at the same seed); the pairing removes what a
seed does to every loss only if nothing but the loss differs between the paired cells.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

import lossbench.losses as losses_mod
import lossbench.study.datasets as datasets_mod
import lossbench.study.model as model_mod
import lossbench.study.train as train_mod
from lossbench.study.config import load_study
from lossbench.study.grid import expand_grid
from lossbench.study.train import train_cell

STUDY = """\
schema_version: 1
name: pairing
seeds: [0, 1]
dataset: {name: synthetic_lesions, spatial_dims: 2, size: 32, n_train: 4, n_val: 2, n_test: 2, n_lesions: [1, 3]}
model: {name: unet, channels: [4, 8], strides: [2], num_res_units: 1, norm: batch, dropout: 0.1}
training: {epochs: 1, batch_size: 2, lr: 1.0e-2, val_every: 1, augment: true}
losses:
  - {label: "Dice", name: dice}
  - {label: "BCE", name: bce}
  - {label: "ICI", name: ici}
"""


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture
def recorder(monkeypatch):
    """Wrap the builders the training calls: record splits, initial weights and the first training batch."""
    seen: dict[str, object] = {}
    build_splits, build_model, build_loss = (
        datasets_mod.build_splits,
        model_mod.build_model,
        losses_mod.build_loss,
    )

    def splits(*args, **kwargs):
        out = build_splits(*args, **kwargs)
        seen["splits"] = {
            name: [(s["id"], _digest(s["image"]), _digest(s["label"])) for s in view] for name, view in out.items()
        }
        return out

    def model(*args, **kwargs):
        net = build_model(*args, **kwargs)
        seen["weights"] = {k: _digest(v) for k, v in net.state_dict().items()}
        return net

    def loss(*args, **kwargs):
        fn = build_loss(*args, **kwargs)
        terms = fn.terms

        def first_batch_terms(logits, target):
            seen.setdefault("first_target", _digest(target))
            seen.setdefault("first_logits", _digest(logits))
            return terms(logits, target)

        fn.terms = first_batch_terms
        return fn

    # The training imports the builders from their modules when it runs (and from itself if it ever imports them
    # at module level).
    for mod, name, fn in (
        (datasets_mod, "build_splits", splits),
        (model_mod, "build_model", model),
        (losses_mod, "build_loss", loss),
    ):
        monkeypatch.setattr(mod, name, fn)
        if hasattr(train_mod, name):
            monkeypatch.setattr(train_mod, name, fn)
    return seen


def test_cells_differing_only_in_the_loss_share_split_weights_and_data_order(tmp_path, recorder):
    path = tmp_path / "pairing.yaml"
    path.write_text(STUDY)
    cells = expand_grid(load_study(path))
    runs = {}
    for cell in cells:
        if cell.label == "BCE":  # a cold dataset cache for one of them, as in a fresh worker process
            datasets_mod.clear_cache()
        recorder.clear()
        train_cell(cell.config, tmp_path / cell.id, device="cpu", cell_id=cell.id)
        runs[(cell.label, cell.seed)] = dict(recorder)
    for seed in (0, 1):
        dice, bce, ici = (runs[(label, seed)] for label in ("Dice", "BCE", "ICI"))
        for other in (bce, ici):
            assert other["splits"] == dice["splits"]
            assert other["weights"] == dice["weights"]
            # Same first training batch (order and augmentation) and the same network output on it.
            assert other["first_target"] == dice["first_target"]
            assert other["first_logits"] == dice["first_logits"]
    # The seed does change the initialisation and the batches (so the equalities above could fail).
    assert runs[("Dice", 0)]["weights"] != runs[("Dice", 1)]["weights"]
    assert runs[("Dice", 0)]["first_logits"] != runs[("Dice", 1)]["first_logits"]
    assert runs[("Dice", 0)]["splits"] == runs[("Dice", 1)]["splits"]  # the split is the dataset's own seed
