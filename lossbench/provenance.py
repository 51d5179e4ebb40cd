"""Source fingerprints: which code produced a report, and whether the code at hand still would.

A report records the fingerprint of the source that produced it (``provenance.json`` next to it);
:func:`check_provenance` compares it with the code at hand and names the command that regenerates the
report when they differ.

The fingerprint of a *scope* (the package files that can change what a report shows) is the SHA-256 of
each file's path and normalised source: a Python file is parsed, every docstring and bare string
statement is removed, and the tree is printed back with :func:`ast.unparse`; other files (templates) count
as they are. Comments, docstrings, blank lines and formatting therefore do not change it; any change to the
code does. (``ast.unparse`` output can differ between Python minor versions: compare fingerprints made with
the same Python.) A report records the fingerprints of every scope it depends on.

Scopes (paths relative to the package; a folder means every file under it; absent paths are skipped):

* ``"study"``: training and evaluation, what a study report's numbers come from.
* ``"report"``: how a study report is rendered (tables, statistics, verdicts, figures, templates).
* ``"gallery"``: the losses and what the synthetic gallery computes and draws.
* ``"bench"``: what the benchmark times and how it measures.

This module is at the bottom of the import graph: it imports nothing of lossbench but the errors and the
atomic writes.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossbench.errors import ConfigError, DataError, expect
from lossbench.io import atomic_write_text

__all__ = [
    "SCOPES",
    "PROVENANCE_FILE",
    "normalised_source",
    "source_fingerprint",
    "write_provenance",
    "check_provenance",
]

#: Package paths (files, folders, or globs) that each scope covers.
SCOPES: dict[str, tuple[str, ...]] = {
    "study": (
        "cc",
        "instances.py",
        "ops",
        "losses",
        "metrics",
        "data",
        "study",
        "errors.py",
        "registry.py",
    ),
    "report": ("report/*.py", "report/sections", "report/templates/report*", "audit.py"),
    "gallery": (
        "losses",
        "cc",
        "instances.py",
        "ops",
        "data/scenes.py",
        "audit.py",
        "report/gallery",
        "report/model.py",
        "report/templating.py",
        "report/templates/gallery*",
    ),  # fmt: skip
    "bench": ("bench", "losses", "cc", "instances.py", "ops", "metrics"),
}

PROVENANCE_FILE = "provenance.json"
SCHEMA_VERSION = 1
_PACKAGE = Path(__file__).resolve().parent


def _scope_files(scope: str, root: Path) -> list[Path]:
    """The files of ``scope`` under the package folder ``root`` (no caches), sorted, each once."""
    if scope not in SCOPES:
        raise expect("scope", f"one of {list(SCOPES)}", repr(scope), cls=ConfigError)
    files: set[Path] = set()
    for pattern in SCOPES[scope]:
        for match in root.glob(pattern):
            if match.is_dir():
                files.update(p for p in match.rglob("*") if p.is_file() and _counted(p))
            elif match.is_file() and _counted(match):
                files.add(match)
    return sorted(files)


def _counted(path: Path) -> bool:
    return "__pycache__" not in path.parts and path.suffix not in (".pyc", ".so") and not path.name.startswith(".")


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Remove every statement that is only a string constant (docstrings and bare strings: no effect)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            node.body = [  # type: ignore[attr-defined]
                stmt
                for stmt in body
                if not (
                    isinstance(stmt, ast.Expr)
                    and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)
                )
            ]
    return tree


def normalised_source(text: str) -> str:
    """``text`` without comments, docstrings and formatting: the code as :func:`ast.unparse` prints it.

    Raises:
        SyntaxError: ``text`` is not valid Python.
    """
    return ast.unparse(_strip_docstrings(ast.parse(text)))


def source_fingerprint(scope: str, *, root: str | Path | None = None) -> str:
    """SHA-256 (hex) of the normalised source of the package files of ``scope``.

    Args:
        scope: ``"study"``, ``"gallery"`` or ``"bench"`` (see :data:`SCOPES`).
        root: the package folder (default: this installed ``lossbench``); for tests on a copy.

    Returns:
        64 hex digits; equal for two trees whose scope files differ only in comments, docstrings or formatting.

    Raises:
        ConfigError: unknown scope.
    """
    base = Path(root) if root is not None else _PACKAGE
    digest = hashlib.sha256()
    for path in _scope_files(scope, base):
        rel = path.relative_to(base).as_posix()
        digest.update(rel.encode("utf-8") + b"\0")
        text = path.read_text(encoding="utf-8")
        digest.update((normalised_source(text) if path.suffix == ".py" else text).encode("utf-8") + b"\0")
    return digest.hexdigest()


def _version() -> str:
    try:
        return importlib.metadata.version("lossbench")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_provenance(
    folder: str | Path, scopes: str | Sequence[str], command: str, *, root: str | Path | None = None
) -> Path:
    """Write ``folder/provenance.json`` (atomically): the fingerprints of ``scopes`` and the command that made it.

    Args:
        folder: the report's folder (created if missing).
        scopes: the scope(s) whose code the report depends on.
        command: the shell command that regenerates the report (e.g. ``"lossbench gallery --out reports/gallery"``).
        root: the package folder (default: this ``lossbench``).

    Returns:
        The path written. Content: ``schema_version``, ``fingerprints`` (scope -> hex), ``command``,
        ``lossbench_version``, ``created``.

    Raises:
        ConfigError: unknown scope or empty command.
    """
    if not isinstance(command, str) or not command.strip():
        raise expect("command", "the non-empty command that regenerates the report", repr(command), cls=ConfigError)
    names = [scopes] if isinstance(scopes, str) else list(scopes)
    payload = {
        "schema_version": SCHEMA_VERSION,
        "fingerprints": {scope: source_fingerprint(scope, root=root) for scope in names},
        "command": command,
        "lossbench_version": _version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return atomic_write_text(Path(folder) / PROVENANCE_FILE, json.dumps(payload, indent=2) + "\n")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise expect("folder", f"a report folder with {PROVENANCE_FILE}", f"none in {str(path.parent)!r}") from None
    except json.JSONDecodeError as exc:
        raise expect(str(path), "valid JSON", str(exc), cls=DataError) from None
    ok = isinstance(data, dict) and isinstance(data.get("command"), str) and isinstance(data.get("fingerprints"), dict)
    if not ok or not all(isinstance(v, str) for v in data["fingerprints"].values()):
        raise expect(
            str(path), "a provenance record with 'fingerprints' and 'command'", repr(data)[:120], cls=DataError
        )
    return data


def check_provenance(folder: str | Path, *, root: str | Path | None = None) -> str | None:
    """Whether the report in ``folder`` still matches the code: ``None`` if so, else what to run.

    Args:
        folder: a folder holding ``provenance.json`` (see :func:`write_provenance`).
        root: the package folder to compare with (default: this ``lossbench``).

    Returns:
        ``None`` when every recorded fingerprint equals the current one; otherwise one line naming the folder, the
        scopes that changed with both fingerprints (12 digits), and the command that regenerates the report.

    Raises:
        ConfigError: no ``provenance.json`` in ``folder``, or it names an unknown scope.
        DataError: ``provenance.json`` is not a valid record.
    """
    record = _read(Path(folder) / PROVENANCE_FILE)
    changed = []
    for scope, recorded in record["fingerprints"].items():
        now = source_fingerprint(scope, root=root)
        if now != recorded:
            changed.append(f"{scope} {recorded[:12]} -> {now[:12]}")
    if not changed:
        return None
    return (
        f"{folder} was produced by other code than this one (source fingerprints: {'; '.join(changed)}): "
        f"regenerate it with `{record['command']}`"
    )
