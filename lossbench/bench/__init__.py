"""Performance benchmark: labelling backends, loss forward+backward, scaling with instances, metrics.

``lossbench bench`` (or :func:`run_bench`) times four suites (:mod:`lossbench.bench.suites`, one module each) and
computes every ratio inside one run, so the ratios compare numbers measured under the same load, on the same
machine, minutes apart at most:

* ``cc``: :func:`lossbench.cc.label_components` with the ``scipy``, ``cc3d``, ``torch`` and ``auto`` backends,
  calling ``cc3d.connected_components`` directly ("cc3d direct", the floor any wrapper is compared with),
  scikit-image's ``measure.label`` (another CPU reference), on 2D masks kornia's ``connected_components``
  (iterative, with whether its default number of steps gives the exact partition and the smallest count that does)
  and its union-find, and the reference ``maxpool`` propagation with the paper's iteration counts (250 at 96^3,
  400 at 192^3, 350 otherwise), on masks with about 50 components, batch 1 and 4. Every labelling is checked
  against scipy's before it is timed (a row's ``exact``).
* ``losses``: forward + backward of every registered loss (and the published / trainable / -TP variants of the
  instance losses) on the same sizes, as ratios to Dice and to the floor "Dice + labelling target and prediction
  with cc3d"; MONAI's own ``DiceLoss`` is timed next to them as an external reference (lossbench's ``dice`` adds
  input validation). Per size, a CC-Dice group (batch 1, about 20 label components): the exact Voronoi labelling
  next to scipy's distance transform with indices, and ``cc_dice``/``cc_dicece`` with and without the labelling
  ("own work": the labelling replaced by a lookup of its result).
* ``scaling``: the instance losses at 96^3 with 10, 100 and 1000 instances (cost must not follow the count), in
  two series: "fixed foreground" (the balls shrink as their number grows, so about 81,000 foreground voxels
  throughout: only the count changes; the target is checked here) and "fixed size" (balls of radius 2.5, so
  the foreground grows 100x with the count, and so does every per-voxel cost, cc3d's labelling included). Then
  the "noisy" scene: 2 x 1 x 160 x 192 x 160 with 40 lesions per image and logits ``4 * label - 2 + N(0, 1)``
  (about 80,000 prediction components per image), every instance loss's time and peak memory growth against one
  call of "Dice, then labelling of label and prediction".
* ``metrics``: :func:`~lossbench.metrics.atlas_metrics` + :func:`~lossbench.metrics.detection_metrics` on a
  197x233x189 subject with about 20 lesions.

Targets (shown PASS/FAIL next to the ratio): ``auto`` labelling <= 1.5x cc3d direct at 96^3 and 192^3;
``auto`` >= 100x faster than ``maxpool`` at 96^3; ICI <= 2.0x (Dice + 2 labellings) at 96^3 and 192^3;
t(1000 instances) <= 1.5x t(10) for ICI, DICI and blob (fixed foreground); noisy scene: every ICI/DICI case but
the cross-entropy one <= 3x the floor in time and in peak memory growth; CC-Dice at 96^3 and 192^3: the loss's own
work <= 2x blob and the whole loss <= 1.5x (Voronoi labelling + Dice); metrics <= 0.1 s per subject. On CUDA
also the GPU goals: exact torch labelling <= 2 ms per 192^3 volume and ICI <= 1.5x Dice for 4x1x192^3. On CUDA
the floor labels with the torch backend on the device instead of cc3d.

Method (details in :mod:`lossbench.bench.timing`): each case gets one warm-up call, then ``repeats`` timed samples;
a sample is the mean over enough back-to-back calls to last 10 ms, as ``timeit`` does. The cases of one group (same
suite, size and batch) are timed round-robin, so a burst of load on a shared machine hits all of them alike; each
sample follows one untimed call of the same case, so that no case inherits the memory state of the previous one (on
CPU, large freed blocks go back to the OS and the next case's first large allocations page-fault). A call longer
than 1 s is its own warm-up, and a case stops taking samples after 10 s; the noisy scene takes at most 3 samples per
case. Every loss runs once on a small corner of its inputs before anything is measured (compiled kernels load then,
not in the first measured call). Reported: median, interquartile range, min/max, number of samples and peak memory
growth, the median over the untimed calls (the warm-up and the call before each sample; CUDA: allocated by torch;
CPU on Linux: newly touched resident pages after glibc's free heap is handed back to the OS; elsewhere
``tracemalloc``).

Threads: torch's intra-op thread count is recorded, not changed. On a shared machine whose cores are busy,
multi-threaded torch ops can stall for whole scheduler slices; run ``OMP_NUM_THREADS=1 lossbench bench`` there
(cc3d and scipy are single-threaded, so the labelling comparison is then like for like). Large CPU tensors
(4x1x192^3 is 113 MB per float tensor) are fresh ``mmap`` allocations whose page faults can dominate a loss's
forward+backward; ``THP_MEM_ALLOC_ENABLE=1`` (read when torch is imported) lets torch's allocator use transparent
huge pages, 512 times fewer faults for the same tensor. Both variables are recorded under ``environment.env``.

Results are a dict (also written as ``bench.json`` and ``bench.md`` with ``out``, next to ``provenance.json``: the
fingerprint of the benchmarked code and the ``lossbench bench`` command that reruns the benchmark)::

    {"schema_version": 1, "environment": {...}, "settings": {...},
     "results": [{"suite", "group", "case", "size", "batch", "device", "median_s", "q1_s", "q3_s", "min_s",
                  "max_s", "samples", "calls_per_sample", "peak_mem_mb", "note", ...}],
     "ratios": [{"suite", "name", "size", "batch", "value", "target", "op", "status", "numerator",
                 "denominator"}],
     "skipped": [{"suite", "case", "size", "batch", "reason"}],
     "errors": [{"suite", "case", "message"}]}

``status`` is ``"PASS"``/``"FAIL"`` for ratios with a target and ``None`` otherwise.
"""

from __future__ import annotations

from lossbench.bench.masks import instances_mask
from lossbench.bench.output import to_markdown
from lossbench.bench.run import run_bench
from lossbench.bench.settings import BATCHES, DEFAULT_SIZES, SUITES, parse_size
from lossbench.bench.suites.cc import maxpool_iterations
from lossbench.bench.suites.scaling import scaling_radius
from lossbench.bench.timing import Timing, measure_group

__all__ = [
    "run_bench",
    "SUITES",
    "DEFAULT_SIZES",
    "BATCHES",
    "maxpool_iterations",
    "parse_size",
    "instances_mask",
    "scaling_radius",
    "measure_group",
    "Timing",
    "to_markdown",
]
