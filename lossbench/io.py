"""Atomic file writes: every result file of lossbench goes through here.

A write goes to a temporary file in the target's folder, is flushed to disk and renamed into place
(``os.replace`` is atomic on POSIX and on Windows within one volume), so a killed process never leaves a
truncated file under a final name: a reader sees the old file or the new one, nothing in between.

This module sits at the bottom of the package (it imports nothing from lossbench), so every layer can use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_csv",
    "atomic_torch_save",
    "atomic_save_figure",
    "json_safe",
    "json_text",
]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename.

    The folder is created if needed. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(path: str | Path, rows: Iterable[dict[str, Any]] | Any) -> Path:
    """Atomically write a list of dicts (or a pandas DataFrame) as CSV with a header and no index."""
    import pandas as pd

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    return atomic_write_text(path, frame.to_csv(index=False))


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj`` to ``path``."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_figure(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Atomically save a matplotlib figure; the format is the file's extension (``.png`` -> PNG).

    Args:
        fig: a ``matplotlib.figure.Figure``.
        path: the output file.
        **savefig: passed to ``fig.savefig`` (``dpi``, ``bbox_inches``, ``metadata``, ...).
    """
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or None, **savefig)
    return atomic_write_bytes(path, buf.getvalue())


def json_safe(obj: Any) -> Any:
    """``obj`` with what JSON cannot hold replaced, recursively.

    NaN -> ``None``, +-inf -> ``"inf"``/``"-inf"``, numpy / torch scalars -> Python numbers, tuples -> lists,
    mapping keys -> strings.
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return json_safe(obj.item())
    return obj


def json_text(obj: Any) -> str:
    """``obj`` (through :func:`json_safe`) as indented JSON text ending in a newline."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"
