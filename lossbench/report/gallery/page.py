"""The gallery page: :func:`write_gallery` writes its sections, checks, glossary and provenance, each atomically."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from lossbench.errors import expect
from lossbench.io import atomic_write_text, json_text
from lossbench.report.gallery.checks import Check, run_checks
from lossbench.report.gallery.sections import GallerySection, build_sections
from lossbench.report.templating import render

__all__ = ["GALLERY_COMMAND", "GLOSSARY", "INTRO", "write_gallery"]

GALLERY_COMMAND = "lossbench gallery --out reports/gallery"
"""The command that regenerates the committed gallery (run from the repository root)."""

INTRO = (
    "ici and dici with no options are the published loss: what the authors' public code computes (tp_mode="
    "'remove_detached', a center term of constant cubes whose gradient is zero, the first 50 prediction components of "
    "an image and none when it has more than 50 per label instance), with exact labelling instead of the code's "
    "fixed-iteration max-pooling. lossbench's own designs are options, labelled as lossbench's wherever they appear: "
    "tp_mode='remove' (the set difference of Eq. 5), center_mode='trainable' and no caps; reference=False selects "
    "all of them. Every number below is computed when the page is generated."
)
"""The paragraph under the page title: which ICI/DICI is the default and which options are lossbench's."""

#: Every abbreviation and short symbol the page prints, with its meaning.
GLOSSARY: tuple[tuple[str, str], ...] = (
    ("ICI", "instance-wise and center-of-instance loss (Rachmadi, Poon and Skibbe): a global, a per-instance and a "
     "center term"),
    ("DICI", "dual ICI: ICI plus a term over the predicted instances (Eq. 6)"),
    ("Eq. N", "equation N of the ICI paper"),
    ("published", "ici / dici with no options: what the authors' public code computes, with exact labelling"),
    ("lossbench's", "a design of lossbench, not of the paper's code (reference=False selects all of them)"),
    ("TP", "true positives: predicted voxels (p >= 0.5) inside the label"),
    ("-TP", "the ICI paper's variant that removes the other label instances from the masked output of instance n "
     "(Figure 4, section 3)"),
    ("CC", "connected component: a maximal set of foreground voxels connected through their neighbours"),
    ("CC-Dice, CC-DiceCE", "connected-component Dice (+ cross-entropy) loss after CC-Metrics (Jaus et al., \"Every "
     "Component Counts\"): the mean over label components of the loss inside each component's Voronoi region"),
    ("Voronoi region", "the voxels nearer (Euclidean distance) to one label component than to any other"),
    ("Dice loss", "1 - (2 sum p y + eps) / (sum p + sum y + eps) with the smoothing eps = 1e-5; 0 is perfect"),
    ("id", "identifier: the integer a labelling gives each voxel of a component"),
    ("BCE, CE", "binary cross-entropy -(y log p + (1 - y) log(1 - p)), log clamped at -100"),
    ("blob", "blob loss (Kofler et al. 2022): a whole-image loss plus the loss of every label instance computed "
     "with the other instances masked out"),
    ("p, y", "predicted probability and label (0 or 1) of a voxel"),
    ("L1, L2, ...", "label instances (components of the label), numbered in raster order of their first voxel"),
    ("stopgrad(p)", "p detached from automatic differentiation: the value of p, zero gradient"),
    ("-d term / d p, -grad", "minus the derivative of a term with respect to p: where a descent step moves p"),
    ("L2 norm, |grad|, grad L2", "Euclidean norm of the gradient: square root of the sum of its squared entries"),
    ("nz", "share of a region's voxels with a non-zero gradient"),
    ("2D, 3D", "two / three spatial dimensions"),
    ("ceil", "rounding up to the next integer"),
    ("max-pool propagation", "iterative labelling: each iteration gives every foreground voxel the largest id in its "
     "3x3 (3D: 3x3x3) neighbourhood"),
    ("cc3d", "the connected-components-3d library: exact labelling on CPU"),
    ("kornia", "a computer-vision library for PyTorch; kornia.contrib.connected_components is its iterative 2D "
     "labelling"),
    ("PASS, FAIL", "whether a computed expectation check held"),
    ("vs", "versus"),
    ("CPU", "central processing unit (the computer's main processor)"),
    ("HTML", "the web-page format of gallery.html"),
)  # fmt: skip


def write_gallery(out: str | Path = "reports/gallery") -> Path:
    """Generate the synthetic sanity-check gallery into ``out`` (``lossbench gallery``).

    Writes ``gallery.md``, ``gallery.html`` (images referenced relatively as ``img/*.png``), ``checks.json`` (every
    expectation check with its status and numbers), the PNG figures under ``out/img/`` and ``provenance.json`` (the
    source fingerprint of the gallery's code and the command that regenerates it), each file atomically. Existing
    files of the same names are overwritten; nothing else in ``out`` is touched.

    Args:
        out: output folder (created if needed).

    Returns:
        Path of ``gallery.md`` (``gallery.html`` lies next to it).

    Raises:
        ConfigError: if ``out`` exists and is not a folder.
    """
    from lossbench.provenance import write_provenance

    command = f"lossbench gallery --out {out}"  # the path as the user gave it
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise expect("out", "a folder (or a path that does not exist yet)", f"the file {str(out)!r}")
    (out / "img").mkdir(parents=True, exist_ok=True)
    cache: dict[str, Any] = {}
    checks = run_checks(cache)
    sections = build_sections(out, cache)
    md = _write_pages(out, sections, checks, command)
    write_provenance(out, "gallery", command)
    return md


def _write_pages(out: Path, sections: list[GallerySection], checks: list[Check], command: str) -> Path:
    """Write ``gallery.html``, ``gallery.md`` and ``checks.json``; return the markdown page's path."""
    n_pass = sum(c.passed for c in checks)
    data = {
        "title": "lossbench synthetic sanity-check gallery",
        "command": command,
        "versions": _versions(),
        "intro": INTRO,
        "glossary": GLOSSARY,
        "sections": sections,
        "checks_number": len(sections) + 1,
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
    import importlib.metadata

    import matplotlib
    import torch

    import lossbench

    versions = {"lossbench": lossbench.__version__, "torch": torch.__version__, "matplotlib": matplotlib.__version__}
    try:
        versions["kornia"] = importlib.metadata.version("kornia")
    except importlib.metadata.PackageNotFoundError:
        versions["kornia"] = "not installed"
    return versions
