"""Verdicts of every "+ ICI" row of the base-losses study against its own base loss (reports/FINDINGS.md cites them).

The report of studies/base_losses.yaml compares every row with one baseline (DiceCE). This script applies the same
run-level statistics (lossbench.report.verdicts.run_verdicts) to each group of a base loss and its two ICI rows,
from the per-cell results committed with the report, and writes reports/base_losses/verdicts_by_base.csv:

    .venv/bin/python scripts/base_loss_verdicts.py
"""

from pathlib import Path

import pandas as pd

from lossbench.io import atomic_write_csv
from lossbench.report.verdicts import run_verdicts

FOLDER = Path(__file__).resolve().parent.parent / "reports" / "base_losses"
BASES = ("BCE", "Focal", "DiceCE", "DiceFocal", "GDiceFocal")
METRICS = ("test_dice", "test_lesionwise_f1", "test_pq", "test_cc_dice", "val_dsc")

results = pd.read_csv(FOLDER / "results.csv")
parts = []
for base in BASES:
    group = results[results["label"].isin([base, f"{base} + ICI 1/1/1", f"{base} + ICI 1/4,1/2,1/4"])]
    parts.append(run_verdicts(group, base, metrics=list(METRICS)))
table = pd.concat(parts, ignore_index=True)
atomic_write_csv(FOLDER / "verdicts_by_base.csv", table)
columns = ["baseline", "loss", "metric", "difference", "ci_low", "ci_high", "verdict", "n_seeds"]
print(table[columns].to_string(index=False))
