"""Study files: schema, located error messages, safe loading, deep validation by building every object."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lossbench.cli import main
from lossbench.errors import ConfigError
from lossbench.study.config import load_study, parse_study, validate_study_file
from lossbench.study.grid import cell_hash, expand_grid, slug, steps_per_epoch

REPO = Path(__file__).resolve().parents[1]

# Line numbers below refer to this text (line 1 = "schema_version: 1").
BASE = """\
schema_version: 1
name: tiny
seeds: [0, 1]
dataset: {name: synthetic_lesions, spatial_dims: 2, size: 32, n_train: 4, n_val: 2, n_test: 2}
model: {name: unet, channels: [4, 8, 16], strides: [2, 2], num_res_units: 0}
training:
  epochs: 2
  batch_size: 2
  lr: 1.0e-3
  val_every: 1
  augment: false
losses:
  - {label: "Dice", name: dice}
  - {label: "ICI 1/4,1/2,1/4", name: ici, a: 0.25, b: 0.5, c: 0.25}
evaluation: {connectivity: 1, size_bins: [10, 100]}
report: {baseline: "Dice"}
"""


def _write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _replace_line(line_no: int, new: str) -> str:
    lines = BASE.splitlines()
    lines[line_no - 1] = new
    return "\n".join(lines) + "\n"


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        validate_study_file(path)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_valid_study_roundtrip(tmp_path):
    cfg = validate_study_file(_write(tmp_path, BASE))
    assert cfg.name == "tiny"
    assert [loss.label for loss in cfg.losses] == ["Dice", "ICI 1/4,1/2,1/4"]
    assert cfg.losses[1].params == {"a": 0.25, "b": 0.5, "c": 0.25}
    assert cfg.training.mode == "whole" and cfg.training.val_every == 1
    # The resolved study re-parses to the same config (defaults filled in, nothing lost).
    again = parse_study(cfg.to_yaml_dict())
    assert again.model_dump() == cfg.model_dump()


@pytest.mark.parametrize(
    ("line", "new", "expect_line", "needles"),
    [
        (7, "  epochs: -3", 7, ["training.epochs", "greater than or equal to 1", "-3"]),
        (7, '  epochs: "ten"', 7, ["training.epochs", "integer", "'ten'"]),
        (8, "  batchsize: 2", 8, ["training.batchsize", "unknown key", "Did you mean 'batch_size'?"]),
        (13, '  - {label: "Dice", name: blop}', 13, ["losses[0].name", "Did you mean 'blob'?"]),
        (14, "  - {label: X, name: ici, aa: 0.25}", 14, ["losses[1].aa", "Did you mean 'a'?"]),
        (14, "  - {label: X, name: ici, a: -1}", 14, ["losses[1].a", ">= 0", "-1"]),
        (14, "  - {label: Dice, name: ici}", 14, ["losses[1].label", "used twice"]),
        (16, 'report: {baseline: "Dcie"}', 16, ["report.baseline", "Did you mean 'Dice'?"]),
        (1, "schema_version: 2", 1, ["schema_version", "must be 1"]),
        (3, "seeds: [0, 0]", 3, ["seeds[1]", "twice"]),
        (3, "sedes: [0]", 3, ["sedes", "unknown key", "Did you mean 'seeds'?"]),
        (
            4,
            "dataset: {name: synthetic_lesions, spatial_dims: 2, sise: 32}",
            4,
            ["dataset.sise", "Did you mean 'size'?"],
        ),
        (4, "dataset: {name: synthetic_lesion}", 4, ["dataset.name", "Did you mean 'synthetic_lesions'?"]),
        (5, "model: {name: unet, channels: [4, 8, 16], strides: [2, 2, 2]}", 5, ["model.strides"]),
        (5, "model: {name: unet, chanels: [4, 8]}", 5, ["model.chanels", "Did you mean 'channels'?"]),
        (5, "model: {name: unett}", 5, ["model.name", "Did you mean 'unet'?"]),
        (15, "evaluation: {connectivity: 4}", 15, ["evaluation.connectivity", "less than or equal to 3"]),
        (11, "  mode: patch", 6, ["patch_size", "required"]),
        (13, "  - {label: Dice, name: dice, sigmoid: false}", 13, ["losses[0].sigmoid", "logits"]),
    ],
)
def test_located_errors(tmp_path, line, new, expect_line, needles):
    path = _write(tmp_path, _replace_line(line, new))
    msg = _error(path)
    assert msg.startswith(f"{path}:{expect_line}: "), msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_model_strides_must_divide_image(tmp_path):
    # 36 is not divisible by 2*2*2 = 8: caught before training, located at the model.
    text = BASE.replace("size: 32", "size: 36").replace(
        "channels: [4, 8, 16], strides: [2, 2]", "channels: [4, 8, 16, 32], strides: [2, 2, 2]"
    )
    msg = _error(_write(tmp_path, text))
    assert ":5: model.strides:" in msg and "(36, 36)" in msg and "factor 8" in msg


def test_yaml_syntax_error_is_located(tmp_path):
    text = BASE.replace('  - {label: "Dice", name: dice}', '  - {label: "Dice", name: dice')
    path = _write(tmp_path, text)
    msg = _error(path)
    assert msg.startswith(f"{path}:14: yaml:"), msg


def test_duplicate_key_is_located(tmp_path):
    path = _write(tmp_path, BASE.replace("  lr: 1.0e-3", "  lr: 1.0e-3\n  epochs: 5"))
    msg = _error(path)
    assert msg.startswith(f"{path}:10: training.epochs: duplicate key (first given on line 7)"), msg


def test_missing_key_and_empty_file(tmp_path):
    path = _write(tmp_path, BASE.replace("  epochs: 2\n", ""))
    msg = _error(path)
    assert msg.startswith(f"{path}:6: training.epochs: required key is missing"), msg
    empty = _write(tmp_path, "", "empty.yaml")
    assert "empty" in _error(empty)
    with pytest.raises(ConfigError, match="no such file"):
        load_study(tmp_path / "nope.yaml")


def test_safe_loader_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    text = BASE + f'evil: !!python/object/apply:os.system ["touch {marker}"]\n'
    path = _write(tmp_path, text)
    msg = _error(path)
    assert msg.startswith(f"{path}:17: yaml:"), msg
    assert not marker.exists()


def test_validate_cli_exit_status_and_one_line(tmp_path, capsys):
    good = _write(tmp_path, BASE, "good.yaml")
    assert main(["validate", str(good)]) == 0
    assert "valid study 'tiny'" in capsys.readouterr().out
    bad = _write(tmp_path, _replace_line(7, "  epochs: -1"), "bad.yaml")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad}:7: training.epochs:" in err[0]


BAD_EDITS = [
    ('  - {label: "Dice", name: dice}', '  - {label: "Dice", name: dice'),  # malformed YAML
    ("name: dice}", "name: blop}"),  # misspelled loss name
    ("  epochs: 2", "  epochs: -3"),  # negative epochs
    ("  lr: 1.0e-3", "  lr: fast"),  # wrong type
    ("  val_every: 1", "  val_every: 1\n  unknown_option: 1"),  # unknown key
]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("edit", BAD_EDITS[:2])
def test_run_subprocess_with_bad_study_exits_2(tmp_path, edit):
    """`python -m lossbench run` on a broken study: exit 2, one line naming file:line, no file created."""
    work = tmp_path / "work"
    work.mkdir()
    study = _write(work, BASE.replace(*edit))
    before = _tree(work)
    proc = subprocess.run(
        [sys.executable, "-m", "lossbench", "run", str(study), "--out", str(work / "run")],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossbench run: error: ") and f"{study}:" in lines[0], lines
    assert _tree(work) == before


@pytest.mark.parametrize("edit", BAD_EDITS)
@pytest.mark.parametrize("command", ["run", "validate"])
def test_cli_with_bad_study_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys, edit, command):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the default run folder would be ./runs/tiny
    study = _write(work, BASE.replace(*edit))
    before = _tree(work)
    assert main([command, str(study)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lossbench {command}: error: {study}:"), err
    assert _tree(work) == before


# ------------------------------------------------------------------------------------------- grid


def test_grid_ids_are_stable_readable_and_config_sensitive(tmp_path):
    cfg = load_study(_write(tmp_path, BASE))
    cells = expand_grid(cfg)
    assert [(c.label, c.seed) for c in cells] == [
        ("Dice", 0),
        ("ICI 1/4,1/2,1/4", 0),
        ("Dice", 1),
        ("ICI 1/4,1/2,1/4", 1),
    ]
    assert cells[0].id.startswith("dice-s0-") and cells[1].id.startswith("ici-1-4-1-2-1-4-s0-")
    assert all(len(c.id.rsplit("-", 1)[1]) == 8 for c in cells)
    assert len({c.id for c in cells}) == 4
    # Same file -> same ids; the label does not enter the hash, a loss parameter and the epochs do.
    assert [c.id for c in expand_grid(load_study(_write(tmp_path, BASE, "b.yaml")))] == [c.id for c in cells]
    relabelled = expand_grid(load_study(_write(tmp_path, BASE.replace('"Dice"', '"Dice loss"'), "c.yaml")))
    assert relabelled[0].id.split("-")[-1] == cells[0].id.split("-")[-1]
    changed = expand_grid(load_study(_write(tmp_path, BASE.replace("b: 0.5", "b: 0.4"), "d.yaml")))
    assert changed[0].id == cells[0].id and changed[1].id != cells[1].id
    longer = expand_grid(load_study(_write(tmp_path, BASE.replace("epochs: 2", "epochs: 3"), "e.yaml")))
    assert all(a.id != b.id for a, b in zip(longer, cells))
    # The hash is the SHA-256 of the canonical JSON (independent oracle).
    import hashlib
    import json

    payload = {
        "schema_version": 1,
        "seed": 0,
        "loss": {"name": "ici", "a": 0.25, "b": 0.5, "c": 0.25},
        "dataset": {"name": "synthetic_lesions", "spatial_dims": 2, "size": 32, "n_train": 4, "n_val": 2, "n_test": 2},
        "model": {"name": "unet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
        "training": {"epochs": 2, "batch_size": 2, "lr": 1.0e-3, "augment": False},  # only non-default values
        "evaluation": {"size_bins": [10, 100]},
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]
    assert cell_hash(cells[1].config) == digest == cells[1].id[-8:]
    # Writing a default explicitly does not change the id.
    explicit = BASE.replace("  val_every: 1", "  val_every: 1\n  mode: whole\n  num_workers: 0")
    assert [c.id for c in expand_grid(load_study(_write(tmp_path, explicit, "f.yaml")))] == [c.id for c in cells]


def test_multi_dataset_grid_and_steps(tmp_path):
    text = BASE.replace(
        "dataset: {name: synthetic_lesions, spatial_dims: 2, size: 32, n_train: 4, n_val: 2, n_test: 2}",
        "datasets:\n  - {label: small, name: synthetic_lesions, spatial_dims: 2, size: 32, n_train: 4}\n"
        "  - {label: big, name: synthetic_lesions, spatial_dims: 2, size: 48, n_train: 4}",
    )
    cells = expand_grid(load_study(_write(tmp_path, text)))
    assert len(cells) == 8 and cells[0].id.startswith("dice-small-s0-") and cells[4].id.startswith("dice-big-s0-")
    tr = {"mode": "whole", "batch_size": 3, "patches_per_subject": 4, "max_steps_per_epoch": None}
    assert steps_per_epoch(tr, 10) == 4  # ceil(10 / 3)
    assert steps_per_epoch({**tr, "mode": "patch"}, 10) == 14  # ceil(40 / 3)
    assert steps_per_epoch({**tr, "max_steps_per_epoch": 2}, 10) == 2
    assert slug("ICI 1/4,1/2,1/4") == "ici-1-4-1-2-1-4" and slug("  ") == "cell"


def test_yaml_12_floats(tmp_path):
    # PyYAML (YAML 1.1) reads "1e-3" as a string; study files read it as the number users mean.
    cfg = load_study(_write(tmp_path, BASE.replace("lr: 1.0e-3", "lr: 1e-3")))
    assert cfg.training.lr == 0.001


# ----------------------------------------------------------------------------------------- scales

SCALED = """\
schema_version: 1
name: scaled
seeds: [0]
dataset: {name: synthetic_lesions, spatial_dims: 2, size: 32, n_train: 4, n_val: 2, n_test: 2}
model: {name: unet, channels: [4, 8], strides: [2]}
training: {epochs: 2, batch_size: 2, lr: 1.0e-3}
losses:
  - {label: Dice, name: dice}
scales:
  gpu:
    dataset: {size: 64, n_train: 8}
    training: {epochs: 5}
  broken:
    training:
      epochs: -3
"""


def test_scale_merges_overrides_and_renames(tmp_path):
    from lossbench.study.config import load_study, study_scales

    path = tmp_path / "s.yaml"
    path.write_text(SCALED)
    base = load_study(path)
    assert base.name == "scaled" and base.training.epochs == 2
    gpu = load_study(path, scale="gpu")
    assert gpu.name == "scaled-gpu"
    assert gpu.training.epochs == 5 and gpu.training.batch_size == 2  # merged, not replaced
    assert gpu.dataset.flat()["size"] == 64 and gpu.dataset.flat()["n_val"] == 2
    assert study_scales(path) == ["broken", "gpu"]


def test_scale_errors_point_into_the_scales_section(tmp_path):
    from lossbench.study.config import load_study, validate_study_file

    path = tmp_path / "s.yaml"
    path.write_text(SCALED)
    with pytest.raises(ConfigError, match=r"s\.yaml:15: training\.epochs"):
        load_study(path, scale="broken")
    with pytest.raises(ConfigError, match=r"s\.yaml:15"):  # validate checks every scale's schema
        validate_study_file(path)
    with pytest.raises(ConfigError, match="Did you mean 'gpu'"):
        load_study(path, scale="gpus")


# ------------------------------------------------------------------------------ every problem at once


def test_every_entry_is_checked_and_every_problem_listed(tmp_path):
    """A bad dataset parameter, a bad model name and two bad losses: four located problems in one error."""
    from lossbench.study.config import StudyProblems

    text = (
        BASE.replace("n_test: 2}", "n_test: 2, sise: 3}")
        .replace("model: {name: unet,", "model: {name: unett,")
        .replace('  - {label: "Dice", name: dice}', '  - {label: "Dice", name: blop}')
        .replace("a: 0.25, b: 0.5", "a: -1, b: 0.5")
    )
    path = _write(tmp_path, text)
    with pytest.raises(StudyProblems) as info:
        validate_study_file(path)
    problems = info.value.problems
    assert [p.split(": ")[0] for p in problems] == [f"{path}:4", f"{path}:5", f"{path}:13", f"{path}:14"]
    assert "dataset.sise" in problems[0] and "Did you mean 'size'?" in problems[0]
    assert "model.name" in problems[1] and "Did you mean 'unet'?" in problems[1]
    assert "losses[0].name" in problems[2] and "Did you mean 'blob'?" in problems[2]
    assert "losses[1].a" in problems[3] and "-1" in problems[3]
    assert str(info.value) == "; ".join(problems) and "\n" not in str(info.value)


def test_every_schema_problem_is_listed(tmp_path):
    from lossbench.study.config import StudyProblems

    path = _write(tmp_path, BASE.replace("  epochs: 2", "  epochs: -3").replace("  lr: 1.0e-3", "  lr: fast"))
    with pytest.raises(StudyProblems) as info:
        load_study(path)
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(f"{path}:7: training.epochs:") and "-3" in problems[0]
    assert problems[1].startswith(f"{path}:9: training.lr:") and "'fast'" in problems[1]


def test_cross_key_problems_are_listed_together(tmp_path):
    from lossbench.study.config import StudyProblems

    text = BASE.replace("seeds: [0, 1]", "seeds: [0, 0]").replace('baseline: "Dice"', 'baseline: "Dcie"')
    path = _write(tmp_path, text)
    with pytest.raises(StudyProblems) as info:
        load_study(path)
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(f"{path}:3: seeds[1]:") and "twice" in problems[0]
    assert problems[1].startswith(f"{path}:16: report.baseline:") and "Did you mean 'Dice'?" in problems[1]


def test_validate_cli_several_files(tmp_path, capsys):
    good = _write(tmp_path, BASE, "good.yaml")
    text = BASE.replace("  epochs: 2", "  epochs: -3").replace("  lr: 1.0e-3", "  lr: fast")
    bad = _write(tmp_path, text, "bad.yaml")
    also_good = _write(tmp_path, BASE.replace("name: tiny", "name: other"), "also.yaml")
    assert main(["validate", str(good), str(bad), str(also_good)]) == 2
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"{good}: valid study 'tiny'", f"{also_good}: valid study 'other'"]
    err = out.err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"lossbench validate: error: {bad}:7: training.epochs:")
    assert err[1].startswith(f"lossbench validate: error: {bad}:9: training.lr:")
    assert main(["validate", str(good), str(also_good)]) == 0
