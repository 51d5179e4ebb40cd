"""A small, closed name -> factory registry with metadata and "did you mean" errors.

Study files refer to losses, datasets and models by name; the registry is the only way a name
becomes an object, so a study can be validated before anything runs and can never import
arbitrary code.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from lossbench.errors import ConfigError, RegistryError

__all__ = ["Registry", "Entry", "suggest"]

T = TypeVar("T")


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return a " Did you mean 'x'?" hint for ``name`` among ``choices`` (empty string if nothing is close)."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered factory with its human-readable summary and parameter defaults."""

    name: str
    factory: Callable[..., T]
    summary: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()

    def param_names(self) -> list[str]:
        """Names of the keyword parameters the factory accepts."""
        return list(self.params)


def _signature_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    sig = inspect.signature(factory)
    out: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "self":
            continue
        out[p.name] = p.default if p.default is not inspect.Parameter.empty else inspect.Parameter.empty
    return out


class Registry(Generic[T]):
    """A named collection of factories.

    Example:
        >>> reg = Registry("loss")
        >>> @reg.register("dice", summary="Dice loss")
        ... def make_dice(smooth_nr: float = 1e-5): return ("dice", smooth_nr)
        >>> reg.build("dice", smooth_nr=0.0)
        ('dice', 0.0)
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, *, summary: str = "", tags: tuple[str, ...] = (), params: dict[str, Any] | None = None
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``; parameters default to the factory's signature."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            doc = summary or (inspect.getdoc(factory) or "").split("\n")[0]
            self._entries[name] = Entry(name, factory, doc, params or _signature_defaults(factory), tags)
            return factory

        return deco

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Entry[T]:
        """Return the entry for ``name`` or raise a :class:`RegistryError` with a suggestion."""
        if not isinstance(name, str) or name not in self._entries:
            raise RegistryError(
                f"`{self.kind}` must be one of {self.names()}, got {name!r}." + suggest(str(name), self.names())
            )
        return self._entries[name]

    def check_params(self, name: str, params: dict[str, Any]) -> None:
        """Raise a :class:`ConfigError` naming any parameter ``name``'s factory does not accept."""
        entry = self.get(name)
        allowed = entry.param_names()
        accepts_var = (
            any(p.kind == p.VAR_KEYWORD for p in inspect.signature(entry.factory).parameters.values())
            and not entry.params
        )
        if accepts_var:
            return
        for key in params:
            if key not in allowed:
                raise ConfigError(
                    f"`{key}` is not a parameter of {self.kind} {name!r}; valid parameters: {allowed}."
                    + suggest(key, allowed)
                )

    def build(self, name: str, /, **params: Any) -> T:
        """Instantiate ``name`` with ``params`` after checking every parameter name."""
        self.check_params(name, params)
        return self.get(name).factory(**params)
