"""The report's setup table: everything needed to read the numbers.

Dataset, model, training mode, seeds, connectivity of the losses' instances and of the metrics, matching rule,
ranking rule and divisor, baseline, cell status, device, time and package versions.
"""

from __future__ import annotations

import datetime as _dt
import re

import pandas as pd

from lossbench.errors import LossbenchError
from lossbench.report.model import Cell, Row, Table
from lossbench.report.run_data import RunData
from lossbench.report.text import duration, kv

__all__ = ["setup_table", "connectivity_text"]


def setup_table(data: RunData, regenerate: str = "") -> Table:
    """The setup table (one row per item) of a run; ``regenerate``: the command that remakes the report (a row)."""
    items = _study_items(data) + _instance_items(data) + _run_items(data)
    if regenerate:
        items.append(("Regenerate with", regenerate))
    rows = [Row(label=k, cells=[Cell(text=v)]) for k, v in items]
    return Table(id="setup", title="Setup", columns=["Value"], rows=rows, row_header="Item", align=["l"])


def _study_items(data: RunData) -> list[tuple[str, str]]:
    """Study, run folder, dataset, model, training, seeds and losses."""
    st = data.study
    tr = st.training
    mode = f"{tr.mode}" + (
        f" (patch {tr.patch_size}, {tr.patches_per_subject} per subject)" if tr.mode == "patch" else " image"
    )
    datasets = "; ".join(
        (f"{ds.label} = " if ds.label != ds.name else "") + f"{ds.name}({kv(ds.params)})" for _, ds in st.dataset_list()
    )
    training = (
        f"mode {mode}; {tr.epochs} epochs, batch {tr.batch_size}, {tr.optimizer} lr {tr.lr:g}"
        + (f", weight decay {tr.weight_decay:g}" if tr.weight_decay else "")
        + f", validation every {tr.val_every} epoch(s); best checkpoint = highest mean validation DSC"
    )
    return [
        ("Study", f"{st.name}" + (f": {st.description}" if st.description else "")),
        ("Run folder", str(data.root)),
        ("Dataset", datasets),
        ("Model", f"{st.model.name}({kv(st.model.params)})"),
        ("Training", training),
        ("Seeds", ", ".join(str(s) for s in st.seeds)),
        ("Losses", "; ".join(f"{loss.label} = {loss.name}({kv(loss.params)})" for loss in st.losses)),
    ]


def _instance_items(data: RunData) -> list[tuple[str, str]]:
    """How instances are defined (connectivity in the losses and the metrics), matched and ranked."""
    st = data.study
    dims = _spatial_dims(data)
    divisor = st.report.ranking.divisor
    metrics = (
        f"{connectivity_text(st.evaluation.connectivity, dims)}; prediction = probability >= "
        f"{st.evaluation.threshold:g}; size bins {list(st.evaluation.size_bins)} voxels"
    )
    ranking = (
        "dense ranks per column on the printed values (ties share a rank, the next value gets the next "
        "integer; n/a ranked last); mean rank = sum of the ranks / "
        + (f"divisor {divisor:g} (set in the study)" if divisor else "divisor = the number of ranked columns")
        + "; best in bold, second best underlined"
    )
    return [
        ("Instances in the losses (connectivity)", _loss_connectivity(data, dims)),
        ("Instances in the metrics (connectivity)", metrics),
        ("Matching rule", _matching_rule()),
        ("Ranking", ranking),
        ("Baseline", str(st.report.baseline or f"{data.labels[0]} (first loss; none set in the study)")),
    ]


def _run_items(data: RunData) -> list[tuple[str, str]]:
    """Cell status, device, total time, package versions and when the report was written."""
    res = data.results
    counts = data.cells["status"].value_counts()
    status = ", ".join(f"{int(v)} {k}" for k, v in counts.items())
    wall = pd.to_numeric(res.get("wall_s"), errors="coerce").sum() if "wall_s" in res else float("nan")
    devices = sorted({str(d) for d in res.get("device", pd.Series(dtype=str)).dropna()}) or ["unknown"]
    rebuilt = "; results.csv was missing (interrupted run) and was rebuilt from the finished cells"
    return [
        ("Cells", f"{len(data.cells)} expected: {status}" + (rebuilt if data.rebuilt_results else "")),
        ("Device", ", ".join(devices)),
        ("Total time", f"{duration(float(wall))} (sum of the finished cells' wall times)"),
        ("Package versions", ", ".join(f"{k} {v}" for k, v in data.versions.items()) or "not recorded"),
        ("Report written", _dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
    ]


def connectivity_text(conn: int | None, dims: int | None) -> str:
    """A connectivity in words, e.g. ``1 orthogonal hop, 6 (faces)``; ``None`` is full connectivity."""
    if conn is None:
        full = {2: "8-neighbourhood", 3: "26-neighbourhood"}.get(dims or 0, "")
        return f"full ({full})" if full else "full"
    table = {
        2: {1: "4-neighbourhood", 2: "8-neighbourhood"},
        3: {1: "6 (faces)", 2: "18 (faces + edges)", 3: "26 (full)"},
    }
    extra = table.get(dims or 0, {}).get(conn)
    return f"{conn} orthogonal hop{'s' if conn > 1 else ''}" + (f", {extra}" if extra else "")


def _loss_connectivity(data: RunData, dims: int | None) -> str:
    from lossbench.losses import LOSSES

    parts = []
    for loss in data.study.losses:
        try:
            defaults = LOSSES.get(loss.name).params
        except LossbenchError:
            defaults = {}
        if "connectivity" not in defaults and "connectivity" not in loss.params:
            parts.append(f"{loss.label}: none (pixel-wise)")
            continue
        conn = loss.params.get("connectivity", defaults.get("connectivity"))
        parts.append(f"{loss.label}: {connectivity_text(conn, dims)}")
    return "; ".join(parts)


def _matching_rule() -> str:
    from lossbench.metrics import matching

    doc = matching.__doc__ or ""
    m = re.search(r"Matching rule:(.*?)(?:\n\s*\n|$)", doc, flags=re.S)
    return " ".join(m.group(1).split()) if m else "see lossbench.metrics.matching"


def _spatial_dims(data: RunData) -> int | None:
    _, ds = data.study.dataset_list()[0]
    dims = ds.params.get("spatial_dims")
    if isinstance(dims, int):
        return dims
    size = data.study.training.patch_size
    return len(size) if size else None
