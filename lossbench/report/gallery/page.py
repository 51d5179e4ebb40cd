"""The gallery page: its sections (text, figures, tables) and :func:`write_gallery`, which writes them atomically."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lossbench.errors import expect
from lossbench.io import atomic_write_text, json_text
from lossbench.report.gallery import figures
from lossbench.report.gallery.checks import Check, run_checks
from lossbench.report.gallery.compute import CUBE, MAXPOOL_ITERS, figure1_instance_rows, loss_terms, stress_rows
from lossbench.report.model import Figure, Table
from lossbench.report.templating import render

__all__ = ["GALLERY_COMMAND", "write_gallery"]

GALLERY_COMMAND = ".venv/bin/python -m lossbench gallery --out reports/gallery"
"""The command that regenerates the committed gallery (run from the repository root)."""


@dataclass
class GallerySection:
    """One numbered section of the page: paragraphs, then figures, then tables."""

    anchor: str
    title: str
    text: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def write_gallery(out: str | Path = "reports/gallery") -> Path:
    """Generate the synthetic sanity-check gallery into ``out`` (``lossbench gallery``).

    Writes ``gallery.md``, ``gallery.html`` (images referenced relatively as ``img/*.png``), ``checks.json`` (every
    expectation check with its status and numbers) and the PNG figures under ``out/img/``, each file atomically.
    Existing files of the same names are overwritten; nothing else in ``out`` is touched.

    Args:
        out: output folder (created if needed).

    Returns:
        Path of ``gallery.md`` (``gallery.html`` lies next to it).

    Raises:
        ConfigError: if ``out`` exists and is not a folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise expect("out", "a folder (or a path that does not exist yet)", f"the file {str(out)!r}")
    (out / "img").mkdir(parents=True, exist_ok=True)
    cache: dict[str, Any] = {}
    checks = run_checks(cache)
    sections = _sections(out, cache)
    return _write_pages(out, sections, checks)


def _sections(out: Path, cache: dict[str, Any]) -> list[GallerySection]:
    """Every section in page order; figures are written under ``out/img`` as they are built."""
    from lossbench.data.scenes import all_scenes

    scenes = all_scenes(2)
    return [
        _scenes_section(out, scenes),
        _figure1_section(out, cache),
        _figure4_section(out),
        _center_section(out),
        _labelling_section(out, cache),
        GallerySection("terms", "6. Every loss term on every scene", tables=[_terms_table(scenes)]),
        GallerySection(
            "audit",
            "7. Gradient audit (figure1)",
            text=["Full audit on more scenes: `lossbench audit --out DIR`."],
            tables=[_audit_table()],
        ),
    ]


def _write_pages(out: Path, sections: list[GallerySection], checks: list[Check]) -> Path:
    """Write ``gallery.html``, ``gallery.md`` and ``checks.json``; return the markdown page's path."""
    n_pass = sum(c.passed for c in checks)
    data = {
        "title": "lossbench synthetic sanity-check gallery",
        "command": GALLERY_COMMAND,
        "versions": _versions(),
        "sections": sections,
        "checks": checks,
        "n_pass": n_pass,
        "n_checks": len(checks),
    }
    atomic_write_text(out / "gallery.html", render("gallery.html.j2", **data))
    md = atomic_write_text(out / "gallery.md", render("gallery.md.j2", **data))
    summary = {"schema_version": 1, "passed": n_pass, "total": len(checks), "checks": [asdict(c) for c in checks]}
    atomic_write_text(out / "checks.json", json_text(summary))
    return md


def _versions() -> dict[str, str]:
    import matplotlib
    import torch

    import lossbench

    return {"lossbench": lossbench.__version__, "torch": torch.__version__, "matplotlib": matplotlib.__version__}


# ------------------------------------------------------------------------------------------------ sections


def _scenes_section(out: Path, scenes: list[Any]) -> GallerySection:
    s = GallerySection("scenes", "1. Scenes")
    s.text.append(
        "Each scene is a label and a probability map (2D, 64x64; 3D versions are the thick counterparts). "
        "Prediction instances are the connected components of p >= 0.5 (full connectivity)."
    )
    s.figures.append(Figure(figures.scenes_figure(out, scenes), "scenes", "The 2D scenes."))
    rows = [[sc.name, sc.description] for sc in scenes]
    s.tables.append(Table.plain("scenes", "Scenes", ["scene", "description"], rows, numeric_from=99))
    return s


def _figure1_section(out: Path, cache: dict[str, Any]) -> GallerySection:
    from lossbench.data.scenes import get_scene

    fig1 = get_scene("figure1")
    s = GallerySection("figure1", "2. Figure 1: which voxels the ICI instance term and the blob loss use")
    s.text.append(
        "Derived from the definitions of the two losses, not from gradients: for label instance n, "
        "ICI's instance term uses p on the prediction components (p >= 0.5) that share at least one voxel with n; "
        "the blob loss uses p on n and on every background voxel (other label instances masked out). The panels "
        "colour the voxels at p >= 0.5; the losses use the probabilities, so the blob loss additionally counts "
        "the sub-threshold probability mass of the whole background. The per-instance Dice values in the table "
        "are computed from these voxel sets and checked against the losses (check figure1_panel)."
    )
    scene_png, inst_png = figures.figure1_figures(out, fig1)
    s.figures.append(Figure(scene_png, "figure1 label and output", "A: label; B: output."))
    s.figures.append(
        Figure(
            inst_png,
            "figure1 per-instance voxels",
            "C: ICI instance term (only components touching the instance); D: blob loss (every "
            "predicted voxel outside the other instances). White correct, magenta/yellow the false voxels counted.",
        )
    )
    s.tables.append(_figure1_table(cache.get("fig1_rows") or figure1_instance_rows(fig1)))
    grad_png, grad_rows = figures.gradients_figure(out, fig1)
    s.figures.append(
        Figure(
            grad_png,
            "figure1 gradients",
            "Where each term actually pushes (from autograd, lossbench.audit.term_gradient_map).",
        )
    )
    s.tables.append(
        Table.plain(
            "figure1-gradients",
            "Gradients of the terms shown above (w.r.t. probabilities)",
            ["term", "value", "grad L2", "voxels with non-zero gradient"],
            grad_rows,
            numeric_from=1,
        )
    )
    return s


def _figure1_table(rows: list[dict[str, Any]]) -> Table:
    header = [
        "instance",
        "voxels",
        "touching comps",
        "TP (p>=0.5)",
        "false voxels ICI",
        "false voxels blob",
        "of which blob only",
        "ICI Dice loss",
        "blob Dice loss",
    ]
    keys = ("size", "touching", "tp", "fp_ici", "fp_blob", "fp_blob_only")
    values = [[f"L{r['n']}", *[r[k] for k in keys], f"{r['ici']:.4f}", f"{r['blob']:.4f}"] for r in rows]
    return Table.plain(
        "figure1-instances",
        "Per label instance: voxels and Dice loss of ICI (tp_mode=keep) and blob, from the panel's sets",
        header,
        values,
        numeric_from=1,
    )


def _figure4_section(out: Path) -> GallerySection:
    from lossbench.data.scenes import get_scene

    s = GallerySection("figure4", "3. Figure 4: TP vs -TP on a bridge")
    s.text.append(
        "One prediction component bridges two label instances. For instance n the masked output is p * w: "
        "keep (Eq. 3) w = 1 on the whole touching component, so the part inside the other instance is a false "
        "positive; remove (Eq. 5) w = 0 on the other instance; remove_detached (public code) w = 0 on the other "
        "instance and w = stopgrad(p) on background voxels (value p^2, gradient p dp)."
    )
    png, rows = figures.bridge_figure(out, get_scene("figure4_bridge"))
    s.figures.append(Figure(png, "figure4 tp modes", "Masked output per tp_mode and instance."))
    s.tables.append(
        Table.plain(
            "figure4",
            "Instance Dice loss per label instance and the instance term (panel formula vs the loss)",
            ["tp_mode", "L1", "L2", "mean (panel)", "instance term (loss)"],
            rows,
            numeric_from=1,
        )
    )
    return s


def _center_section(out: Path) -> GallerySection:
    s = GallerySection("center", "4. Centre-of-instance transform")
    s.text.append(
        f"Every label instance and every prediction component becomes a {CUBE}-voxel cube at its centre "
        "(as in the public code: ceil(mean index) - 1 per axis, half width ceil(size_axis / max(size) * 3), "
        "truncated at the border). The reference term is the Dice between the two constant cube maps, so its "
        "gradient is identically zero; lossbench's trainable mode fills misplaced prediction cubes with the "
        "component's mean probability instead (see the gradients in section 2)."
    )
    png, rows = figures.center_figure(out)
    s.figures.append(Figure(png, "centre transform", "Cubes in 2D and a 3D max-projection."))
    header = [
        "scene",
        "label cubes",
        "prediction cubes",
        "Dice of drawn cubes",
        "centre term (reference)",
        "centre term (trainable)",
    ]
    s.tables.append(Table.plain("center", "Centre term on figure1", header, rows, numeric_from=1))
    return s


def _labelling_section(out: Path, cache: dict[str, Any]) -> GallerySection:
    s = GallerySection("labelling", "5. Exact labelling vs the reference max-pool labelling")
    s.text.append(
        "The reference code labels components by max-pool propagation for a fixed number of iterations (paper: "
        "250 for 96^3 patches, class default 350) without a convergence test. A component whose in-component "
        "geodesic distance exceeds the iteration count is split; a component made only of the flat-index-0 voxel "
        "keeps id 0 and is dropped. lossbench labels exactly (cc3d / scipy / torch)."
    )
    stress = cache.get("stress") or stress_rows()
    grid_png, it_png = figures.stress_figures(out, stress)
    s.figures.append(Figure(grid_png, "labelling stress shapes", "Where the reference splits."))
    s.figures.append(Figure(it_png, "components vs iterations", "When the reference is right."))
    header = [
        "shape",
        "voxels",
        "exact (full)",
        "exact (face)",
        *[f"max-pool {it} it" for it in MAXPOOL_ITERS],
        "iterations to converge",
        "voxels dropped",
    ]
    rows = [
        [
            r["shape"],
            r["voxels"],
            r["exact"],
            r["exact_face"],
            *[r["maxpool"][it]["count"] for it in MAXPOOL_ITERS],
            r["need"],
            r["dropped"],
        ]
        for r in stress
    ]
    s.tables.append(Table.plain("labelling", "Components found (2D, 64x64)", header, rows, numeric_from=1))
    return s


def _terms_table(scenes: list[Any]) -> Table:
    from lossbench.audit import audit_variants

    rows = []
    for var in audit_variants():
        per_scene = [loss_terms(sc, var.name, **var.params) for sc in scenes]
        for term in per_scene[0]:
            vals = [d[term] for d in per_scene]
            rows.append([var.label, term, *[f"{(v if abs(v) >= 5e-5 else 0.0):.4f}" for v in vals]])
    return Table.plain(
        "terms",
        "Every term of every loss variant on every 2D scene (probabilities in, sigmoid=False, defaults; "
        "ici[reference] = reference=True, ici[MODE,trainable] = that tp_mode with center_mode='trainable').",
        ["loss", "term", *[sc.name for sc in scenes]],
        rows,
        numeric_from=2,
    )


def _audit_table() -> Table:
    from lossbench.audit import GRADIENT_NOTE, REGIONS, audit_table, format_rows

    return Table.plain(
        "audit",
        "Gradient audit on figure1. " + GRADIENT_NOTE,
        ["loss", "term", "value", "grad L2", *[f"nz {g}" for g in REGIONS]],
        format_rows(audit_table(scenes=["figure1"])),
        numeric_from=2,
    )
