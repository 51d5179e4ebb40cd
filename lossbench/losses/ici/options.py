"""The options of ``ici`` and ``dici``: one table drives the constructors, validation, docstrings and help.

Every option is an :class:`Option` row: its default (the published loss, what the public code computes), the value
lossbench's own design uses instead (``reference=False``), a one-line help and a check. :func:`make_config` turns
keyword arguments into a validated :class:`ICIConfig`; :func:`signature`, :func:`options_doc` and :func:`help_table`
present the same rows to ``inspect``, ``help()`` and ``lossbench losses``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lossbench.cc.api import BACKENDS
from lossbench.errors import ConfigError, expect
from lossbench.losses._core import BaseSpec, check_choice, check_flag, check_nonneg, make_base_spec
from lossbench.losses.baselines import ActivationConfig

__all__ = [
    "Option",
    "ICIConfig",
    "make_config",
    "signature",
    "options_doc",
    "help_table",
    "modes",
    "TP_MODES",
    "CENTER_MODES",
    "REDUCTIONS",
]

TP_MODES = ("keep", "remove", "remove_detached")
CENTER_MODES = ("reference", "trainable")
REDUCTIONS = ("instance", "image")
_UNSET = object()


def _int_at_least(low: int, what: str) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise expect(name, what, repr(value))
        return value

    return check


def _odd_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise expect(name, "an odd int >= 1 (side length of the center cube)", repr(value))
    return value


def _threshold(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise expect(name, "a number in (0, 1]", repr(value))
    return float(value)


def _connectivity(name: str, value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3):
        raise expect(name, "None (full) or an int in 1..3 (orthogonal hops)", repr(value))
    return value


def _optional_nonneg(name: str, value: Any) -> float | None:
    return None if value is None else check_nonneg(name, value)


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    return lambda name, value: check_choice(name, value, choices)


@dataclass(frozen=True)
class Option:
    """One option of ``ici``/``dici``.

    Attributes:
        name: keyword name.
        default: value of the published loss (used when the option is not given and ``reference=True``).
        help: one line for ``lossbench losses`` and the docstring.
        check: ``check(name, value)`` returns the validated value or raises a ``ConfigError``.
        lossbench: value of lossbench's own design, used when the option is not given and ``reference=False``
            (unset: the same as ``default``).
    """

    name: str
    default: Any
    help: str
    check: Callable[[str, Any], Any]
    lossbench: Any = _UNSET

    def value_for(self, reference: bool) -> Any:
        """The value used when the option is not given."""
        return self.default if reference or self.lossbench is _UNSET else self.lossbench


_WEIGHTS = {
    False: (
        Option("a", 1.0, "weight of the global term", check_nonneg),
        Option("b", 1.0, "weight of the (label-)instance term", check_nonneg),
        Option("c", 1.0, "weight of the center term", check_nonneg),
    ),
    True: (
        Option("a", 0.25, "weight of the global term", check_nonneg),
        Option("b", 0.25, "weight of the (label-)instance term", check_nonneg),
        Option("c", 0.25, "weight of the predicted-instance term", check_nonneg),
        Option("d", 0.25, "weight of the center term", check_nonneg),
    ),
}

_SHARED = (
    Option("base", "dice", "pixel loss of every term: a baseline name or {'name': ..., **params}", lambda n, v: v),
    Option(
        "tp_mode",
        "remove_detached",
        "other label instances inside a touching prediction component: keep (Eq. 3, false positives) | remove "
        "(Eq. 5 set difference, lossbench's) | remove_detached (public code: weight 0 on them, p * stopgrad(p) on "
        "background)",
        _choice(TP_MODES),
        lossbench="remove",
    ),
    Option(
        "cube_size",
        7,
        "odd side length of the center cubes (the paper's best; the code's own default is 11)",
        _odd_size,
    ),  # fmt: skip
    Option(
        "center_mode",
        "reference",
        "reference (published: constant cubes, zero gradient) | trainable (lossbench's: prediction cubes carry the "
        "component's mean probability)",
        _choice(CENTER_MODES),
        lossbench="trainable",
    ),
    Option(
        "reduction",
        "instance",
        "instance (1/Z over the mini-batch, Eq. 3) | image (per image, then mean)",
        _choice(REDUCTIONS),
    ),  # fmt: skip
    Option(
        "max_pred_instances",
        50,
        "use only the first k prediction components per image, in the public code's order (0 = no cap)",
        _int_at_least(0, "an int >= 0 (0 = no cap)"),
        lossbench=0,
    ),
    Option(
        "too_many_factor",
        50.0,
        "use no prediction component in an image with at least one label instance and more than factor x (label "
        "instances) components (0 = off)",
        check_nonneg,
        lossbench=0.0,
    ),
    Option("threshold", 0.5, "prediction components are prob >= threshold", _threshold),
    Option(
        "connectivity", None, "orthogonal hops; None = full (8 in 2D, 26 in 3D), as the public code", _connectivity
    ),  # fmt: skip
    Option(
        "cc_backend",
        "auto",
        "labelling backend: auto (cc3d on CPU, torch on CUDA), cc3d, scipy, torch, maxpool",
        _choice(BACKENDS),
    ),  # fmt: skip
    Option(
        "num_iterations",
        None,
        "iterations of the maxpool (public code's) labelling",
        lambda n, v: None if v is None else _int_at_least(1, "an int >= 1 or None")(n, v),
    ),  # fmt: skip
    Option(
        "reference",
        True,
        "True: the published loss for every option not given; False: lossbench's design (Eq. 5 set difference, "
        "trainable center, no caps) for those options",
        check_flag,
    ),
    Option("sigmoid", False, "input is logits; apply a sigmoid", check_flag),
    Option("softmax", False, "input is logits; apply a softmax over channels", check_flag),
    Option("include_background", True, "keep channel 0 (False drops it; needs C > 1)", check_flag),
    Option("to_onehot_y", False, "target holds class indices (B, 1, ...); one-hot it", check_flag),
    Option(
        "smooth_nr", None, "Dice numerator smoothing of a Dice-type base (None: the base's, 1e-5)", _optional_nonneg
    ),  # fmt: skip
    Option(
        "smooth_dr", None, "Dice denominator smoothing of a Dice-type base (None: the base's, 1e-5)", _optional_nonneg
    ),  # fmt: skip
)


def options(dual: bool) -> tuple[Option, ...]:
    """The option rows of ``dici`` (``dual=True``) or ``ici``, weights first."""
    return _WEIGHTS[dual] + _SHARED


@dataclass(frozen=True, kw_only=True)
class ICIConfig:
    """Validated options of ``ici``/``dici`` (meanings in :func:`options`).

    ``weights`` maps term names to weights: ``global``, ``instance``, ``center`` and, for DICI, ``predicted``.
    """

    dual: bool
    weights: dict[str, float]
    base: BaseSpec
    tp_mode: str
    cube_size: int
    center_mode: str
    reduction: str
    max_pred_instances: int
    too_many_factor: float
    threshold: float
    connectivity: int | None
    cc_backend: str
    num_iterations: int | None
    activation: ActivationConfig

    def weight(self, term: str) -> float:
        """Weight of a term (0 for a term this loss does not have)."""
        return self.weights.get(term, 0.0)

    @property
    def capped(self) -> bool:
        """Whether a cap on the prediction components applies."""
        return self.max_pred_instances > 0 or self.too_many_factor > 0


def make_config(dual: bool, params: dict[str, Any]) -> ICIConfig:
    """Validate keyword options into an :class:`ICIConfig` (``ConfigError`` for unknown or invalid ones)."""
    rows = {opt.name: opt for opt in options(dual)}
    unknown = sorted(set(params) - set(rows))
    if unknown:
        from lossbench.registry import suggest

        raise ConfigError(
            f"`{unknown[0]}` is not a parameter of {'dici' if dual else 'ici'}; valid parameters: {list(rows)}."
            + suggest(unknown[0], list(rows))
        )
    reference = check_flag("reference", params.get("reference", True))
    values = {name: opt.check(name, params[name]) if name in params else opt.value_for(reference)
              for name, opt in rows.items()}  # fmt: skip
    if values["num_iterations"] is not None and values["cc_backend"] != "maxpool":
        raise ConfigError(
            f"`num_iterations` only applies to cc_backend='maxpool', got cc_backend={values['cc_backend']!r}"
        )
    names = ("global", "instance", "predicted", "center") if dual else ("global", "instance", "center")
    weights = dict(zip(names, (float(values[k]) for k in "abcd")))
    return ICIConfig(
        dual=dual,
        weights=weights,
        base=_base_spec(values),
        tp_mode=values["tp_mode"],
        cube_size=values["cube_size"],
        center_mode=values["center_mode"],
        reduction=values["reduction"],
        max_pred_instances=int(values["max_pred_instances"]),
        too_many_factor=float(values["too_many_factor"]),
        threshold=values["threshold"],
        connectivity=values["connectivity"],
        cc_backend=values["cc_backend"],
        num_iterations=values["num_iterations"],
        activation=ActivationConfig(
            values["sigmoid"], values["softmax"], values["include_background"], values["to_onehot_y"]
        ),
    )


def _base_spec(values: dict[str, Any]) -> BaseSpec:
    """The base's spec, with the ``smooth_nr``/``smooth_dr`` shortcuts merged into a Dice-type base."""
    base = values["base"]
    base_dict = dict(base) if isinstance(base, dict) else {"name": base}
    for key in ("smooth_nr", "smooth_dr"):
        if values[key] is not None:
            if base_dict.get("name") in ("bce", "focal"):
                raise ConfigError(f"`{key}` needs a Dice-type `base`, got base={base_dict.get('name')!r}")
            base_dict[key] = values[key]
    return make_base_spec(base_dict)


def signature(dual: bool) -> inspect.Signature:
    """The class signature (keyword-only options, defaults of the published loss) for ``inspect`` and ``help()``."""
    params = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default) for o in options(dual)]
    return inspect.Signature(params)


def options_doc(dual: bool) -> str:
    """The ``Args:`` section of the constructor docstring, one entry per option."""
    lines = ["", "    Args:"]
    for o in options(dual):
        own = "" if o.lossbench is _UNSET else f"; lossbench's design: {o.lossbench!r}"
        lines.append(f"        {o.name}: {o.help} (default {o.default!r}{own}).")
    return "\n".join(lines) + "\n"


def help_table(dual: bool) -> dict[str, str]:
    """Option name -> one-line help (``lossbench losses``)."""
    return {o.name: o.help for o in options(dual)}


def modes(dual: bool) -> dict[str, dict[str, Any]]:
    """Which values are the published loss's (``reference``) and which lossbench's own design (``lossbench``)."""
    own = [o for o in options(dual) if o.lossbench is not _UNSET]
    return {"reference": {o.name: o.default for o in own}, "lossbench": {o.name: o.lossbench for o in own}}
