"""Every committed report is a claim the code and the study files at HEAD must reproduce.

A report folder under ``reports/`` (one holding report.md, gallery.md or bench.md) records in provenance.json the
fingerprints of the code it depends on and the command that regenerates it. When the code changes (not comments
or docstrings: see lossbench.provenance), a test fails and names that command. A study report also carries the
resolved study it reports (``study.yaml``): when the study file named in its command no longer resolves to the
same study (other seeds, epochs, losses, data), a test fails too.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from lossbench.provenance import PROVENANCE_FILE, check_provenance
from lossbench.study.config import load_study

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
FOLDERS = sorted(
    p.parent for name in ("report.md", "gallery.md", "bench.md") for p in REPORTS.glob(f"*/{name}")
)  # fmt: skip
STUDY_REPORTS = [f for f in FOLDERS if (f / "report.md").is_file()]


def test_there_are_committed_reports():
    assert len(FOLDERS) >= 3, FOLDERS
    assert STUDY_REPORTS, FOLDERS


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_committed_report_matches_the_code(folder):
    assert (folder / PROVENANCE_FILE).is_file(), f"{folder} has no {PROVENANCE_FILE}: regenerate it"
    message = check_provenance(folder)
    assert message is None, message


def _run_words(command: str) -> list[str]:
    """The words of the ``lossbench run`` part of a recorded command."""
    words = shlex.split(command.split("&&")[0])
    assert words[:2] == ["lossbench", "run"], command
    return words


@pytest.mark.parametrize("folder", STUDY_REPORTS, ids=lambda p: p.name)
def test_committed_report_matches_its_study_file(folder):
    command = json.loads((folder / PROVENANCE_FILE).read_text())["command"]
    words = _run_words(command)
    study_file = ROOT / words[2]
    assert study_file.is_file(), f"{folder.name}: the study file {words[2]} of `{command}` is missing"
    scale = words[words.index("--scale") + 1] if "--scale" in words else None
    assert (folder / "study.yaml").is_file(), f"{folder} has no study.yaml: regenerate it with `{command}`"
    reported = yaml.safe_load((folder / "study.yaml").read_text(encoding="utf-8"))
    current = load_study(study_file, scale=scale).to_yaml_dict()
    changed = sorted(k for k in set(reported) | set(current) if reported.get(k) != current.get(k))
    assert not changed, f"{folder.name}: {words[2]} changed ({', '.join(changed)}) since the report; run `{command}`"


def test_the_study_comparison_notices_a_change(tmp_path):
    """The check above fails on a study file that differs from the report in one value."""
    folder = STUDY_REPORTS[0]
    words = _run_words(json.loads((folder / PROVENANCE_FILE).read_text())["command"])
    text = (ROOT / words[2]).read_text(encoding="utf-8")
    changed = re.sub(r"^seeds: \[0, ", "seeds: [100, ", text, count=1, flags=re.M)
    assert changed != text
    edited = tmp_path / "study.yaml"
    edited.write_text(changed, encoding="utf-8")
    reported = yaml.safe_load((folder / "study.yaml").read_text(encoding="utf-8"))
    assert reported != load_study(edited).to_yaml_dict()
