"""Registry, build_loss, list_losses/print_losses, validation of inputs and parameters."""

from __future__ import annotations

import pytest
import torch

from lossbench.errors import ConfigError, DataError, LossbenchError, RegistryError, ShapeError
from lossbench.losses import LOSSES, build_loss, dici_loss, ici_loss, ici_terms, list_losses, print_losses
from lossbench.registry import Registry

NAMES = [
    "dice", "bce", "focal", "dicece", "dicefocal", "gdicefocal", "blob", "inverse_weighting", "ici", "dici", "cc_dice",
    "cc_dicece",
]  # fmt: skip


def _xy(shape=(2, 1, 8, 8)):
    torch.manual_seed(0)
    p = torch.rand(*shape, dtype=torch.float64)
    y = (torch.rand(*shape) > 0.7).to(torch.float64)
    return p, y


def test_registry_contents():
    assert isinstance(LOSSES, Registry)
    assert LOSSES.names() == NAMES


def test_build_from_dict_does_not_modify_it():
    cfg = {"name": "ici", "a": 0.25, "b": 0.5, "c": 0.25}
    loss = build_loss(cfg)
    assert cfg == {"name": "ici", "a": 0.25, "b": 0.5, "c": 0.25}
    assert loss.config.weights == {"global": 0.25, "instance": 0.5, "center": 0.25}
    with pytest.raises(ConfigError, match="given once"):
        build_loss(cfg, a=1.0)
    with pytest.raises(ConfigError, match="'name'"):
        build_loss({"a": 1})


def test_unknown_loss_and_parameter_suggest():
    with pytest.raises(RegistryError, match="Did you mean 'dicefocal'"):
        build_loss("dicefocl")
    with pytest.raises(ConfigError, match="Did you mean 'tp_mode'"):
        build_loss("ici", tp_mod="keep")
    with pytest.raises(ConfigError, match="Did you mean 'remove'"):
        build_loss("ici", tp_mode="remov")
    with pytest.raises(ConfigError, match="base"):
        build_loss("ici", base="dicee")
    with pytest.raises(ConfigError, match="activation options belong"):
        build_loss("ici", base={"name": "dice", "sigmoid": True})


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("ici", {"cube_size": 6}, "cube_size"),
        ("ici", {"cube_size": 0}, "cube_size"),
        ("ici", {"a": -1}, "`a`"),
        ("dici", {"d": -0.5}, "`d`"),
        ("ici", {"sigmoid": True, "softmax": True}, "sigmoid"),
        ("dice", {"sigmoid": True, "softmax": True}, "sigmoid"),
        ("ici", {"center_mode": "train"}, "center_mode"),
        ("ici", {"reduction": "mean"}, "reduction"),
        ("ici", {"threshold": 0.0}, "threshold"),
        ("ici", {"connectivity": 4}, "connectivity"),
        ("ici", {"max_pred_instances": -1}, "max_pred_instances"),
        ("ici", {"num_iterations": 10}, "num_iterations"),
        ("ici", {"cc_backend": "cc4d"}, "cc_backend"),
        ("ici", {"base": "bce", "smooth_nr": 0.1}, "smooth_nr"),
        ("blob", {"alpha": -2}, "alpha"),
        ("inverse_weighting", {"base": "dice"}, "base"),
        ("inverse_weighting", {"clip_min": 5, "clip_max": 2}, "clip_max"),
        ("dicece", {"lambda_ce": -1}, "lambda_ce"),
        ("focal", {"alpha": 2}, "alpha"),
        ("gdicefocal", {"w_type": "cube"}, "w_type"),
        ("dice", {"sigmoid": 1}, "sigmoid"),
    ],
)
def test_invalid_parameters_raise_at_build(name, params, match):
    with pytest.raises(ConfigError, match=match):
        build_loss(name, **params)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_before_computation(name):
    loss = build_loss(name)
    p, y = _xy()
    with pytest.raises(ShapeError, match="target"):
        loss(p, y[:, :, :4])
    with pytest.raises(DataError, match="binary"):
        loss(p, y * 0.5)
    bad = p.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="finite"):
        loss(bad, y)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(DataError, match="finite"):
        loss(bad, y)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        loss(p * 2, y)
    with pytest.raises(ShapeError, match="spatial"):
        loss(p[:, :, 0], y[:, :, 0])
    with pytest.raises(ShapeError, match="spatial"):
        loss(p[..., None, None], y[..., None, None])
    with pytest.raises(ShapeError, match="softmax"):
        build_loss(name, softmax=True)(p, y)
    with pytest.raises(LossbenchError):
        loss(p.numpy(), y)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        build_loss("ici", cube_size=4)


def test_list_losses_has_params_defaults_and_modes():
    items = {d["name"]: d for d in list_losses()}
    assert list(items) == NAMES
    ici = items["ici"]
    assert ici["params"]["cube_size"] == 7
    assert ici["params"]["a"] == 1.0
    assert ici["help"]["tp_mode"]
    assert ici["modes"]["reference"]["tp_mode"] == "remove_detached"
    assert ici["modes"]["lossbench"] == {
        "tp_mode": "remove", "center_mode": "trainable", "max_pred_instances": 0, "too_many_factor": 0,
    }  # fmt: skip
    assert items["dici"]["params"]["d"] == 0.25
    assert items["blob"]["params"]["alpha"] == 2.0
    assert items["blob"]["terms"] == ["main", "blob"]
    for item in items.values():
        assert item["summary"]


def test_print_losses(capsys):
    print_losses()
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert "remove_detached" in out and "trainable" in out


def test_cli_losses_command(capsys):
    from lossbench.cli import main

    rc = main(["losses"])
    assert rc in (0, None)
    assert "inverse_weighting" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_forward_equals_terms_total_and_terms_named(name):
    p, y = _xy()
    loss = build_loss(name)
    t = loss.terms(p, y)
    assert "total" in t
    assert torch.equal(loss(p, y), t["total"])
    expected = {"ici": {"global", "instance", "center"}, "dici": {"global", "instance", "predicted", "center"},
                "blob": {"main", "blob"}}.get(name)  # fmt: skip
    if expected:
        assert set(t) - {"total"} == expected


def test_functional_equals_module():
    p, y = _xy()
    kw = {"a": 0.25, "b": 0.5, "c": 0.25, "tp_mode": "keep"}
    assert torch.equal(ici_loss(p, y, **kw), build_loss("ici", **kw)(p, y))
    assert torch.equal(ici_terms(p, y, **kw)["instance"], build_loss("ici", **kw).terms(p, y)["instance"])
    assert torch.equal(dici_loss(p, y), build_loss("dici")(p, y))


def test_ici_with_only_global_weight_equals_base():
    p, y = _xy()
    for base in ("dice", "dicefocal", "gdicefocal"):
        assert torch.allclose(build_loss("ici", a=1, b=0, c=0, base=base)(p, y), build_loss(base)(p, y))


def test_int_and_bool_targets_accepted():
    p, y = _xy()
    a = build_loss("ici")(p, y)
    assert torch.equal(build_loss("ici")(p, y.bool()), a)
    assert torch.equal(build_loss("ici")(p, y.long()), a)


def test_multiclass_softmax_include_background():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    cls = torch.randint(0, 3, (2, 1, 10, 10))
    onehot = torch.nn.functional.one_hot(cls[:, 0], 3).movedim(-1, 1).to(torch.float64)
    kw = {"softmax": True, "include_background": False}
    a = build_loss("ici", **kw).terms(x, onehot)
    b = build_loss("ici", to_onehot_y=True, **kw).terms(x, cls.to(torch.float64))
    for k in a:
        assert torch.allclose(a[k], b[k])
    # channel mean: each foreground channel is its own binary problem
    probs = torch.softmax(x, 1)
    per_ch = [build_loss("ici").terms(probs[:, c : c + 1], onehot[:, c : c + 1]) for c in (1, 2)]
    for k in a:
        assert torch.allclose(a[k], (per_ch[0][k] + per_ch[1][k]) / 2), k
