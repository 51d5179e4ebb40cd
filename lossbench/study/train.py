"""Train, validate and test one cell; write its files into the cell folder (``done.json`` last).

Per cell (``config`` from :mod:`lossbench.study.grid`):

1. Seed Python, NumPy and torch with the cell's seed and ask torch for deterministic algorithms, so
   the same cell on the same CPU setup (same torch thread count) gives the same numbers twice.
2. Build the dataset splits, the network (MONAI UNet) and the loss (``sigmoid=True``: the network
   emits logits); optimiser Adam.
3. Every epoch: shuffle the training subjects with a seeded generator and pass each through the
   seeded training transforms of :func:`lossbench.data.transforms.make_transforms` (z-score, the
   paper's augmentations when ``augment``; in patch mode ``patches_per_subject`` patches with a
   ``pos_fraction`` of lesion-centred ones), step through mini-batches and log the mean of every loss
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


def _finite(x: float) -> bool:
    return math.isfinite(x)


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


def _train_cell(
    config: dict[str, Any], cell_dir: Path, *, device: str, cell_id: str | None, progress: ProgressFn | None
) -> dict[str, Any]:
    from lossbench.losses import build_loss
    from lossbench.study.config import EvaluationConfig, TrainingConfig
    from lossbench.study.datasets import build_splits
    from lossbench.study.model import build_model, count_parameters

    t_start = time.perf_counter()
    cell_dir.mkdir(parents=True, exist_ok=True)
    cid = cell_id or cell_dir.name
    seed = int(config["seed"])
    tr = TrainingConfig.model_validate(config["training"]).model_dump(mode="json")
    ev = EvaluationConfig.model_validate(config["evaluation"]).model_dump(mode="json")
    atomic_write_json(cell_dir / "config.json", {"cell_id": cid, "config": config}, device=device, seed=seed)

    def emit(event: dict[str, Any]) -> None:
        if progress is not None:
            progress({"cell": cid, **event})

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
    cache: dict[int, Any] = {}
    loader = _make_loader(splits["train"], train_tf, tr, seed) if tr["num_workers"] > 0 else None

    history: list[dict[str, Any]] = []
    val_rows: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, "dsc": -math.inf, "summary": None}
    step_times: list[float] = []
    parts = {"data": 0.0, "forward": 0.0, "loss": 0.0, "backward": 0.0, "optimizer": 0.0}
    val_seconds = 0.0
    status, reason = "ok", ""
    epochs = tr["epochs"]
    emit({"kind": "start", "epochs": epochs, "label": config.get("label")})
    epoch = 0
    for epoch in range(1, epochs + 1):
        t_epoch = time.perf_counter()
        model.train()
        sums: dict[str, float] = {}
        n_steps = 0
        t0 = time.perf_counter()
        if loader is not None:
            batches: Any = _loader_batches(loader, tr.get("max_steps_per_epoch"))
        else:
            batches = iter(_epoch_batches(splits["train"], tr, train_tf, gen, cache))
        parts["data"] += time.perf_counter() - t0
        step = 0
        while True:
            t0 = time.perf_counter()
            try:
                xb, yb = next(batches)
            except StopIteration:
                break
            parts["data"] += time.perf_counter() - t0
            step += 1
            _sync(device)
            t0 = time.perf_counter()
            x, y = xb.to(device), yb.to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            _sync(device)
            t1 = time.perf_counter()
            if not bool(torch.isfinite(logits).all()):
                status = "diverged"
                reason = f"non-finite network output (logits) at epoch {epoch}, step {step}"
                break
            detached = logits.detach().requires_grad_(True)
            terms = loss_fn.terms(detached, y)
            total = terms["total"]
            total_value = float(total.detach())
            if not _finite(total_value):
                bad = [k for k, v in terms.items() if not math.isfinite(float(v.detach()))]
                status = "diverged"
                reason = f"non-finite loss ({total_value}) at epoch {epoch}, step {step}; non-finite terms: {bad}"
                break
            if total.requires_grad:
                total.backward()
            # A loss with no gradient path (e.g. only the reference center term) leaves the network unchanged.
            grad = detached.grad if detached.grad is not None else torch.zeros_like(detached)
            _sync(device)
            t2 = time.perf_counter()
            logits.backward(grad)
            _sync(device)
            t3 = time.perf_counter()
            optimizer.step()
            _sync(device)
            t4 = time.perf_counter()
            parts["forward"] += t1 - t0
            parts["loss"] += t2 - t1
            parts["backward"] += t3 - t2
            parts["optimizer"] += t4 - t3
            step_times.append(t4 - t0)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n_steps += 1
        row: dict[str, Any] = {"epoch": epoch, "steps": n_steps}
        for k, v in sums.items():
            row[f"train_{k}"] = v / max(n_steps, 1)
        if status != "ok":
            row["epoch_s"] = time.perf_counter() - t_epoch
            history.append(row)
            break
        if epoch % tr["val_every"] == 0 or epoch == epochs:
            tv = time.perf_counter()
            rows = evaluate(model, splits["val"], eval_tf, tr, ev, device)
            val_seconds += time.perf_counter() - tv
            for r in rows:
                val_rows.append({"epoch": epoch, **r})
            summ = val_summary(rows)
            row.update({f"val_{k}": v for k, v in summ.items() if k != "n_subjects"})
            if summ["dsc"] > best["dsc"]:
                best = {"epoch": epoch, "dsc": summ["dsc"], "summary": summ}
                atomic_torch_save(
                    cell_dir / "best.pt",
                    {"model_state": model.state_dict(), "epoch": epoch, "val_dsc": summ["dsc"], "cell_id": cid},
                )
            atomic_write_csv(cell_dir / "val_subjects.csv", val_rows)
        row["epoch_s"] = time.perf_counter() - t_epoch
        history.append(row)
        atomic_write_csv(cell_dir / "history.csv", history)
        emit(
            {
                "kind": "epoch",
                "epoch": epoch,
                "epochs": epochs,
                "loss": row.get("train_total"),
                "val_dsc": row.get("val_dsc"),
            }
        )

    atomic_write_csv(cell_dir / "history.csv", history)
    if val_rows:
        atomic_write_csv(cell_dir / "val_subjects.csv", val_rows)
    test: dict[str, Any] = {}
    test_seconds = 0.0
    if status == "ok":
        tt = time.perf_counter()
        state = torch.load(cell_dir / "best.pt", map_location=device, weights_only=True)
        model.load_state_dict(state["model_state"])
        test_rows = evaluate(model, splits["test"], eval_tf, tr, ev, device)
        atomic_write_csv(cell_dir / "test_subjects.csv", test_rows)
        test = _test_summary(test_rows)
        test_seconds = time.perf_counter() - tt

    n = len(step_times)
    total_step = float(sum(step_times))
    timing = {
        "steps": n,
        "mean_step_s": total_step / n if n else float("nan"),
        "median_step_s": float(np.median(step_times)) if n else float("nan"),
        "loss_share": parts["loss"] / total_step if total_step > 0 else float("nan"),
        "seconds": dict(parts),
        "validation_s": val_seconds,
        "test_s": test_seconds,
        "wall_s": time.perf_counter() - t_start,
        "threads": torch.get_num_threads(),
    }
    atomic_write_json(cell_dir / "timing.json", {"cell_id": cid, **timing}, device=device, seed=seed)
    done = {
        "cell_id": cid,
        "label": config.get("label"),
        "loss": config["loss"]["name"],
        "dataset_label": config.get("dataset_label"),
        "status": status,
        "reason": reason,
        "epochs_run": epoch if status == "ok" else epoch - 1,
        "best_epoch": best["epoch"],
        "val": best["summary"] or {},
        "test": test,
        "timing": {k: timing[k] for k in ("wall_s", "mean_step_s", "loss_share", "steps")},
        "n_parameters": count_parameters(model),
    }
    atomic_write_json(cell_dir / "done.json", done, device=device, seed=seed)
    return read_json(cell_dir / "done.json")


def collect_files(cell_dir: str | Path) -> dict[str, bytes]:
    """Read a finished cell's files (for shipping results from a remote worker back to the driver)."""
    cell_dir = Path(cell_dir)
    return {name: (cell_dir / name).read_bytes() for name in CELL_FILES if (cell_dir / name).is_file()}


def format_exception(exc: BaseException) -> str:
    """The full traceback of ``exc`` as text (written to ``error.txt`` of a failed cell)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
