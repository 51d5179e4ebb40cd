"""Study files: a strict, versioned schema, read with a safe YAML loader that remembers line numbers.

A study file names a dataset, a network, the training schedule, the losses to compare and the seeds::

    schema_version: 1
    name: quickstart
    seeds: [0, 1]
    dataset: {name: synthetic_lesions, spatial_dims: 2, size: 64, n_train: 32, n_val: 8, n_test: 8}
    model: {name: unet, channels: [8, 16, 32], strides: [2, 2], num_res_units: 1}
    training: {epochs: 12, batch_size: 4, lr: 3.0e-3, val_every: 2, mode: whole}
    losses:
      - {label: "Dice", name: dice}
      - {label: "ICI 1/4,1/2,1/4", name: ici, a: 0.25, b: 0.5, c: 0.25}
    evaluation: {connectivity: 1, size_bins: [10, 100, 1000]}
    report: {baseline: "Dice"}

Two levels of checking:

* :func:`load_study` parses the YAML (``yaml.SafeLoader``: no tags that build Python objects, so a
  study file can never import or run code) and validates it against the pydantic models below
  (``extra="forbid"`` everywhere, strict types, ``schema_version`` checked).
* :func:`validate_study_file` additionally builds every named object (each dataset, the network and
  every loss) through the closed registries, so an unknown name, an unknown parameter or an invalid
  value is reported before anything trains.

Every problem is a :class:`~lossbench.errors.ConfigError` whose message starts with
``"<file>:<line>: <key>: "`` and, for names and keys, suggests the closest valid one. All the problems of a
level are reported together (every schema problem; then the first problem of every dataset, of the model and of
every loss): several problems are one :class:`StudyProblems` whose ``problems`` lists them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from lossbench.errors import ConfigError, LossbenchError, RegistryError

__all__ = [
    "SCHEMA_VERSION",
    "StudyConfig",
    "DatasetSpec",
    "ModelSpec",
    "LossSpec",
    "TrainingConfig",
    "EvaluationConfig",
    "ReportConfig",
    "RankingConfig",
    "DatasetFacts",
    "load_study",
    "study_scales",
    "parse_study",
    "validate_study_file",
    "check_study",
    "StudyProblems",
    "problems_of",
]

#: Version of the study file schema (and of every JSON file of the results store).
SCHEMA_VERSION = 1

Loc = tuple[str | int, ...]


# --------------------------------------------------------------------------------------------- YAML


class _LineLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python object tags); line numbers are read from the composed node tree.

    Also reads ``1e-3`` as a float, as YAML 1.2 does (YAML 1.1, and so PyYAML, requires ``1.0e-3``).
    """


_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _walk_lines(node: yaml.Node, path: Loc, lines: dict[Loc, int], source: str) -> None:
    """Record the 1-based line of every key / list item under ``node``; reject duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = _dotted(path + (key,))
                raise ConfigError(f"{source}:{line}: {dotted}: duplicate key (first given on line {seen[key]})")
            seen[key] = line
            lines[path + (key,)] = line
            _walk_lines(value_node, path + (key,), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk_lines(item, path + (i,), lines, source)


def _parse_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    """Parse ``text`` safely; return the data and a map key path -> 1-based line."""
    loader = _LineLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
            raise ConfigError(f"{source}:{line}: yaml: {problem}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}:1: yaml: {' '.join(str(exc).split())}") from None
        if node is None:
            raise ConfigError(f"{source}:1: study: the file is empty; expected a mapping with `schema_version`")
        lines: dict[Loc, int] = {(): node.start_mark.line + 1}
        _walk_lines(node, (), lines, source)
        try:
            data = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            raise ConfigError(f"{source}:{line}: yaml: {' '.join(str(exc.problem).split())}") from None
    finally:
        loader.dispose()
    return data, lines


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "study"


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a study came from: the file name and the line of every key path."""

    name: str
    lines: dict[Loc, int]

    def line(self, loc: Loc) -> int:
        loc = tuple(p for p in loc if p != "params")
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def error(self, loc: Loc, problem: str, cls: type[ConfigError] = ConfigError) -> ConfigError:
        key = _dotted([p for p in loc if p != "params"])
        return cls(f"{self.name}:{self.line(loc)}: {key}: {' '.join(problem.split())}")


# ------------------------------------------------------------------------------------------ schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class _Named(_Strict):
    """A registry name plus its parameters, written flat in YAML: ``{name: ici, a: 1, ...}``."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    _reserved: typing.ClassVar[tuple[str, ...]] = ("name",)

    @model_validator(mode="before")
    @classmethod
    def _collect_params(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fixed = {k: v for k, v in data.items() if k in cls._reserved}
        fixed["params"] = {k: v for k, v in data.items() if k not in cls._reserved}
        return fixed

    def flat(self) -> dict[str, Any]:
        """The spec as written in YAML (reserved keys plus parameters)."""
        out = {k: getattr(self, k) for k in self._reserved if getattr(self, k) is not None}
        out.update(self.params)
        return out


def _auto_label(name: str, params: dict[str, Any]) -> str:
    if not params:
        return name
    return f"{name}(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


class LossSpec(_Named):
    """One loss configuration: a ``label`` (unique in the study), a registry ``name`` and its parameters."""

    label: str | None = None
    _reserved: typing.ClassVar[tuple[str, ...]] = ("name", "label")

    @model_validator(mode="after")
    def _default_label(self) -> LossSpec:
        if self.label is None:
            self.label = _auto_label(self.name, self.params)
        return self


class DatasetSpec(_Named):
    """A dataset: registry ``name``, optional ``label`` (default: the name) and its parameters."""

    label: str | None = None
    _reserved: typing.ClassVar[tuple[str, ...]] = ("name", "label")

    @model_validator(mode="after")
    def _default_label(self) -> DatasetSpec:
        if self.label is None:
            self.label = self.name
        return self


class ModelSpec(_Named):
    """The network: registry ``name`` (``unet`` or ``unet_ici_paper``) and its architecture options."""

    name: str = "unet"


class TrainingConfig(_Strict):
    """Optimisation schedule (Adam), batch size, validation frequency and whole-image or patch mode.

    Attributes:
        epochs: passes over the training split (>= 1).
        batch_size: subjects (whole mode) or patches (patch mode) per optimiser step; also the inference batch.
        lr: Adam learning rate (> 0).
        weight_decay: Adam weight decay (>= 0).
        optimizer: only ``"adam"`` (the paper's optimiser).
        val_every: validate every k epochs; the last epoch is always validated.
        mode: ``"whole"`` (whole images) or ``"patch"`` (random patches for training, sliding-window inference).
        augment: the paper's random flips, rotations, zooms and intensity changes
            (:func:`lossbench.data.transforms.make_transforms`); z-score normalisation is always applied.
        patch_size: patch shape (patch mode; one entry per spatial dimension).
        patches_per_subject: patches drawn from each subject per epoch (patch mode; the paper uses 8).
        pos_fraction: share of lesion-centered patches (patch mode; the paper's 1:1 is 0.5).
        max_steps_per_epoch: cap on the optimiser steps of an epoch (``null`` = no cap).
        sw_batch_size: windows per forward pass of the sliding-window inference (patch mode).
        num_workers: data-loading processes for the training transforms (0 = in the training process). With
            workers, batches come from a seeded MONAI ``DataLoader`` (reproducible for a fixed ``num_workers``);
            in patch mode ``batch_size`` must then be a multiple of ``patches_per_subject``.
    """

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    optimizer: Literal["adam"] = "adam"
    val_every: int = Field(default=1, ge=1)
    mode: Literal["whole", "patch"] = "whole"
    augment: bool = True
    patch_size: list[int] | None = None
    patches_per_subject: int = Field(default=4, ge=1)
    pos_fraction: float = Field(default=0.5, ge=0, le=1)
    max_steps_per_epoch: int | None = Field(default=None, ge=1)
    sw_batch_size: int = Field(default=4, ge=1)
    num_workers: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _patch(self) -> TrainingConfig:
        if self.mode == "patch" and self.patch_size is None:
            raise ValueError("`patch_size` is required when `mode` is 'patch'")
        if self.mode == "patch" and self.num_workers > 0 and self.batch_size % self.patches_per_subject:
            raise ValueError(
                f"`batch_size` must be a multiple of `patches_per_subject` ({self.patches_per_subject}) when "
                f"`num_workers` > 0 in patch mode, got {self.batch_size}"
            )
        if self.patch_size is not None and any(p < 1 for p in self.patch_size):
            raise ValueError(f"`patch_size` must be positive integers, got {self.patch_size}")
        return self


class EvaluationConfig(_Strict):
    """How predictions are scored: threshold, connectivity of instances, size bins of the detection metrics.

    Attributes:
        threshold: prediction = ``sigmoid(logits) >= threshold``.
        connectivity: orthogonal hops defining instances for every metric (1 = the ATLAS challenge's face
            connectivity; ``null`` = full, the ICI paper's code).
        size_bins: instance-size bin edges in voxels of the detection metrics (``[10, 100]`` -> [1, 10),
            [10, 100), [100, inf)).
        spacing: voxel size per spatial axis (adds ``volume_difference_ml``).
    """

    threshold: float = Field(default=0.5, gt=0, lt=1)
    connectivity: int | None = Field(default=1, ge=1, le=3)
    size_bins: list[int] = Field(default_factory=lambda: [10, 100, 1000])
    spacing: list[float] | None = None

    @model_validator(mode="after")
    def _bins(self) -> EvaluationConfig:
        b = self.size_bins
        if any(x < 2 for x in b) or any(x >= y for x, y in zip(b, b[1:])):
            raise ValueError(f"`size_bins` must be strictly increasing integers >= 2, got {b}")
        return self


class RankingConfig(_Strict):
    """Ranking options: ``divisor`` of the mean rank (``null`` = number of metrics; 6 reproduces Table 1)."""

    divisor: float | None = Field(default=None, gt=0)


class ReportConfig(_Strict):
    """What the report compares against and which formats it writes."""

    baseline: str | None = None
    ranking: RankingConfig = Field(default_factory=RankingConfig)
    formats: list[Literal["md", "html"]] = Field(default_factory=lambda: ["md", "html"])


class StudyConfig(_Strict):
    """A whole study file. Build it with :func:`load_study` or :func:`validate_study_file`.

    Attributes:
        schema_version: must be 1.
        name: study name (letters, digits, ``_.-``); the default run folder is ``runs/<name>``.
        description: free text for the report.
        seeds: one cell per seed and loss; the seed drives the network initialisation, the batch order and the
            augmentations. The data do not depend on it (a dataset's own ``seed`` parameter chooses them), so
            every loss and seed is evaluated on the same subjects.
        dataset: one dataset (registry name + parameters), or ``datasets``: a list (one grid per dataset).
        model: the network (``unet`` or ``unet_ici_paper`` + options; dims and channels come from the data).
        training: :class:`TrainingConfig`.
        losses: the loss configurations to compare; labels must be unique. ``sigmoid`` is always true.
        evaluation: :class:`EvaluationConfig`.
        report: :class:`ReportConfig` (read by the report; ``baseline`` must be one of the loss labels).
    """

    schema_version: Literal[1]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    description: str = ""
    seeds: list[int] = Field(min_length=1)
    dataset: DatasetSpec | None = None
    datasets: list[DatasetSpec] | None = Field(default=None, min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingConfig
    losses: list[LossSpec] = Field(min_length=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    _source: _Source = PrivateAttr(default_factory=lambda: _Source("<study>", {}))

    def dataset_list(self) -> list[tuple[Loc, DatasetSpec]]:
        """The datasets with their location in the file (``dataset`` or ``datasets[i]``)."""
        if self.datasets is not None:
            return [(("datasets", i), d) for i, d in enumerate(self.datasets)]
        assert self.dataset is not None  # guaranteed by load_study's cross-checks
        return [(("dataset",), self.dataset)]

    @property
    def source(self) -> str:
        """The file the study was read from (``"<study>"`` if built from a dict)."""
        return self._source.name

    def error(self, loc: Loc, problem: str) -> ConfigError:
        """A :class:`ConfigError` located at key path ``loc`` of the study file."""
        return self._source.error(loc, problem)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved study (defaults filled in) as plain data, in the YAML layout."""
        data = self.model_dump(mode="json", exclude={"dataset", "datasets", "model", "losses"})
        out: dict[str, Any] = {"schema_version": data.pop("schema_version"), "name": data.pop("name")}
        out.update(data)
        if self.datasets is not None:
            out["datasets"] = [d.flat() for d in self.datasets]
        else:
            out["dataset"] = self.dataset.flat() if self.dataset else None
        out["model"] = self.model.flat()
        out["losses"] = [loss.flat() for loss in self.losses]
        return out


# ---------------------------------------------------------------------------------------- messages


def _fields_at(loc: Loc) -> list[str]:
    """Valid keys of the schema model reached by following ``loc`` from :class:`StudyConfig`."""
    model: Any = StudyConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = _unwrap(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f for f in model.model_fields if f != "params"]
    return []


def _unwrap(annotation: Any) -> Any:
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        for inner in typing.get_args(arg):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return annotation


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(err: dict[str, Any]) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    msg = str(err["msg"])
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        valid = _fields_at(loc[:-1])
        hint = ""
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        if close:
            hint = f" Did you mean {close[0]!r}?"
        return f"unknown key; valid keys: {', '.join(valid)}.{hint}"
    if msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    if msg.startswith("Input should be "):
        return "must be " + msg[len("Input should be ") :] + f", got {_short(err.get('input'))}"
    return f"{msg}, got {_short(err.get('input'))}"


def _from_validation_error(exc: ValidationError, source: _Source) -> ConfigError:
    # A misspelt key shows up twice (unknown key + required key missing): report the misspelling first.
    rank = {"extra_forbidden": 0, "missing": 2}
    errors = sorted(exc.errors(), key=lambda e: rank.get(e["type"], 1))
    return _together([source.error(tuple(e["loc"]), _problem(e)) for e in errors])


class StudyProblems(ConfigError):
    """Several located problems of one study file, raised together.

    The message joins them with ``"; "``; ``problems`` holds one ``"<file>:<line>: <key>: <problem>"`` each.
    """

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def problems_of(exc: ConfigError) -> list[str]:
    """The located problems an error reports: its ``problems``, or its message as the only one."""
    return list(getattr(exc, "problems", None) or [str(exc)])


def _together(errors: Sequence[ConfigError]) -> ConfigError:
    """One error for all: the error itself when there is one, else a :class:`StudyProblems` listing each once."""
    if len(errors) == 1:
        return errors[0]
    return StudyProblems(list(dict.fromkeys(p for e in errors for p in problems_of(e))))


class _Collector:
    """Collects the :class:`ConfigError` of each checked entry, so that every entry of a study is checked."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    @contextlib.contextmanager
    def entry(self) -> Iterator[None]:
        """Check one entry: its first problem is recorded, and checking goes on with the next entry."""
        try:
            yield
        except ConfigError as exc:
            self.errors.append(exc)

    def raise_any(self) -> None:
        """Raise every recorded problem as one error (nothing when there is none)."""
        if self.errors:
            raise _together(self.errors)


# -------------------------------------------------------------------------------------------- load


def parse_study(data: Any, *, source: str = "<study>", lines: dict[Loc, int] | None = None) -> StudyConfig:
    """Validate already-parsed study data against the schema (no objects are built).

    Args:
        data: the mapping read from a study file.
        source: file name used in error messages.
        lines: key path -> line map (from the YAML parser), for error locations.

    Returns:
        The :class:`StudyConfig`.

    Raises:
        ConfigError: the data does not match the schema; the message is ``"<source>:<line>: <key>: <problem>"``.
    """
    src = _Source(source, dict(lines or {}))
    if not isinstance(data, dict):
        raise src.error((), f"must be a mapping of keys (schema_version, name, ...), got {type(data).__name__}")
    version = data.get("schema_version")
    if version is not None and version != SCHEMA_VERSION:
        raise src.error(
            ("schema_version",),
            f"must be {SCHEMA_VERSION} (this lossbench reads study schema {SCHEMA_VERSION}), got {version!r}",
        )
    try:
        cfg = StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise _from_validation_error(exc, src) from None
    cfg._source = src
    _cross_checks(cfg)
    return cfg


def _cross_checks(cfg: StudyConfig) -> None:
    """Rules across keys: one of ``dataset``/``datasets``, unique seeds and labels, a baseline that is a label."""
    found = _Collector()
    if (cfg.dataset is None) == (cfg.datasets is None):
        found.errors.append(cfg.error((), "exactly one of `dataset` (a mapping) or `datasets` (a list) is required"))
        found.raise_any()
    for i, seed in enumerate(cfg.seeds):
        if seed < 0:
            found.errors.append(cfg.error(("seeds", i), f"must be a non-negative integer, got {seed}"))
        elif seed in cfg.seeds[:i]:
            found.errors.append(cfg.error(("seeds", i), f"seed {seed} is listed twice"))
    labels = _loss_labels(cfg, found)
    ds_labels: list[str] = []
    for loc, ds in cfg.dataset_list():
        if ds.label in ds_labels:
            found.errors.append(cfg.error(loc + ("label",), f"dataset label {ds.label!r} is used twice"))
        ds_labels.append(str(ds.label))
    baseline = cfg.report.baseline
    if baseline is not None and baseline not in labels:
        close = difflib.get_close_matches(baseline, labels, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        found.errors.append(
            cfg.error(("report", "baseline"), f"must be one of the loss labels {labels}, got {baseline!r}.{hint}")
        )
    found.raise_any()


def _loss_labels(cfg: StudyConfig, found: _Collector) -> list[str]:
    """The loss labels in file order; an empty or repeated label is recorded as a problem."""
    labels: list[str] = []
    for i, loss in enumerate(cfg.losses):
        assert loss.label is not None  # filled by LossSpec's validator
        if not loss.label.strip():
            found.errors.append(cfg.error(("losses", i, "label"), "must be a non-empty string, got ''"))
        elif loss.label in labels:
            found.errors.append(
                cfg.error(("losses", i, "label"), f"label {loss.label!r} is used twice; labels must be unique")
            )
        labels.append(loss.label)
    return labels


def _merge_scale(
    data: dict[str, Any], lines: dict[Loc, int], scale: str | None, source: str
) -> tuple[dict[str, Any], dict[Loc, int]]:
    """Remove the optional ``scales`` section and, when ``scale`` is given, deep-merge that scale over the study.

    A study file runs at its own (CPU) scale by default; ``scales: {gpu: {training: {epochs: 200}}}`` names
    overrides that ``lossbench run --scale gpu`` applies: mappings are merged key by key, anything else
    (numbers, lists) is replaced. The scale's name is appended to the study name, so each scale gets its own
    default run folder. Error locations of overridden keys point at the line inside ``scales``.
    """
    src = _Source(source, dict(lines))
    scales = data.pop("scales", None) if isinstance(data, dict) else None
    if scales is not None and (
        not isinstance(scales, dict) or not all(isinstance(v, dict) and isinstance(k, str) for k, v in scales.items())
    ):
        raise src.error(("scales",), "must be a mapping of scale name -> mapping of overrides")
    if scale is None:
        return data, lines
    names = sorted(scales or {})
    if scale not in names:
        hint = difflib.get_close_matches(str(scale), names, n=1, cutoff=0.5)
        raise ConfigError(
            f"`scale` must be one of the study's scales {names}, got {scale!r}"
            + (f". Did you mean {hint[0]!r}?" if hint else "")
        )
    lines = dict(lines)

    def merge(base: dict[str, Any], over: dict[str, Any], path: Loc) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            loc = path + (key,)
            lines[loc] = lines.get(("scales", scale) + loc, lines.get(loc, 1))
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value, loc)
            else:
                out[key] = value
        return out

    merged = merge(data, scales[scale], ())
    if isinstance(merged.get("name"), str) and "name" not in scales[scale]:
        merged["name"] = f"{merged['name']}-{scale}"
    return merged, lines


def load_study(path: str | Path, *, scale: str | None = None) -> StudyConfig:
    """Read and schema-check a study file (safe YAML; nothing is built or run).

    Args:
        path: the study YAML file.
        scale: name of an entry of the file's optional ``scales`` section to apply (e.g. ``"gpu"``); ``None``
            runs the file as written.

    Returns:
        The :class:`StudyConfig`, which remembers the file and the line of every key for later errors.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown keys, wrong types or values, unknown scale.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"`study` must be an existing YAML file, got {str(p)!r} (no such file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"`study` must be a readable UTF-8 YAML file, got {str(p)!r} ({exc})") from None
    data, lines = _parse_yaml(text, str(p))
    if isinstance(data, dict):
        data, lines = _merge_scale(data, lines, scale, str(p))
    elif scale is not None:
        raise ConfigError(f"`scale` needs a study file with a `scales` section, got {scale!r} for {str(p)!r}")
    return parse_study(data, source=str(p), lines=lines)


def study_scales(path: str | Path) -> list[str]:
    """Names of the ``scales`` a study file defines (empty list when it has none)."""
    data, _ = _parse_yaml(Path(path).read_text(encoding="utf-8"), str(path))
    scales = data.get("scales") if isinstance(data, dict) else None
    return sorted(scales) if isinstance(scales, dict) else []


# ------------------------------------------------------------------------------------ deep checks


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
    """What the runner needs to know about a built dataset: split sizes and the image geometry.

    ``spatial_shape`` is the smallest size along each axis over all subjects (every subject has exactly this shape
    in whole-image mode).
    """

    label: str
    n_train: int
    n_val: int
    n_test: int
    spatial_shape: tuple[int, ...]
    in_channels: int

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return len(self.spatial_shape)


_BACKTICK = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def _locate_param(message: str, params: dict[str, Any]) -> str | None:
    for name in _BACKTICK.findall(message):
        if name in params:
            return name
    return None


def _build_error(cfg: StudyConfig, loc: Loc, params: dict[str, Any], exc: Exception) -> ConfigError:
    msg = " ".join(str(exc).split())
    if isinstance(exc, RegistryError):
        return cfg.error(loc + ("name",), msg)
    key = _locate_param(msg, params)
    return cfg.error(loc + ((key,) if key else ()), msg)


def _check_params(cfg: StudyConfig, loc: Loc, registry: Any, name: str, params: dict[str, Any]) -> None:
    try:
        registry.get(name)
    except RegistryError as exc:
        raise cfg.error(loc + ("name",), str(exc)) from None
    try:
        registry.check_params(name, params)
    except ConfigError as exc:
        key = _locate_param(str(exc), params)
        raise cfg.error(loc + ((key,) if key else ()), str(exc)) from None


def loss_kwargs(spec: LossSpec) -> dict[str, Any]:
    """Parameters passed to ``build_loss``: the study's parameters plus ``sigmoid=True`` (the network emits logits)."""
    return {**spec.params, "sigmoid": True}


def check_study(cfg: StudyConfig) -> list[DatasetFacts]:
    """Build every dataset, the network and every loss once; raise one located error listing every problem.

    Each dataset, the model and each loss is checked on its own (an entry's first problem is its problem), so
    one run of ``lossbench validate`` shows every entry that needs a fix; the model is built for the datasets
    that could be built.

    Args:
        cfg: a schema-checked study.

    Returns:
        One :class:`DatasetFacts` per dataset, in file order.

    Raises:
        ConfigError: unknown dataset/model/loss name or parameter, invalid value, a network that does not fit
            the image or patch size, or a loss that sets ``sigmoid`` (the runner always trains on logits); with
            several problems a :class:`StudyProblems` that lists them all.
    """
    found = _Collector()
    facts: list[DatasetFacts] = []
    for loc, ds in cfg.dataset_list():
        with found.entry():
            facts.append(_check_dataset(cfg, loc, ds))
    with found.entry():
        _check_model(cfg, facts)
    for i, loss in enumerate(cfg.losses):
        with found.entry():
            _check_loss(cfg, ("losses", i), loss)
    found.raise_any()
    return facts


def _check_dataset(cfg: StudyConfig, loc: Loc, ds: DatasetSpec) -> DatasetFacts:
    """Build one dataset and read its split sizes and image geometry."""
    from lossbench.study.datasets import build_splits, dataset_registry

    datasets, _ = dataset_registry()
    _check_params(cfg, loc, datasets, ds.name, ds.params)
    try:
        splits = build_splits(ds.name, ds.params)
    except LossbenchError as exc:
        raise _build_error(cfg, loc, ds.params, exc) from None
    except TypeError as exc:
        raise cfg.error(loc, f"invalid parameters for dataset {ds.name!r}: {exc}") from None
    first = splits["train"][0]["image"]
    # Lazy (on-disk) datasets: only the first subject of each split is read here.
    shapes = {
        tuple(int(n) for n in split[i]["image"].shape)
        for split in splits.values()
        for i in (range(1) if split.lazy else range(len(split)))
    }
    if cfg.training.mode == "whole" and len(shapes) > 1:
        raise cfg.error(
            loc,
            f"must have images of one shape for whole-image training, got {len(shapes)} shapes "
            f"(e.g. {sorted(shapes)[:2]}); use `training.mode: patch`",
        )
    if len({s[0] for s in shapes}) > 1:
        raise cfg.error(loc, f"must have one number of image channels, got shapes {sorted(shapes)[:3]}")
    return DatasetFacts(
        label=str(ds.label),
        n_train=len(splits["train"]),
        n_val=len(splits["val"]),
        n_test=len(splits["test"]),
        spatial_shape=tuple(min(shape[k] for shape in shapes) for k in range(1, first.ndim)),
        in_channels=int(first.shape[0]),
    )


def _check_model(cfg: StudyConfig, facts: list[DatasetFacts]) -> None:
    """The network's name and parameters, then the network built for each dataset and fitted to its input."""
    from lossbench.study.model import DATA_DERIVED, MODELS, build_model

    mloc: Loc = ("model",)
    for key in DATA_DERIVED:
        if key in cfg.model.params:
            raise cfg.error(mloc + (key,), "is taken from the dataset and must not be set in `model`")
    _check_params(cfg, mloc, MODELS, cfg.model.name, cfg.model.params)
    for f in facts:
        try:
            build_model(cfg.model.name, cfg.model.params, spatial_dims=f.spatial_dims, in_channels=f.in_channels)
        except LossbenchError as exc:
            raise _build_error(cfg, mloc, cfg.model.params, exc) from None
        except (TypeError, ValueError) as exc:
            raise cfg.error(mloc, f"invalid network parameters: {exc}") from None
        _check_model_input(cfg, f)


def _check_model_input(cfg: StudyConfig, f: DatasetFacts) -> None:
    """The patch (patch mode) or the image (whole mode) of a dataset must suit the network's strides."""
    from lossbench.study.model import check_model_input

    tr = cfg.training
    if tr.mode == "patch":
        assert tr.patch_size is not None  # required in patch mode by TrainingConfig's validator
        if len(tr.patch_size) != f.spatial_dims:
            raise cfg.error(
                ("training", "patch_size"),
                f"must have {f.spatial_dims} entries (dataset {f.label!r} is {f.spatial_dims}D), got {tr.patch_size}",
            )
        if any(p > s for p, s in zip(tr.patch_size, f.spatial_shape)):
            raise cfg.error(
                ("training", "patch_size"),
                f"must fit in the image size {f.spatial_shape} of dataset {f.label!r}, got {tr.patch_size}",
            )
        shape, what = tuple(tr.patch_size), "patch"
    else:
        shape, what = f.spatial_shape, "image"
    try:
        check_model_input(cfg.model.name, cfg.model.params, shape, what)
    except ConfigError as exc:
        raise cfg.error(("model", "strides"), str(exc)) from None


def _check_loss(cfg: StudyConfig, loc: Loc, loss: LossSpec) -> None:
    """A loss's name and parameters, then the loss built (``sigmoid`` is the runner's, never the study's)."""
    from lossbench.losses import LOSSES, build_loss

    if "sigmoid" in loss.params:
        raise cfg.error(
            loc + ("sigmoid",), "must not be set: the network emits logits and the runner passes sigmoid=true"
        )
    _check_params(cfg, loc, LOSSES, loss.name, loss_kwargs(loss))
    try:
        build_loss(loss.name, **loss_kwargs(loss))
    except LossbenchError as exc:
        raise _build_error(cfg, loc, loss.params, exc) from None
    except TypeError as exc:
        raise cfg.error(loc, f"invalid parameters for loss {loss.name!r}: {exc}") from None


def validate_study_file(path: str | Path, *, scale: str | None = None) -> StudyConfig:
    """Schema-check a study file and build every dataset, network and loss it names; run nothing.

    This is ``lossbench validate``: when it returns, ``lossbench run`` will not fail on a name, a
    parameter or a shape mismatch between the network and the data. Without ``scale``, every scale of the
    file's ``scales`` section is schema-checked too (the objects are built for the chosen scale only).

    Args:
        path: the study YAML file.
        scale: the scale to validate fully (``None``: the file as written).

    Returns:
        The validated :class:`StudyConfig`.

    Raises:
        ConfigError: every problem found, each as ``"<file>:<line>: <key>: <problem>"`` (several: a
            :class:`StudyProblems` with one entry per problem in ``problems``; the schema is checked first, and
            objects are built only from a schema-valid study).
    """
    cfg = load_study(path, scale=scale)
    found = _Collector()
    with found.entry():
        check_study(cfg)
    if scale is None:
        for name in study_scales(path):
            with found.entry():
                load_study(path, scale=name)
    found.raise_any()
    return cfg
