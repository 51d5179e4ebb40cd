"""Settings shared by the benchmark's suites: the suites, default sizes and batches, targets, image sizes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lossbench.errors import expect

__all__ = [
    "SCHEMA_VERSION",
    "SUITES",
    "DEFAULT_SIZES",
    "BATCHES",
    "N_COMPONENTS",
    "TARGET_AUTO_VS_CC3D",
    "TARGET_MAXPOOL_SPEEDUP",
    "TARGET_ICI_VS_FLOOR",
    "TARGET_SCALING",
    "TARGET_METRICS_S",
    "TARGET_NOISY",
    "TARGET_CC_DICE_OWN_VS_BLOB",
    "TARGET_CC_DICE_VS_FLOOR",
    "TARGET_GPU_TORCH_CC_S",
    "TARGET_GPU_ICI_VS_DICE",
    "parse_size",
    "size_name",
    "common_fields",
]

SCHEMA_VERSION = 1
SUITES = ("cc", "losses", "scaling", "metrics")
DEFAULT_SIZES = ("512x512", "64", "96", "192")
BATCHES = (1, 4)
#: Number of components in the labelling / loss masks.
N_COMPONENTS = 50
#: Targets, each checked on ratios measured inside one run (see the package docstring for where each applies).
TARGET_AUTO_VS_CC3D = 1.5
TARGET_MAXPOOL_SPEEDUP = 100.0
TARGET_ICI_VS_FLOOR = 2.0
TARGET_SCALING = 1.5
TARGET_METRICS_S = 0.1
#: Noisy scene: ICI/DICI forward+backward time and peak memory growth over (Dice + labelling label and prediction).
TARGET_NOISY = 3.0
#: CC-Dice: the loss's own work (all but the Voronoi labelling) over blob; the whole loss over (Voronoi + Dice).
TARGET_CC_DICE_OWN_VS_BLOB = 2.0
TARGET_CC_DICE_VS_FLOOR = 1.5
#: GPU goals (H100/H200 class): exact torch labelling of one 192^3 volume, ICI / Dice for 4x1x192^3.
TARGET_GPU_TORCH_CC_S = 0.002
TARGET_GPU_ICI_VS_DICE = 1.5


def parse_size(text: str | int | Sequence[int]) -> tuple[int, ...]:
    """Parse a size: ``"64"`` -> (64, 64, 64), ``"512x512"`` -> (512, 512), ``"96x96x48"`` -> (96, 96, 48).

    Raises:
        ConfigError: if the text is not 1, 2 or 3 integers >= 8 (room for the benchmark's balls) joined by ``x``.
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        parts = [int(text)] * 3
    elif isinstance(text, str):
        try:
            parts = [int(p) for p in text.lower().split("x")]
        except ValueError:
            raise expect("sizes", "entries like 64, 96x96x48 or 512x512", repr(text)) from None
        if len(parts) == 1:
            parts = parts * 3
    elif isinstance(text, Sequence):
        parts = [int(p) for p in text]
    else:
        raise expect("sizes", "entries like 64, 96x96x48 or 512x512", repr(text))
    if len(parts) not in (2, 3) or any(p < 8 for p in parts):
        raise expect("sizes", "2 or 3 sides >= 8 (e.g. 64, 96x96x48, 512x512)", repr(text))
    return tuple(parts)


def size_name(size: Sequence[int]) -> str:
    """A size as printed in the tables: ``96^3`` for a cube, ``512x512`` or ``96x96x48`` otherwise."""
    return "x".join(str(s) for s in size) if len(set(size)) > 1 or len(size) == 2 else f"{size[0]}^{len(size)}"


def common_fields(size: Sequence[int], batch: int) -> dict[str, Any]:
    """The fields every result and ratio row of one (size, batch) group carries."""
    return {"size": size_name(size), "batch": batch}
