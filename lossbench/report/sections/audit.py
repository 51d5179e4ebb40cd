"""The gradient audit of the study's losses (:mod:`lossbench.audit`): one table per scene, or a note saying why not."""

from __future__ import annotations

import importlib.util
from typing import Any

import pandas as pd

from lossbench.errors import LossbenchError
from lossbench.report.model import Cell, Row, Table
from lossbench.report.run_data import RunData
from lossbench.report.text import clean

__all__ = ["audit_tables"]


def audit_tables(data: RunData) -> tuple[list[Table], str]:
    """Gradient audit tables (one per scene) of the study's losses, or no table and a note saying why not.

    The audit is asked for the study's own loss configurations (``{"name", "label", **params}`` dicts, as in the
    study file); if it rejects them (an audit that takes registry names only), the names are audited with their
    defaults and the note says so.
    """
    if importlib.util.find_spec("lossbench.audit") is None:
        return [], (
            "Gradient audit not included: the module lossbench.audit is not available in this installation "
            "(run `lossbench audit` once it is)."
        )
    from lossbench import audit

    frame, note = _run_audit(data)
    if frame is None:
        return [], note
    need = {"scene", "loss", "term", "value", "grad_norm"}
    if not isinstance(frame, pd.DataFrame) or frame.empty or not need <= set(frame.columns):
        return [], "Gradient audit returned no usable table and is not included."
    regions = [r for r in getattr(audit, "REGIONS", ()) if f"nz_{r}" in frame.columns]
    note = " ".join([note, str(getattr(audit, "GRADIENT_NOTE", ""))]).strip()
    tables = [_scene_table(i, scene, sub, regions) for i, (scene, sub) in enumerate(frame.groupby("scene", sort=False))]
    return tables, note


def _run_audit(data: RunData) -> tuple[Any, str]:
    """The audit's table and a note on what was audited; ``(None, why)`` when the audit failed."""
    from lossbench import audit

    variants = [{"name": loss.name, "label": str(loss.label), **loss.params} for loss in data.study.losses]
    try:
        return audit.run_audit(losses=variants, out=None, show=False), "Computed on the study's loss configurations."
    except (LossbenchError, TypeError, KeyError, AttributeError):
        names = list(dict.fromkeys(loss.name for loss in data.study.losses))
        note = (
            "lossbench.audit takes loss names only, so the losses of this study ("
            + ", ".join(names)
            + ") were audited with their default parameters (ici/dici: the published loss and lossbench's designs), "
            "not with the study's parameters."
        )
        try:
            return audit.run_audit(losses=names, out=None, show=False), note
        except Exception as exc:  # noqa: BLE001 - another module's failure must not cost the whole report
            return None, _failed(exc)
    except Exception as exc:  # noqa: BLE001 - same reason
        return None, _failed(exc)


def _failed(exc: Exception) -> str:
    return f"Gradient audit failed and is not included: {type(exc).__name__}: {clean(exc)[:300]}"


def _scene_table(i: int, scene: Any, sub: pd.DataFrame, regions: list[str]) -> Table:
    """The audit of one scene: per loss and term its value, gradient norm and non-zero share per region."""
    first = sub.iloc[0]
    counts = ", ".join(f"{r} {int(first[f'n_{r}'])}" for r in regions if f"n_{r}" in sub.columns)
    rows = []
    for _, r in sub.iterrows():
        value = float(r["value"])
        cells = [
            Cell(text=str(r["term"])),
            Cell(text=f"{(value if abs(value) >= 5e-5 else 0.0):.4f}"),
            Cell(text=f"{r['grad_norm']:.3g}" if r["grad_norm"] > 0 else "0", css="" if r["grad_norm"] > 0 else "na"),
        ] + [Cell(text="–" if pd.isna(r[f"nz_{g}"]) else f"{100 * float(r[f'nz_{g}']):.0f}%") for g in regions]
        rows.append(Row(label=str(r["loss"]), cells=cells))
    return Table(
        id=f"audit-{i + 1}",
        title=f"Scene {scene}" + (f" (voxels per region: {counts})" if counts else ""),
        columns=["Term", "Value", "Grad L2", *[f"non-zero in {g}" for g in regions]],
        rows=rows,
        align=["l"] + ["r"] * (2 + len(regions)),
    )
