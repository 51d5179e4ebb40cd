"""Every committed report is a claim the code at HEAD must reproduce: its recorded source fingerprints must match.

A report folder under ``reports/`` (one holding report.md, gallery.md or bench.md) records in provenance.json the
fingerprints of the code it depends on and the command that regenerates it. When the code changes (not comments
or docstrings: see lossbench.provenance), this test fails and names that command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lossbench.provenance import PROVENANCE_FILE, check_provenance

REPORTS = Path(__file__).resolve().parent.parent / "reports"
FOLDERS = sorted(
    p.parent for name in ("report.md", "gallery.md", "bench.md") for p in REPORTS.glob(f"*/{name}")
)  # fmt: skip


def test_there_are_committed_reports():
    assert len(FOLDERS) >= 3, FOLDERS


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_committed_report_matches_the_code(folder):
    assert (folder / PROVENANCE_FILE).is_file(), f"{folder} has no {PROVENANCE_FILE}: regenerate it"
    message = check_provenance(folder)
    assert message is None, message
