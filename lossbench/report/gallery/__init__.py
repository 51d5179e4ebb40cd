r"""Synthetic sanity-check gallery: what every loss term sees and moves, on small hand-made scenes.

``write_gallery(out)`` (``lossbench gallery --out DIR``) writes ``gallery.md``, ``gallery.html`` (jinja2, autoescaped,
images referenced relatively), ``checks.json``, ``provenance.json`` and PNG figures under ``out/img/``, every file
atomically. ``ici`` and ``dici`` with no options are the published loss (what the authors' public code computes, with
exact labelling); lossbench's own designs are options and are labelled as lossbench's on every figure and table.

1. **Scenes**: every scene of :mod:`lossbench.data.scenes` (probabilities with the label outline).
2. **Figure 1** (ICI paper): for each label instance, the voxels that ICI's instance term uses and the voxels that
   the blob loss uses. The voxel sets are derived from the losses' definitions with
   :func:`lossbench.cc.label_components`: ICI's masked output for instance n is ``p`` on the prediction components
   (``p >= 0.5``) that share a voxel with n; blob's is ``p`` on n and on every background voxel. Per-instance Dice
   values computed from these sets are checked against the losses' own instance/blob terms, so the picture and
   the loss cannot silently disagree. A second figure shows the actual gradients of the terms.
3. **Figure 4**: the weight each ``tp_mode`` gives the voxels of a prediction bridging two label instances, with
   the instance-term values (again cross-checked against the loss).
4. **Center-of-instance transform**: label and prediction cubes (as the public code draws them: center
   ``ceil(mean) - 1``, half width ``ceil(size_axis / max(size) * offset)``, border truncation), 2D and a 3D
   maximum projection; the Dice of the drawn cube maps is checked against the published center term.
5. **Exact vs iterative labelling** on the stress shapes: where the public code's fixed-iteration max-pool
   propagation and kornia's ``connected_components`` split an object or drop the flat-index-0 corner voxel, and
   after how many iterations each converges.
6. **CC-Dice**: the Voronoi regions of the label components with the Dice loss inside each; a missed small lesion
   against a missed large one; spurious blobs far from every lesion.
7. **Every loss term on every scene** (probabilities in, ``sigmoid=False``).
8. **Gradient audit** of the Figure 1 scene (:mod:`lossbench.audit`).
9. **Expectation checks**, each computed (never hard-coded) and printed PASS/FAIL; a glossary defines every
   abbreviation the page prints.

All numbers use float64 probabilities and the losses' defaults unless a panel says otherwise. Modules: the numbers,
derived from the losses' definitions independently of their code (:mod:`~lossbench.report.gallery.compute` for ICI and
blob, :mod:`~lossbench.report.gallery.labelling`, :mod:`~lossbench.report.gallery.ccdice`); the named checks
(:mod:`~lossbench.report.gallery.registry` and the ``checks_*`` modules, run by
:mod:`~lossbench.report.gallery.checks`); the figures (:mod:`~lossbench.report.gallery.plotting` and the ``figures*``
modules); :mod:`~lossbench.report.gallery.sections` and :mod:`~lossbench.report.gallery.page` (the page and its files).
"""

from __future__ import annotations

from lossbench.report.gallery.checks import Check, run_checks
from lossbench.report.gallery.page import GALLERY_COMMAND, write_gallery

__all__ = ["Check", "write_gallery", "run_checks", "GALLERY_COMMAND"]
