"""Gradient audit: regions, gradients against a hand-written Dice gradient, the key facts, outputs, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lossbench.audit as audit_module
from lossbench.audit import (
    AUDIT_SCENES,
    GRADIENT_NOTE,
    REGIONS,
    AuditVariant,
    audit_table,
    audit_variants,
    run_audit,
    scene_regions,
    term_gradient_map,
    term_gradients,
)
from lossbench.data.scenes import Scene
from lossbench.errors import ConfigError, LossbenchError, RegistryError


def _tiny_scene() -> Scene:
    """8x8 scene worked by hand.

    label: instance A = rows 1-2, cols 1-2 (4 voxels); instance B = rows 5-6, cols 5-6 (4 voxels, missed: p 0.3).
    pred: component P = rows 1-2, cols 1-3 at 0.8 (touches A; cols 3 = 2 voxels outside the label);
          spurious S = row 7, cols 0-1 at 0.7 (2 voxels, touches nothing); background 0.05.
    Regions: label 8, touching 2, spurious 2, background 64 - 12 = 52.
    """
    label = np.zeros((8, 8), np.float32)
    label[1:3, 1:3] = 1
    label[5:7, 5:7] = 1
    pred = np.full((8, 8), 0.05, np.float32)
    pred[1:3, 1:4] = 0.8
    pred[5:7, 5:7] = 0.3
    pred[7, 0:2] = 0.7
    return Scene("tiny", label, pred, "hand-worked")


def test_scene_regions_hand_worked():
    reg = scene_regions(_tiny_scene())
    assert {k: int(v.sum()) for k, v in reg.items()} == {"label": 8, "touching": 2, "spurious": 2, "background": 52}
    assert reg["touching"][1:3, 3].all() and reg["spurious"][7, 0:2].all()
    total = sum(v.astype(int) for v in reg.values())
    assert (total == 1).all()  # a partition of the image


def test_regions_partition_on_audit_scenes():
    from lossbench.data.scenes import get_scene

    for name in AUDIT_SCENES:
        sc = get_scene(name)
        total = sum(v.astype(int) for v in scene_regions(sc).values())
        assert (total == 1).all(), name


def test_dice_gradient_matches_closed_form():
    # MONAI Dice on one image: L = 1 - (2 I + e) / (P + G + e), I = sum p y, P = sum p, G = sum y, e = 1e-5
    # dL/dp_i = -(2 y_i (P + G + e) - (2 I + e)) / (P + G + e)^2
    sc = _tiny_scene()
    p, y, e = sc.pred.astype(np.float64), sc.label.astype(np.float64), 1e-5
    inter, den = (p * y).sum(), p.sum() + y.sum() + e
    expected_value = 1 - (2 * inter + e) / den
    expected_grad = -(2 * y * den - (2 * inter + e)) / den**2
    value, grad = term_gradient_map(sc, "dice", "dice")
    assert value == pytest.approx(expected_value, rel=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-14)


def test_published_instance_gradient_only_on_touching_components():
    # The published instance term (ici without options) masks p to the prediction components that touch a label
    # instance, so its gradient reaches only their voxels; the missed instance B and the spurious S get exactly zero.
    sc = _tiny_scene()
    _, g = term_gradient_map(sc, "ici", "instance")
    nz = g != 0
    expected = np.zeros((8, 8), bool)
    expected[1:3, 1:4] = True  # component P (4 voxels in A + 2 outside)
    assert (nz == expected).all()


def test_term_gradients_keys_and_shapes():
    res = term_gradients(_tiny_scene(), "blob")
    assert list(res) == ["main", "blob", "total"]
    for value, grad in res.values():
        assert isinstance(value, float) and grad.shape == (8, 8) and grad.dtype == np.float64


def test_variants():
    labels = [v.label for v in audit_variants(["ici", "dice", "ici"])]
    assert labels == [
        "ici[published]",
        "ici[lossbench]",
        "ici[lossbench,tp=keep]",
        "ici[lossbench,tp=remove_detached]",
        "dice",
    ]
    params = {v.label: v.params for v in audit_variants(["dici"])}
    assert params["dici[published]"] == {}  # no options: the published loss
    assert params["dici[lossbench]"] == {"reference": False}
    assert params["dici[lossbench,tp=keep]"] == {"reference": False, "tp_mode": "keep"}
    names = [v.label for v in audit_variants()]
    assert len(names) == 10 + 4 + 4  # 10 plain losses, ici and dici with 4 variants each
    assert {"cc_dice", "cc_dicece"} <= set(names)


def test_variant_labels_say_what_they_compute():
    # ici[published] is the published loss (the same terms as reference=True and as its options spelled out);
    # ici[lossbench] is lossbench's design: the Eq. 5 set difference, the trainable center and no caps.
    from lossbench.data.scenes import get_scene

    var = {v.label: v for v in audit_variants(["ici"])}
    sc = get_scene("figure4_bridge")
    published = {k: v for k, (v, _) in term_gradients(sc, var["ici[published]"]).items()}
    spelled = {"tp_mode": "remove_detached", "center_mode": "reference", "max_pred_instances": 50,
               "too_many_factor": 50.0}  # fmt: skip
    for params in ({"reference": True}, spelled):
        other = {k: v for k, (v, _) in term_gradients(sc, AuditVariant("x", "ici", params)).items()}
        assert other == published
    config = var["ici[lossbench]"].build().config
    assert (config.tp_mode, config.center_mode, config.max_pred_instances, config.too_many_factor) == (
        "remove", "trainable", 0, 0.0)  # fmt: skip
    assert "ici[published] = ici with no options" in GRADIENT_NOTE and "lossbench's own design" in GRADIENT_NOTE
    assert "REFERENCE" not in GRADIENT_NOTE and "REFERENCE" not in (audit_module.__doc__ or "")


def test_variants_from_study_dicts():
    study = [{"label": "ICI 1/4,1/2,1/4", "name": "ici", "a": 0.25, "b": 0.5, "c": 0.25, "sigmoid": True}, "dice"]
    variants = audit_variants(study)
    assert [v.label for v in variants] == ["ICI 1/4,1/2,1/4", "dice"]
    assert variants[0].params == {"a": 0.25, "b": 0.5, "c": 0.25}  # sigmoid dropped: probabilities in
    df = audit_table(study, scenes=["figure1"])
    total = df[(df.loss == "ICI 1/4,1/2,1/4") & (df.term == "total")].iloc[0]
    parts = df[df.loss == "ICI 1/4,1/2,1/4"].set_index("term")["value"]
    assert total["value"] == pytest.approx(0.25 * parts["global"] + 0.5 * parts["instance"] + 0.25 * parts["center"])
    with pytest.raises(ConfigError, match="Did you mean 'tp_mode'"):
        audit_variants([{"name": "ici", "tp_mdoe": "keep"}])
    with pytest.raises(ConfigError, match="'name'"):
        audit_variants([{"a": 1}])
    with pytest.raises(ConfigError, match="cube_size"):  # invalid value: raised before any scene is computed
        audit_table([{"name": "ici", "cube_size": 4}], scenes=["figure1"])


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return audit_table(["dice", "blob", "ici"])


def test_table_columns_and_size(table):
    for r in REGIONS:
        assert {f"n_{r}", f"nz_{r}", f"norm_{r}"} <= set(table.columns)
    # 4 scenes x (dice: 2 terms + blob: 3 + ici: 4 variants x 4 terms)
    assert len(table) == 4 * (2 + 3 + 16)
    # region norms add up to the total norm
    sq = sum(table[f"norm_{r}"] ** 2 for r in REGIONS)
    np.testing.assert_allclose(np.sqrt(sq), table["grad_norm"], rtol=1e-9, atol=1e-15)


def test_published_center_moves_nothing_trainable_does(table):
    center = table[(table.term == "center") & (table.scene == "figure1")].set_index("loss")
    ref = center.loc["ici[published]"]
    assert ref["grad_norm"] == 0 and not ref["moves"]
    assert all(ref[f"nz_{r}"] == 0 for r in REGIONS)
    tr = center.loc["ici[lossbench]"]
    assert tr["grad_norm"] > 0 and tr["moves"]
    assert tr["nz_spurious"] == 1.0  # the trainable center pushes every spurious-component voxel


def test_blob_sees_spurious_ici_instance_does_not(table):
    f1 = table[table.scene == "figure1"].set_index(["loss", "term"])
    assert f1.loc[("blob", "blob"), "nz_spurious"] == 1.0
    assert f1.loc[("blob", "blob"), "nz_background"] == 1.0
    for tp in ("published", "lossbench", "lossbench,tp=keep", "lossbench,tp=remove_detached"):
        row = f1.loc[(f"ici[{tp}]", "instance")]
        assert row["nz_spurious"] == 0.0 and row["nz_background"] == 0.0
        assert row["nz_touching"] == 1.0


def test_bridge_has_no_spurious_region(table):
    bridge = table[table.scene == "figure4_bridge"]
    assert (bridge["n_spurious"] == 0).all() and bridge["nz_spurious"].isna().all()


def test_run_audit_writes_files_and_prints(tmp_path, capsys):
    df = run_audit(["dice", "ici"], out=tmp_path / "a", show=True, scenes=["figure1"])
    printed = capsys.readouterr().out
    assert "gradient audit" in printed and "ici[published]" in printed and "sigmoid=False" in printed
    md = (tmp_path / "a" / "audit.md").read_text()
    assert "sigmoid=False" in md and "## Scene `figure1`" in md and "`ici[published]` | center" in md
    assert "`ici[lossbench]` | center" in md
    csv = pd.read_csv(tmp_path / "a" / "audit.csv")
    assert len(csv) == len(df) == 2 + 16
    np.testing.assert_allclose(csv["grad_norm"], df["grad_norm"])


def test_run_audit_3d_small():
    df = run_audit(["ici"], show=False, scenes=["figure1"], spatial_dims=3, size=24)
    ref = df[(df.loss == "ici[published]") & (df.term == "center")].iloc[0]
    assert ref["grad_norm"] == 0
    assert int(ref[[f"n_{r}" for r in REGIONS]].sum()) == 24**3


def test_bad_input(tmp_path):
    with pytest.raises(RegistryError, match="Did you mean 'blob'"):
        run_audit(["blobb"], show=False)
    with pytest.raises(ConfigError, match="`losses`"):
        audit_variants("dice")
    with pytest.raises(ConfigError, match="`losses`"):
        audit_variants([])
    with pytest.raises(ConfigError, match="`scenes`"):
        audit_table(["dice"], scenes=[])
    with pytest.raises(ConfigError, match="`name`"):
        audit_table(["dice"], scenes=["figur1"])
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ConfigError, match="`out` must be a folder"):
        run_audit(["dice"], out=f, show=False)
    with pytest.raises(ConfigError, match="Did you mean 'center'"):
        term_gradient_map("figure1", "ici", "centre")
    from lossbench.losses import build_loss

    with pytest.raises(ConfigError, match="`params`"):
        term_gradient_map("figure1", build_loss("dice"), "dice", sigmoid=False)
    assert issubclass(RegistryError, LossbenchError)


def test_cc_dice_terms_move_spurious_and_label_voxels():
    t = audit_table(["cc_dice", "cc_dicece"])
    f1 = t[t.scene == "figure1"].set_index(["loss", "term"])
    assert set(f1.index) == {("cc_dice", "dice"), ("cc_dice", "total"), ("cc_dicece", "dice"), ("cc_dicece", "ce"),
                             ("cc_dicece", "total")}  # fmt: skip
    for loss in ("cc_dice", "cc_dicece"):
        row = f1.loc[(loss, "dice")]
        # every voxel lies in some label component's region: spurious blobs and background are pushed down too
        assert row["nz_spurious"] == 1.0 and row["nz_label"] == 1.0 and row["nz_background"] == 1.0
