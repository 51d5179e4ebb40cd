"""``lossbench nnunet install`` / ``uninstall``: make lossbench's trainers visible to ``nnUNetv2_train -tr``.

nnU-Net looks a trainer up by name by importing the modules of its own folder
``nnunetv2/training/nnUNetTrainer/``: first the modules at the top of that folder, then every subpackage.
``install`` writes one small module there, :data:`SHIM_NAME`, which imports
:mod:`lossbench.integrations.nnunet`; at the top of the folder it is found before the walk reaches any
subpackage (so a subpackage that fails to import, such as one needing a broken ``torchvision``, does not
matter). Its name sorts after ``nnUNetTrainer.py``, so looking up nnU-Net's default trainer never imports
lossbench.

The module carries a marker on its first line: ``install`` rewrites only a file with that marker and
``uninstall`` deletes only such a file, so both are idempotent and never touch a file lossbench did not write.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lossbench.errors import ConfigError, MissingExtraError, expect

__all__ = ["SHIM_NAME", "MARKER", "ShimResult", "trainer_folder", "shim_source", "install", "uninstall"]

#: File name of the importing module in nnU-Net's trainer folder.
SHIM_NAME = "nnUNetTrainer_lossbench.py"

#: First line of that module: how install/uninstall recognise a file they wrote.
MARKER = "# lossbench nnU-Net trainers: written by `lossbench nnunet install`, removed by `lossbench nnunet uninstall`"


@dataclass(frozen=True)
class ShimResult:
    """What ``install``/``uninstall`` did: ``action`` is written, updated, unchanged, removed or absent."""

    path: Path
    action: str

    def message(self) -> str:
        """One line for the user."""
        return {
            "written": f"wrote {self.path}",
            "updated": f"updated {self.path} (written by another lossbench version)",
            "unchanged": f"already installed: {self.path}",
            "removed": f"removed {self.path}",
            "absent": f"nothing to remove: {self.path} does not exist",
        }[self.action]


def shim_source() -> str:
    """The text of the importing module.

    If lossbench is later removed without ``uninstall``, the module prints one line to stderr instead of
    breaking every nnU-Net trainer lookup (nnU-Net's search re-raises import errors of dependencies).
    """
    return (
        f"{MARKER}\n"
        "# nnU-Net finds trainers by name only inside this folder; this module makes lossbench's trainers\n"
        "# (nnUNetTrainer_ICI, ...) visible here. It changes nothing else in nnU-Net.\n"
        "try:\n"
        "    from lossbench.integrations.nnunet import *  # noqa: F401,F403\n"
        "except ModuleNotFoundError as exc:\n"
        "    if (exc.name or '').partition('.')[0] != 'lossbench':\n"
        "        raise\n"
        "    import sys\n"
        "\n"
        "    print(f'lossbench is not installed: its nnU-Net trainers are unavailable (delete {__file__})', "
        "file=sys.stderr)\n"
    )


def trainer_folder() -> Path:
    """nnU-Net's trainer folder ``<nnunetv2>/training/nnUNetTrainer`` of the installed nnunetv2 (not imported).

    Raises:
        MissingExtraError: nnunetv2 is not installed.
    """
    spec = importlib.util.find_spec("nnunetv2")
    if spec is None or not spec.submodule_search_locations:
        raise expect(
            "nnunetv2", "installed", "no nnunetv2 package", "pip install 'lossbench[nnunet]'", cls=MissingExtraError
        )
    return Path(next(iter(spec.submodule_search_locations))) / "training" / "nnUNetTrainer"


def _target(folder: Path | str | None) -> Path:
    base = trainer_folder() if folder is None else Path(folder)
    if not base.is_dir():
        raise expect("nnU-Net trainer folder", "an existing folder", str(base))
    return base / SHIM_NAME


def _ours(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.readline().rstrip("\n") == MARKER


def _refuse(path: Path, verb: str) -> ConfigError:
    return expect(
        str(path), "a file written by `lossbench nnunet install`", "another file", f"lossbench will not {verb} it"
    )


def install(folder: Path | str | None = None) -> ShimResult:
    """Write the importing module into nnU-Net's trainer folder (idempotent, atomic).

    The trainers are imported first, so a module that would fail inside nnU-Net is never written.

    Args:
        folder: nnU-Net's trainer folder (default: that of the installed nnunetv2).

    Returns:
        The path and what was done: written, updated (an older lossbench's file) or unchanged.

    Raises:
        MissingExtraError: nnunetv2 is not installed.
        ConfigError: the folder does not exist, or a file of that name was not written by lossbench.
    """
    import lossbench.integrations.nnunet  # noqa: F401 (fails here, with the pip command, rather than in nnU-Net)

    path = _target(folder)
    text = shim_source()
    action = "written"
    if path.exists():
        if not _ours(path):
            raise _refuse(path, "overwrite")
        if path.read_text(encoding="utf-8") == text:
            return ShimResult(path, "unchanged")
        action = "updated"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".lossbench-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ShimResult(path, action)


def uninstall(folder: Path | str | None = None) -> ShimResult:
    """Remove the importing module (and its compiled copies) from nnU-Net's trainer folder (idempotent).

    Args:
        folder: nnU-Net's trainer folder (default: that of the installed nnunetv2).

    Returns:
        The path and what was done: removed or absent.

    Raises:
        MissingExtraError: no folder given and nnunetv2 is not installed.
        ConfigError: the folder does not exist, or the file there was not written by lossbench.
    """
    path = _target(folder)
    if not path.exists():
        return ShimResult(path, "absent")
    if not _ours(path):
        raise _refuse(path, "delete")
    path.unlink()
    for pyc in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        pyc.unlink(missing_ok=True)
    return ShimResult(path, "removed")
