"""Errors raised for user mistakes.

Every error lossbench raises for bad input is a :class:`LossbenchError`, which is also a
:class:`ValueError`, so ``except ValueError`` keeps working for callers who do not know lossbench.
Messages follow one form: "`name` must be <expectation>, got <actual>" plus an optional hint.
"""

from __future__ import annotations

__all__ = [
    "LossbenchError",
    "ShapeError",
    "ConfigError",
    "RegistryError",
    "BackendError",
    "DataError",
    "MissingExtraError",
    "StudyError",
    "expect",
]


class LossbenchError(ValueError):
    """Base class of every user-facing lossbench error (also a ``ValueError``)."""


class ShapeError(LossbenchError):
    """A tensor or array has the wrong shape or number of dimensions."""


class ConfigError(LossbenchError):
    """A parameter or configuration value is invalid."""


class RegistryError(ConfigError):
    """An unknown name was looked up in a registry."""


class BackendError(ConfigError):
    """A backend cannot do what was asked (unknown, unavailable, or unsupported option)."""


class DataError(LossbenchError):
    """Input data is invalid (non-binary masks, NaN, missing files, ...)."""


class MissingExtraError(LossbenchError):
    """An optional dependency (a pip extra) is needed but not installed."""


class StudyError(LossbenchError):
    """A study run folder or its results are invalid."""


def expect(
    name: str, expectation: str, got: object, hint: str = "", cls: type[LossbenchError] = ConfigError
) -> LossbenchError:
    """Build an error in the house format: "`name` must be <expectation>, got <got>" (+ hint).

    Returns the exception so the caller writes ``raise expect(...)`` and the traceback points at the call site.
    """
    msg = f"`{name}` must be {expectation}, got {got}"
    if hint:
        msg += f" ({hint})"
    return cls(msg)
