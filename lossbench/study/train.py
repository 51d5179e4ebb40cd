"""Train, validate and test one cell; write its files into the cell folder (``done.json`` last).

Per cell (``config`` from :mod:`lossbench.study.grid`):

1. Seed Python, NumPy and torch with the cell's seed and ask torch for deterministic algorithms, so
   the same cell on the same CPU setup (same torch thread count) gives the same numbers twice.
2. Build the dataset splits, the network (MONAI UNet) and the loss (``sigmoid=True``: the network
   emits logits); optimiser Adam.
3. Every epoch: shuffle the training subjects with a seeded generator and pass each through the
   seeded training transforms of :func:`lossbench.data.transforms.make_transforms` (z-score, the
   paper's augmentations when ``augment``; in patch mode ``patches_per_subject`` patches with a
   ``pos_fraction`` of lesion-centered ones), step through mini-batches and log the mean of every loss
   term of ``loss.terms()``. A non-finite network output or loss stops the cell: it is finished with
   ``status="diverged"`` and the reason.
4. Every ``val_every`` epochs and after the last one: predict each validation subject
   (``sigmoid(logits) >= threshold``; sliding-window inference in patch mode), record DSC and
   missed / false instances; keep the checkpoint with the highest mean val DSC (ties keep the earlier
   epoch, the paper's rule).
5. Load the best checkpoint and evaluate the test split: ATLAS metrics and detection metrics by
   instance size per subject.

Timing: each step is split into data, network forward, loss (forward and backward, measured on a
detached copy of the logits so the loss's own gradient cost is separable), network backward and
optimiser step. ``loss_share`` is the fraction of the step time spent in the loss.
"""

from __future__ import annotations

import math
import os
import random
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossbench.study.store import (
    atomic_torch_save,
    atomic_write_csv,
    atomic_write_json,
    read_json,
)

__all__ = ["train_cell", "evaluate", "seed_everything", "resolve_device", "collect_files", "CELL_FILES", "val_summary"]

#: Files of a finished cell, in the order they are written (``done.json`` always last).
CELL_FILES = (
    "config.json",
    "history.csv",
    "val_subjects.csv",
    "best.pt",
    "test_subjects.csv",
    "timing.json",
    "done.json",
)

ProgressFn = Callable[[dict[str, Any]], None]


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; ``"cuda"`` without CUDA raises.

    Raises:
        ConfigError: unknown device or CUDA requested but unavailable.
    """
    from lossbench.errors import expect

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise expect("device", "'cpu' or 'auto' on this machine", repr(device), hint="CUDA is not available")
        return device
    raise expect("device", "one of 'auto', 'cpu', 'cuda'", repr(device))


def seed_everything(seed: int) -> None:
    """Seed ``random``, NumPy and torch (all devices) and request deterministic algorithms."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _make_transforms(tr: dict[str, Any], spatial_dims: int, seed: int) -> tuple[Any, Any]:
    """Training / evaluation transforms of :func:`lossbench.data.transforms.make_transforms`, seeded."""
    from lossbench.data.transforms import make_transforms

    patch = tr["mode"] == "patch"
    train_tf, eval_tf = make_transforms(
        tr["mode"],
        spatial_dims=spatial_dims,
        patch_size=list(tr["patch_size"]) if patch else None,
        augment=tr["augment"],
        num_samples=tr["patches_per_subject"],
        pos=tr["pos_fraction"],
        neg=1.0 - tr["pos_fraction"],
    )
    train_tf.set_random_state(seed=seed)
    return train_tf, eval_tf


def _apply(tf: Any, subject: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # Clone: MONAI transforms may work in place, and the dataset's subjects are shared between cells.
    out = tf({"image": subject["image"].clone(), "label": subject["label"].clone()})
    items = out if isinstance(out, list) else [out]
    return [(torch.as_tensor(o["image"]).float(), torch.as_tensor(o["label"]).float()) for o in items]


def _epoch_batches(
    train: list[dict[str, Any]], tr: dict[str, Any], train_tf: Any, gen: torch.Generator, cache: dict[int, Any]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The mini-batches of one epoch (CPU tensors): seeded subject order, seeded transforms.

    In patch mode every subject yields ``patches_per_subject`` patches and the patches are shuffled again.
    Without augmentation in whole-image mode the (deterministic) transformed subjects of an in-memory dataset
    are cached.
    """
    order = torch.randperm(len(train), generator=gen).tolist()
    static = tr["mode"] == "whole" and not tr["augment"] and not getattr(train, "lazy", False)
    items: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in order:
        if static:
            if i not in cache:
                cache[i] = _apply(train_tf, train[i])
            items.extend(cache[i])
        else:
            items.extend(_apply(train_tf, train[i]))
    if tr["mode"] == "patch":
        perm = torch.randperm(len(items), generator=gen).tolist()
        items = [items[i] for i in perm]
    bs = tr["batch_size"]
    batches = [items[k : k + bs] for k in range(0, len(items), bs)]
    cap = tr.get("max_steps_per_epoch")
    if cap:
        batches = batches[:cap]
    return [(torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])) for batch in batches]


class _TrainingSubjects(torch.utils.data.Dataset):
    """Training subjects through the training transforms (for a multi-process ``DataLoader``)."""

    def __init__(self, subjects: Sequence[dict[str, Any]], transform: Any):
        self.subjects = subjects
        self.transform = transform

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> Any:
        s = self.subjects[index]
        return self.transform({"image": s["image"].clone(), "label": s["label"].clone()})


def _make_loader(subjects: Sequence[dict[str, Any]], train_tf: Any, tr: dict[str, Any], seed: int) -> Any:
    """A MONAI ``DataLoader`` with ``num_workers`` processes, seeded shuffling and seeded per-worker transforms.

    In patch mode a batch holds ``batch_size / patches_per_subject`` subjects, i.e. ``batch_size`` patches.
    """
    from monai.data import DataLoader, list_data_collate

    per_step = tr["batch_size"] // tr["patches_per_subject"] if tr["mode"] == "patch" else tr["batch_size"]
    return DataLoader(
        _TrainingSubjects(subjects, train_tf),
        batch_size=per_step,
        shuffle=True,
        num_workers=tr["num_workers"],
        collate_fn=list_data_collate,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


def _loader_batches(loader: Any, cap: int | None) -> Any:
    for k, batch in enumerate(loader):
        if cap and k >= cap:
            return
        yield torch.as_tensor(batch["image"]).float(), torch.as_tensor(batch["label"]).float()


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    subjects: Sequence[dict[str, Any]],
    eval_tf: Any,
    tr: dict[str, Any],
    ev: dict[str, Any],
    device: str,
) -> list[dict[str, Any]]:
    """Predict every subject and score it: one row of ATLAS + detection metrics per subject.

    Subjects are streamed (loaded, normalised by ``eval_tf``, predicted and scored a mini-batch at a time), so
    memory does not grow with the size of the split. Prediction = ``sigmoid(logits) >= threshold``; whole images
    in whole mode, sliding windows of the patch size (overlap 0.25) in patch mode.

    Returns:
        Rows with ``subject`` (the id) first, then the keys of :func:`lossbench.metrics.subject_metrics`.
    """
    from lossbench.metrics import subject_metrics

    model.eval()
    rows: list[dict[str, Any]] = []
    chunk = 1 if tr["mode"] == "patch" else tr["batch_size"]
    for k in range(0, len(subjects), chunk):
        batch = [subjects[i] for i in range(k, min(k + chunk, len(subjects)))]
        pairs = [_apply(eval_tf, s)[0] for s in batch]
        x = torch.stack([img for img, _ in pairs]).to(device)
        if tr["mode"] == "patch":
            from monai.inferers import sliding_window_inference

            logits = sliding_window_inference(
                x, roi_size=tuple(tr["patch_size"]), sw_batch_size=tr["sw_batch_size"], predictor=model, overlap=0.25
            )
        else:
            logits = model(x)
        probs = torch.sigmoid(logits)[:, 0].float().cpu()
        for s, (_, label), prob in zip(batch, pairs, probs):
            m = subject_metrics(
                (prob >= ev["threshold"]).numpy(),
                (label[0] > 0.5).numpy(),
                connectivity=ev["connectivity"],
                spacing=ev.get("spacing"),
                size_bins=tuple(ev["size_bins"]),
            )
            rows.append({"subject": s["id"], **m})
    return rows


def val_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Study-level validation numbers of the paper's Table 1 from per-subject rows.

    ``dsc`` = mean subject Dice (ATLAS policy: 1 when prediction and target are both empty) and the counts of
    :func:`lossbench.metrics.study_aggregates` (``total_mi``, ``subjects_with_mi``, ``subjects_all_mi``,
    ``total_fi``, ``subjects_with_fi``, ``subjects_without_mi_fi``, ``n_subjects``).
    """
    from lossbench.metrics import study_aggregates

    return {"dsc": float(np.mean([r["dice"] for r in rows])), **study_aggregates(rows)}


def _test_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over test subjects of every numeric per-subject metric plus the validation-style totals."""
    out: dict[str, Any] = {}
    if not rows:
        return out
    keys = [
        k for k, v in rows[0].items() if isinstance(v, (int, float, np.integer, np.floating)) and k != "connectivity"
    ]
    for k in keys:
        vals = np.asarray([float(r[k]) for r in rows], dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        out[k] = float(finite.mean()) if finite.size else float("nan")
    for k, v in val_summary(rows).items():
        if k != "dsc":
            out[k] = v
    return out


def train_cell(
    config: dict[str, Any],
    cell_dir: str | Path,
    *,
    device: str = "cpu",
    cell_id: str | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run one cell end to end and write its files into ``cell_dir`` (which must be empty or absent).

    Args:
        config: the cell configuration (``Cell.config``).
        cell_dir: output folder of the cell.
        device: resolved torch device ("cpu", "cuda", "cuda:1", ...).
        cell_id: the cell id (recorded in ``done.json``; defaults to the folder name).
        progress: optional callback receiving ``{"kind": "start"|"epoch", "cell": id, ...}`` events.

    Returns:
        The content of ``done.json``.

    Raises:
        LossbenchError: invalid configuration (normally caught earlier by ``validate_study_file``).
    """
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        return _train_cell(config, Path(cell_dir), device=device, cell_id=cell_id, progress=progress)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


@dataclass
class _Cell:
    """What one cell trains with, built once by :func:`_setup`."""

    cid: str
    cell_dir: Path
    config: dict[str, Any]
    seed: int
    device: str
    tr: dict[str, Any]
    ev: dict[str, Any]
    splits: dict[str, Any]
    model: torch.nn.Module
    loss_fn: Any
    optimizer: torch.optim.Optimizer
    gen: torch.Generator
    train_tf: Any
    eval_tf: Any
    loader: Any
    progress: ProgressFn | None
    cache: dict[int, Any] = field(default_factory=dict)

    def emit(self, event: dict[str, Any]) -> None:
        """Send a progress event (when there is a callback)."""
        if self.progress is not None:
            self.progress({"cell": self.cid, **event})


@dataclass
class _Run:
    """What training accumulates: per-epoch rows, validation rows, the best epoch, timings and the status."""

    history: list[dict[str, Any]] = field(default_factory=list)
    val_rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "dsc": -math.inf, "summary": None})
    step_times: list[float] = field(default_factory=list)
    parts: dict[str, float] = field(
        default_factory=lambda: {"data": 0.0, "forward": 0.0, "loss": 0.0, "backward": 0.0, "optimizer": 0.0}
    )
    val_seconds: float = 0.0
    status: str = "ok"
    reason: str = ""
    epoch: int = 0


def _train_cell(
    config: dict[str, Any], cell_dir: Path, *, device: str, cell_id: str | None, progress: ProgressFn | None
) -> dict[str, Any]:
    t_start = time.perf_counter()
    cell = _setup(config, cell_dir, device, cell_id, progress)
    run = _Run()
    epochs = cell.tr["epochs"]
    cell.emit({"kind": "start", "epochs": epochs, "label": config.get("label")})
    for epoch in range(1, epochs + 1):
        run.epoch = epoch
        if not _train_epoch(cell, run, epoch):
            break
    atomic_write_csv(cell_dir / "history.csv", run.history)
    if run.val_rows:
        atomic_write_csv(cell_dir / "val_subjects.csv", run.val_rows)
    test, test_seconds = _test(cell) if run.status == "ok" else ({}, 0.0)
    timing = _timing(run, test_seconds, time.perf_counter() - t_start)
    atomic_write_json(cell_dir / "timing.json", {"cell_id": cell.cid, **timing}, device=device, seed=cell.seed)
    atomic_write_json(cell_dir / "done.json", _done(cell, run, test, timing), device=device, seed=cell.seed)
    return read_json(cell_dir / "done.json")


def _setup(
    config: dict[str, Any], cell_dir: Path, device: str, cell_id: str | None, progress: ProgressFn | None
) -> _Cell:
    """Write ``config.json``, seed everything, then build the splits, network, loss, optimiser and transforms.

    The order of the builds is part of the cell's numbers: each one draws from the seeded generators.
    """
    from lossbench.losses import build_loss
    from lossbench.study.config import EvaluationConfig, TrainingConfig
    from lossbench.study.datasets import build_splits
    from lossbench.study.model import build_model

    cell_dir.mkdir(parents=True, exist_ok=True)
    cid = cell_id or cell_dir.name
    seed = int(config["seed"])
    tr = TrainingConfig.model_validate(config["training"]).model_dump(mode="json")
    ev = EvaluationConfig.model_validate(config["evaluation"]).model_dump(mode="json")
    atomic_write_json(cell_dir / "config.json", {"cell_id": cid, "config": config}, device=device, seed=seed)
    seed_everything(seed)
    ds_cfg = dict(config["dataset"])
    splits = build_splits(ds_cfg.pop("name"), ds_cfg)
    first = splits["train"][0]["image"]
    model_cfg = dict(config["model"])
    model = build_model(
        model_cfg.pop("name"), model_cfg, spatial_dims=first.ndim - 1, in_channels=int(first.shape[0])
    ).to(device)
    loss_cfg = dict(config["loss"])
    loss_fn = build_loss(loss_cfg.pop("name"), **loss_cfg, sigmoid=True)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn = loss_fn.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tr["lr"], weight_decay=tr["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    train_tf, eval_tf = _make_transforms(tr, first.ndim - 1, seed)
    loader = _make_loader(splits["train"], train_tf, tr, seed) if tr["num_workers"] > 0 else None
    return _Cell(
        cid=cid,
        cell_dir=cell_dir,
        config=config,
        seed=seed,
        device=device,
        tr=tr,
        ev=ev,
        splits=splits,
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        gen=gen,
        train_tf=train_tf,
        eval_tf=eval_tf,
        loader=loader,
        progress=progress,
    )


def _train_epoch(cell: _Cell, run: _Run, epoch: int) -> bool:
    """One epoch: the training steps, then validation when due; False when the cell diverged (training stops)."""
    tr = cell.tr
    t_epoch = time.perf_counter()
    cell.model.train()
    sums: dict[str, float] = {}
    n_steps = 0
    t0 = time.perf_counter()
    if cell.loader is not None:
        batches: Any = _loader_batches(cell.loader, tr.get("max_steps_per_epoch"))
    else:
        batches = iter(_epoch_batches(cell.splits["train"], tr, cell.train_tf, cell.gen, cell.cache))
    run.parts["data"] += time.perf_counter() - t0
    step = 0
    while True:
        t0 = time.perf_counter()
        try:
            xb, yb = next(batches)
        except StopIteration:
            break
        run.parts["data"] += time.perf_counter() - t0
        step += 1
        if not _train_step(cell, run, xb, yb, sums, epoch, step):
            break
        n_steps += 1
    row: dict[str, Any] = {"epoch": epoch, "steps": n_steps}
    for k, v in sums.items():
        row[f"train_{k}"] = v / max(n_steps, 1)
    if run.status != "ok":
        row["epoch_s"] = time.perf_counter() - t_epoch
        run.history.append(row)
        return False
    if epoch % tr["val_every"] == 0 or epoch == tr["epochs"]:
        _validate(cell, run, epoch, row)
    row["epoch_s"] = time.perf_counter() - t_epoch
    run.history.append(row)
    atomic_write_csv(cell.cell_dir / "history.csv", run.history)
    cell.emit(
        {
            "kind": "epoch",
            "epoch": epoch,
            "epochs": tr["epochs"],
            "loss": row.get("train_total"),
            "val_dsc": row.get("val_dsc"),
        }
    )
    return True


def _train_step(
    cell: _Cell, run: _Run, xb: torch.Tensor, yb: torch.Tensor, sums: dict[str, float], epoch: int, step: int
) -> bool:
    """One optimiser step, timed in parts; False (with the run's status and reason set) when it diverged.

    The loss runs on a detached copy of the logits, so its forward and backward are timed apart from the
    network's; the network then backpropagates the loss's gradient with respect to the logits.
    """
    device = cell.device
    _sync(device)
    t0 = time.perf_counter()
    x, y = xb.to(device), yb.to(device)
    cell.optimizer.zero_grad(set_to_none=True)
    logits = cell.model(x)
    _sync(device)
    t1 = time.perf_counter()
    if not bool(torch.isfinite(logits).all()):
        run.status = "diverged"
        run.reason = f"non-finite network output (logits) at epoch {epoch}, step {step}"
        return False
    detached = logits.detach().requires_grad_(True)
    terms = cell.loss_fn.terms(detached, y)
    total = terms["total"]
    total_value = float(total.detach())
    if not math.isfinite(total_value):
        bad = [k for k, v in terms.items() if not math.isfinite(float(v.detach()))]
        run.status = "diverged"
        run.reason = f"non-finite loss ({total_value}) at epoch {epoch}, step {step}; non-finite terms: {bad}"
        return False
    if total.requires_grad:
        total.backward()
    # A loss with no gradient path (e.g. only the reference center term) leaves the network unchanged.
    grad = detached.grad if detached.grad is not None else torch.zeros_like(detached)
    _sync(device)
    t2 = time.perf_counter()
    logits.backward(grad)
    _sync(device)
    t3 = time.perf_counter()
    cell.optimizer.step()
    _sync(device)
    t4 = time.perf_counter()
    parts = run.parts
    parts["forward"] += t1 - t0
    parts["loss"] += t2 - t1
    parts["backward"] += t3 - t2
    parts["optimizer"] += t4 - t3
    run.step_times.append(t4 - t0)
    for k, v in terms.items():
        sums[k] = sums.get(k, 0.0) + float(v.detach())
    return True


def _validate(cell: _Cell, run: _Run, epoch: int, row: dict[str, Any]) -> None:
    """Score the validation split, add its summary to the epoch's row, keep the checkpoint if it is the best.

    Ties keep the earlier epoch (the paper's rule).
    """
    tv = time.perf_counter()
    rows = evaluate(cell.model, cell.splits["val"], cell.eval_tf, cell.tr, cell.ev, cell.device)
    run.val_seconds += time.perf_counter() - tv
    for r in rows:
        run.val_rows.append({"epoch": epoch, **r})
    summ = val_summary(rows)
    row.update({f"val_{k}": v for k, v in summ.items() if k != "n_subjects"})
    if summ["dsc"] > run.best["dsc"]:
        run.best = {"epoch": epoch, "dsc": summ["dsc"], "summary": summ}
        atomic_torch_save(
            cell.cell_dir / "best.pt",
            {"model_state": cell.model.state_dict(), "epoch": epoch, "val_dsc": summ["dsc"], "cell_id": cell.cid},
        )
    atomic_write_csv(cell.cell_dir / "val_subjects.csv", run.val_rows)


def _test(cell: _Cell) -> tuple[dict[str, Any], float]:
    """Load the best checkpoint, score the test split and write its rows; return the summary and the seconds."""
    tt = time.perf_counter()
    state = torch.load(cell.cell_dir / "best.pt", map_location=cell.device, weights_only=True)
    cell.model.load_state_dict(state["model_state"])
    test_rows = evaluate(cell.model, cell.splits["test"], cell.eval_tf, cell.tr, cell.ev, cell.device)
    atomic_write_csv(cell.cell_dir / "test_subjects.csv", test_rows)
    return _test_summary(test_rows), time.perf_counter() - tt


def _timing(run: _Run, test_seconds: float, wall_s: float) -> dict[str, Any]:
    """The content of ``timing.json``."""
    n = len(run.step_times)
    total_step = float(sum(run.step_times))
    return {
        "steps": n,
        "mean_step_s": total_step / n if n else float("nan"),
        "median_step_s": float(np.median(run.step_times)) if n else float("nan"),
        "loss_share": run.parts["loss"] / total_step if total_step > 0 else float("nan"),
        "seconds": dict(run.parts),
        "validation_s": run.val_seconds,
        "test_s": test_seconds,
        "wall_s": wall_s,
        "threads": torch.get_num_threads(),
    }


def _done(cell: _Cell, run: _Run, test: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
    """The content of ``done.json``."""
    from lossbench.study.model import count_parameters

    return {
        "cell_id": cell.cid,
        "label": cell.config.get("label"),
        "loss": cell.config["loss"]["name"],
        "dataset_label": cell.config.get("dataset_label"),
        "status": run.status,
        "reason": run.reason,
        "epochs_run": run.epoch if run.status == "ok" else run.epoch - 1,
        "best_epoch": run.best["epoch"],
        "val": run.best["summary"] or {},
        "test": test,
        "timing": {k: timing[k] for k in ("wall_s", "mean_step_s", "loss_share", "steps")},
        "n_parameters": count_parameters(cell.model),
    }


def collect_files(cell_dir: str | Path) -> dict[str, bytes]:
    """Read a finished cell's files (for shipping results from a remote worker back to the driver)."""
    cell_dir = Path(cell_dir)
    return {name: (cell_dir / name).read_bytes() for name in CELL_FILES if (cell_dir / name).is_file()}


def format_exception(exc: BaseException) -> str:
    """The full traceback of ``exc`` as text (written to ``error.txt`` of a failed cell)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
