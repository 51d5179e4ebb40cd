"""Source fingerprints: prose edits keep a report fresh, code edits make it stale and name the command to rerun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import lossbench
from lossbench.errors import ConfigError, DataError
from lossbench.provenance import (
    PROVENANCE_FILE,
    check_provenance,
    normalised_source,
    source_fingerprint,
    write_provenance,
)

PACKAGE = Path(lossbench.__file__).resolve().parent


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "lossbench"
    shutil.copytree(PACKAGE, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_normalised_source_drops_docstrings_comments_and_layout():
    a = '"""Module doc."""\nx = 1  # one\n\n\ndef f(y):\n    """Doc."""\n    "bare string"\n    return x + y\n'
    b = "x = 1\ndef f(y):\n    return x+y\n"
    assert normalised_source(a) == normalised_source(b) == "x = 1\n\ndef f(y):\n    return x + y"
    assert normalised_source(b.replace("x = 1", "x = 2")) != normalised_source(b)
    assert normalised_source("s = 'a string value'") != normalised_source("s = 'another'")  # data, not prose


def test_fingerprint_of_a_copy_equals_the_package_and_ignores_prose(package_copy):
    scope_file = package_copy / "errors.py"  # in the "study" scope
    before = {s: source_fingerprint(s, root=package_copy) for s in ("study", "report", "gallery", "bench")}
    assert before["study"] == source_fingerprint("study")  # same files as the installed package
    assert len(set(before.values())) == 4 and all(len(f) == 64 for f in before.values())

    text = scope_file.read_text()
    edited = text.replace('"""', '"""Edited prose, a new paragraph.\n\n', 1) + "\n\n# a trailing comment\n"
    scope_file.write_text(edited)
    assert {s: source_fingerprint(s, root=package_copy) for s in before} == before

    scope_file.write_text(edited + "\nEXTRA_CONSTANT = 1\n")
    after = {s: source_fingerprint(s, root=package_copy) for s in before}
    assert after["study"] != before["study"]
    assert after["gallery"] == before["gallery"] and after["bench"] == before["bench"]  # not in their scopes

    template = package_copy / "report" / "templates" / "report.md.j2"  # templates count as they are
    template.write_text(template.read_text() + "\n")
    assert source_fingerprint("report", root=package_copy) != before["report"]


def test_a_file_outside_the_scope_does_not_change_it(package_copy):
    study = source_fingerprint("study", root=package_copy)
    (package_copy / "cli.py").write_text((package_copy / "cli.py").read_text() + "\nX = 1\n")
    assert source_fingerprint("study", root=package_copy) == study
    (package_copy / "losses" / "new_module.py").write_text("Y = 2\n")  # a new file inside the scope
    assert source_fingerprint("study", root=package_copy) != study


def test_write_and_check_provenance(package_copy, tmp_path):
    report = tmp_path / "reports" / "quick"
    command = "lossbench run studies/quick.yaml --out runs/quick"
    path = write_provenance(report, ["study", "report"], command, root=package_copy)
    record = json.loads(path.read_text())
    assert path.name == PROVENANCE_FILE
    assert set(record) == {"schema_version", "fingerprints", "command", "lossbench_version", "created"}
    assert record["fingerprints"] == {s: source_fingerprint(s, root=package_copy) for s in ("study", "report")}
    assert not list(report.glob(".*tmp*"))  # the temporary file was renamed into place
    assert check_provenance(report, root=package_copy) is None

    blob = package_copy / "losses" / "blob.py"
    blob.write_text(blob.read_text() + "\nEXTRA = 3\n")
    message = check_provenance(report, root=package_copy)
    assert message is not None
    assert str(report) in message and "`lossbench run studies/quick.yaml --out runs/quick`" in message
    assert record["fingerprints"]["study"][:12] in message and "report" not in message.split("(")[1].split(")")[0]


def test_provenance_errors(tmp_path, package_copy):
    with pytest.raises(ConfigError, match="`scope` must be one of"):
        source_fingerprint("everything")
    with pytest.raises(ConfigError, match="`command` must be"):
        write_provenance(tmp_path, "study", " ")
    with pytest.raises(ConfigError, match="provenance.json"):
        check_provenance(tmp_path / "nothing")
    (tmp_path / PROVENANCE_FILE).write_text("{not json")
    with pytest.raises(DataError, match="valid JSON"):
        check_provenance(tmp_path)
    (tmp_path / PROVENANCE_FILE).write_text(json.dumps({"scope": "study", "command": "x"}))
    with pytest.raises(DataError, match="'fingerprints'"):
        check_provenance(tmp_path)
