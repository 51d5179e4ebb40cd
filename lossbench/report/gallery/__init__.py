r"""Synthetic sanity-check gallery: what every loss term sees and moves, on small hand-made scenes.

``write_gallery(out)`` (``lossbench gallery --out DIR``) writes ``gallery.md``, ``gallery.html`` (jinja2, autoescaped,
images referenced relatively), ``checks.json`` and PNG figures under ``out/img/``, every file atomically:

1. **Scenes**: every scene of :mod:`lossbench.data.scenes` (probabilities with the label outline).
2. **Figure 1** (ICI paper): for each label instance, the voxels that ICI's instance term uses and the voxels that
   the blob loss uses. The voxel sets are derived from the losses' definitions with
   :func:`lossbench.cc.label_components`: ICI's masked output for instance n is ``p`` on the prediction components
   (``p >= 0.5``) that share a voxel with n; blob's is ``p`` on n and on every background voxel. Per-instance Dice
   values computed from these sets are checked against the losses' own instance/blob terms, so the picture and
   the loss cannot silently disagree. A second figure shows the actual gradients of the terms.
3. **Figure 4**: the weight each ``tp_mode`` gives the voxels of a prediction bridging two label instances, with
   the instance-term values (again cross-checked against the loss).
4. **Centre-of-instance transform**: label and prediction cubes (as the public code draws them: centre
   ``ceil(mean) - 1``, half width ``ceil(size_axis / max(size) * offset)``, border truncation), 2D and a 3D
   max-projection; the Dice of the drawn cube maps is checked against the reference centre term.
5. **Exact vs reference max-pool labelling** on the stress shapes: where the fixed-iteration propagation splits an
   object or drops the flat-index-0 corner voxel, and after how many iterations it converges.
6. **Every loss term on every scene** (probabilities in, ``sigmoid=False``).
7. **Gradient audit** of the Figure 1 scene (:mod:`lossbench.audit`).
8. **Expectation checks**, each computed (never hard-coded) and printed PASS/FAIL.

All numbers use float64 probabilities and the losses' defaults unless a panel says otherwise. Modules:
:mod:`~lossbench.report.gallery.compute` (the numbers, derived independently of the losses' code),
:mod:`~lossbench.report.gallery.checks` (the named checks), :mod:`~lossbench.report.gallery.figures` and
:mod:`~lossbench.report.gallery.page` (the sections and the files).
"""

from __future__ import annotations

from lossbench.report.gallery.checks import Check, run_checks
from lossbench.report.gallery.page import GALLERY_COMMAND, write_gallery

__all__ = ["Check", "write_gallery", "run_checks", "GALLERY_COMMAND"]
