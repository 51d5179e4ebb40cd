"""The gallery page's numbered sections: text, figures (written under ``out/img`` as they are built) and tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench.report.gallery import figures, figures_cc, figures_labelling
from lossbench.report.gallery.compute import CUBE, figure1_instance_rows, loss_terms
from lossbench.report.gallery.labelling import KORNIA_DEFAULT, MAXPOOL_ITERS
from lossbench.report.model import Figure, Table

__all__ = ["GallerySection", "build_sections"]


@dataclass
class GallerySection:
    """One numbered section of the page: paragraphs, then figures, then tables."""

    anchor: str
    title: str
    text: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def build_sections(out: Path, cache: dict[str, Any]) -> list[GallerySection]:
    """Every section in page order, numbered; ``cache`` holds what the checks computed (see ``run_checks``)."""
    from lossbench.data.scenes import all_scenes

    scenes = all_scenes(2)
    parts = [
        _scenes_section(out, scenes),
        _figure1_section(out, cache),
        _figure4_section(out),
        _center_section(out),
        _labelling_section(out, cache),
        _cc_section(out, cache),
        GallerySection("terms", "Every loss term on every scene", tables=[_terms_table(scenes)]),
        GallerySection(
            "audit",
            "Gradient audit (figure1)",
            text=["Full audit on more scenes: `lossbench audit --out DIR`."],
            tables=[_audit_table()],
        ),
    ]
    for i, s in enumerate(parts, 1):
        s.title = f"{i}. {s.title}"
    return parts


def _scenes_section(out: Path, scenes: list[Any]) -> GallerySection:
    s = GallerySection("scenes", "Scenes")
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
    s = GallerySection("figure1", "Figure 1: which voxels the ICI instance term and the blob loss use")
    s.text.append(
        "Derived from the definitions of the two losses, not from gradients: for label instance n, "
        "ICI's instance term uses p on the prediction components (p >= 0.5) that share at least one voxel with n; "
        "the blob loss uses p on n and on every background voxel (other label instances masked out). The panels "
        "colour the voxels at p >= 0.5; the losses use the probabilities, so the blob loss additionally counts "
        "the sub-threshold probability mass of the whole background. The per-instance Dice losses in the table "
        "are computed from these voxel sets, with the paper's Eq. 3 (tp_mode='keep') and with the published "
        "loss's weights (tp_mode='remove_detached', the default; section 3), and checked against the losses "
        "(check figure1_panel)."
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
            "Where each term actually pushes (from autograd, lossbench.audit.term_gradient_map): the published ICI "
            "(no options) and lossbench's trainable center term (reference=False).",
        )
    )
    s.tables.append(
        Table.plain(
            "figure1-gradients",
            "Gradients of the terms shown above (with respect to the probabilities)",
            ["term", "value", "gradient L2 norm", "voxels with non-zero gradient"],
            grad_rows,
            numeric_from=1,
        )
    )
    return s


def _figure1_table(rows: list[dict[str, Any]]) -> Table:
    header = [
        "instance",
        "voxels",
        "touching components",
        "TP voxels (p >= 0.5)",
        "false voxels ICI",
        "false voxels blob",
        "of which blob only",
        "ICI Dice loss, keep (Eq. 3)",
        "ICI Dice loss, published",
        "blob Dice loss",
    ]
    keys = ("size", "touching", "tp", "fp_ici", "fp_blob", "fp_blob_only")
    values = [
        [f"L{r['n']}", *[r[k] for k in keys], *[f"{r[k]:.4f}" for k in ("ici", "published", "blob")]] for r in rows
    ]
    return Table.plain(
        "figure1-instances",
        "Per label instance: voxels and Dice loss of ICI (tp_mode='keep', and the published 'remove_detached') and "
        "of blob, from the panel's sets",
        header,
        values,
        numeric_from=1,
    )


def _figure4_section(out: Path) -> GallerySection:
    from lossbench.data.scenes import get_scene

    s = GallerySection("figure4", "Figure 4: TP vs -TP on a bridge")
    s.text.append(
        "One prediction component bridges two label instances. For instance n the masked output is p * w: "
        "keep (Eq. 3 of the paper) w = 1 on the whole touching component, so the part inside the other instance is a "
        "false positive; remove (Eq. 5 read as a set difference, lossbench's design, chosen by reference=False) "
        "w = 0 on the other instance; remove_detached (what the public code computes, the published loss and the "
        "default of ici and dici) w = 0 on the other instance and w = stopgrad(p) on background voxels (value "
        "p^2, gradient p dp)."
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
    s = GallerySection("center", "Center-of-instance transform")
    s.text.append(
        f"Every label instance and every prediction component becomes a {CUBE}-voxel cube at its center "
        "(as in the public code: ceil(mean index) - 1 per axis, half width ceil(size_axis / max(size) * 3), "
        "truncated at the border). The published term (the default, center_mode='reference') is the Dice loss "
        "between the two constant cube maps, so its gradient is identically zero: it reports a value but trains "
        "nothing. lossbench's trainable mode (center_mode='trainable', chosen by reference=False) fills misplaced "
        "prediction cubes with the component's mean probability instead (see the gradients in section 2)."
    )
    png, rows = figures.center_figure(out)
    s.figures.append(Figure(png, "center transform", "Cubes in 2D and a 3D maximum projection."))
    header = [
        "scene",
        "label cubes",
        "prediction cubes",
        "Dice loss of drawn cubes",
        "center term (published)",
        "center term (lossbench's trainable)",
    ]
    s.tables.append(Table.plain("center", "Center term on figure1", header, rows, numeric_from=1))
    return s


def _labelling_section(out: Path, cache: dict[str, Any]) -> GallerySection:
    from lossbench.report.gallery.labelling import kornia_rows, stress_rows

    s = GallerySection("labelling", "When does iterative labelling fail? Exact vs max-pool propagation")
    s.text.append(
        "The public ICI code labels components by max-pool propagation (every foreground voxel starts with its flat "
        "index; each iteration takes the largest id in the 3x3 neighbourhood) for a fixed number of iterations "
        "(paper: 250 for 96^3 patches, class default 350) without a convergence test. A component whose longest "
        "in-component path exceeds the iteration count is split; a component made only of the flat-index-0 voxel "
        "keeps id 0 and is dropped. lossbench labels exactly (cc3d or scipy on CPU, its own torch labelling on any "
        "device), and so do ici and dici by default; cc_backend='maxpool' reproduces the public code's labelling."
    )
    s.text.append(
        f"kornia's connected_components (kornia.contrib), the labelling a torch user would reach for, runs the same "
        f"propagation with ids 1 + flat index (so no voxel is dropped) for num_iterations = {KORNIA_DEFAULT} by "
        "default, also without a convergence test, and labels 2D images only (input of shape (*, 1, H, W)). It "
        "needs exactly as many iterations as the public code to converge (check kornia_iterative)."
    )
    stress = cache.get("stress") or stress_rows()
    kornia = cache.get("kornia") or kornia_rows(stress)
    grid_png, it_png = figures_labelling.stress_figures(out, stress, kornia)
    s.figures.append(Figure(grid_png, "labelling stress shapes", "Where the iterative labellings split."))
    s.figures.append(Figure(it_png, "components vs iterations", "When iterative labelling is right."))
    s.tables.append(_labelling_table(stress, kornia))
    return s


def _labelling_table(stress: list[dict[str, Any]], kornia: dict[str, dict[str, Any]]) -> Table:
    header = [
        "shape",
        "voxels",
        "exact (full connectivity)",
        "exact (face connectivity)",
        *[f"public code, {it} iterations" for it in MAXPOOL_ITERS],
        "public code: iterations to converge",
        "public code: voxels dropped",
        f"kornia, {KORNIA_DEFAULT} iterations (its default)",
        "kornia: iterations to converge",
        "kornia: voxels dropped",
    ]
    rows = []
    for r in stress:
        k = kornia[r["shape"]]
        rows.append(
            [
                r["shape"],
                r["voxels"],
                r["exact"],
                r["exact_face"],
                *[r["maxpool"][it]["count"] for it in MAXPOOL_ITERS],
                r["need"],
                r["dropped"],
                k["counts"][KORNIA_DEFAULT],
                k["need"],
                k["dropped"],
            ]
        )
    return Table.plain("labelling", "Components found (2D, 64x64)", header, rows, numeric_from=1)


def _cc_section(out: Path, cache: dict[str, Any]) -> GallerySection:
    from lossbench.data.scenes import get_scene
    from lossbench.report.gallery.ccdice import missed_rows, spurious_rows
    from lossbench.report.gallery.compute import without_spurious

    fig1 = get_scene("figure1")
    no_spur, spur = without_spurious(fig1)
    spurious = cache.get("cc_spurious") or spurious_rows(fig1, no_spur, spur)
    missed = cache.get("cc_missed") or missed_rows()
    s = GallerySection("ccdice", "CC-Dice: every lesion counts, inside its Voronoi region")
    s.text.append(
        "cc_dice (and cc_dicece, which adds a cross-entropy term) give every voxel to its nearest label component "
        "(the component's Voronoi region, Euclidean distance, ties to the smaller component id) and average a Dice "
        "loss per region: dice_k = 1 - (2 sum p y + eps) / (sum p + sum y + eps) over region k, eps = 1e-5; "
        "cc_dicece adds ce_k, the mean binary cross-entropy of the region's voxels. Each lesion weighs 1/N whatever "
        "its size, and every predicted voxel counts against the lesion whose region holds it, however far away. "
        "The regions below come from one exact distance transform per component, the numbers from sums over them; "
        "both are checked against the losses (check cc_dice_panel)."
    )
    s.figures.append(
        Figure(
            figures_cc.regions_figure(out, fig1, spurious, spur),
            "CC-Dice regions on figure1",
            "Left: the Voronoi region of every label component with its Dice loss; the spurious blobs (yellow) fall "
            "into some lesion's region. Right: where cc_dice pushes (every spurious voxel is pushed down).",
        )
    )
    s.tables.append(_cc_regions_table(spurious))
    s.figures.append(
        Figure(
            figures_cc.missed_figure(out, missed),
            "CC-Dice missed lesions",
            "Missing the small lesion costs CC-Dice as much as missing the large one; plain Dice barely notices the "
            "small one.",
        )
    )
    s.tables.append(_cc_missed_table(missed))
    return s


def _cc_regions_table(spurious: dict[str, Any]) -> Table:
    header = [
        "region",
        "component voxels",
        "region voxels",
        "voxels with p >= 0.5",
        "sum of p",
        "sum of p on the lesion",
        "Dice loss",
        "Dice loss without the spurious blobs",
        "mean cross-entropy",
    ]
    rows = [
        [
            f"L{a['k']}",
            a["component"],
            a["region"],
            a["predicted"],
            f"{a['p_sum']:.2f}",
            f"{a['inter']:.2f}",
            f"{a['dice']:.4f}",
            f"{b['dice']:.4f}",
            f"{a['ce']:.4f}",
        ]
        for a, b in zip(spurious["with"]["rows"], spurious["without"]["rows"])
    ]
    w, wo = spurious["with"], spurious["without"]
    rows.append(
        ["mean (= the loss term)", "", "", "", "", "", f"{w['dice']:.4f}", f"{wo['dice']:.4f}", f"{w['ce']:.4f}"]
    )
    return Table.plain(
        "cc-regions",
        "CC-Dice per Voronoi region on figure1 (region Lk holds label component Lk); the mean of the Dice losses is "
        "cc_dice's term, the mean of the cross-entropies cc_dicece's 'ce' term",
        header,
        rows,
        numeric_from=1,
    )


def _cc_missed_table(rows: list[dict[str, Any]]) -> Table:
    header = [
        "scene",
        "missed lesion voxels",
        "Dice loss, missed lesion's region",
        "Dice loss, found lesion's region",
        "cc_dice",
        "dice (plain)",
        "push on the missed lesion, cc_dice",
        "push on the missed lesion, dice",
    ]
    values = [
        [
            r["scene"].name,
            r["missed_voxels"],
            f"{r['dice_missed']:.6f}",
            f"{r['dice_found']:.6f}",
            f"{r['cc_dice']:.6f}",
            f"{r['dice']:.4f}",
            f"{r['push_cc']:.4f}",
            f"{r['push_dice']:.4f}",
        ]
        for r in rows
    ]
    return Table.plain(
        "cc-missed",
        "A missed small vs a missed large lesion. Push = sum of -d loss / d p over the missed lesion's voxels (how "
        "hard one descent step raises it)",
        header,
        values,
        numeric_from=1,
    )


def _terms_table(scenes: list[Any]) -> Table:
    from lossbench.audit import VARIANT_NOTE, audit_variants

    rows = []
    for var in audit_variants():
        per_scene = [loss_terms(sc, var.name, **var.params) for sc in scenes]
        for term in per_scene[0]:
            vals = [d[term] for d in per_scene]
            rows.append([var.label, term, *[f"{(v if abs(v) >= 5e-5 else 0.0):.4f}" for v in vals]])
    return Table.plain(
        "terms",
        "Every term of every loss variant on every 2D scene (probabilities in, sigmoid=False, defaults). "
        + VARIANT_NOTE,
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
