"""Segmentation metrics: the one place every convention lives (docs/design.md §4).

Pure numpy / scipy.ndimage functions, used alike by training (per-batch confusion matrices),
evaluation and the inference worker.

Conventions shared by every function here:

- **Labels** (docs/design.md §2): 0 background, 1 NETC (necrotic / non-enhancing core),
  2 SNFH (edema), 3 ET (enhancing tumour). See :data:`LABELS`.
- **Regions**: ET = {3}, TC = {1, 3}, WT = {1, 2, 3}. See :data:`REGIONS`. The label "ET" and the
  region "ET" are the same mask, so per-structure keys name ET once.
- **Arrays** are indexed (x, y, z); ``spacing`` is the voxel size along those axes in mm.
- **Empty masks**: an empty-vs-empty pair scores Dice = IoU = precision = sensitivity = 1 and
  HD95 = 0 mm; one empty mask against a non-empty one scores 0 and HD95 = :data:`HD95_MISSING`.
- **Lesions** are 26-connected components (full 3x3x3 neighbourhood); lesion-wise scores follow
  the BraTS-METS 2023 rules (see :func:`lesion_wise_metrics`); the two official conventions exactly as
  their reference code scores them, ``brats2023`` and ``brats2025``, are :func:`lesion_wise` and sit in
  every :func:`evaluate_case` result as ``brats2023_*`` / ``brats2025_*`` keys.
- **Uncertainty**: a summary's headline figures carry ``<key>_ci95``, a 95 % percentile bootstrap
  interval over patients (:func:`bootstrap_interval`), and its ``patients`` and ``lesions`` counts.
- **paper_*** keys are the reference study's convention: pooled over all voxels, all four
  classes *including background*, macro-averaged. Background dominates them, so they read far
  higher than the per-class foreground scores; they are kept only to reproduce the study's table.

Modules: :mod:`.labels` (labels, regions), :mod:`.overlap` (confusion matrix, Dice / IoU / precision /
sensitivity, ``paper_*``), :mod:`.distance` (HD95), :mod:`.lesions` (components, diameter bins, the lesion
table, lesion-wise scores), :mod:`.conventions` (brats2023, brats2025), :mod:`.uncertainty` (bootstrap
over patients), :mod:`.cases` (one study, many studies). Their public names are re-exported
here: ``from bmcore import metrics; metrics.evaluate_case(...)``.
"""

from bmcore.metrics.cases import PER_CLASS_METRICS, evaluate_case, per_class_metrics, summarize_cases
from bmcore.metrics.conventions import CONVENTIONS, lesion_wise
from bmcore.metrics.distance import HD95_MISSING, hd95
from bmcore.metrics.labels import LABELS, REGIONS, STRUCTURES, Spacing, region_mask
from bmcore.metrics.lesions import (
    DIAMETER_BIN_NAMES,
    DIAMETER_BINS_MM,
    LESION_COLUMNS,
    LESION_COUNT_KEYS,
    MIN_LESION_VOXELS,
    Lesion,
    diameter_bin,
    equivalent_diameter_mm,
    find_lesions,
    label_components,
    lesion_rows,
    lesion_wise_metrics,
)
from bmcore.metrics.overlap import OVERLAP_METRICS, confusion_matrix, overlap_scores, paper_metrics
from bmcore.metrics.uncertainty import bootstrap_interval

__all__ = [
    "CONVENTIONS",
    "bootstrap_interval",
    "lesion_wise",
    "DIAMETER_BINS_MM",
    "DIAMETER_BIN_NAMES",
    "HD95_MISSING",
    "LABELS",
    "LESION_COUNT_KEYS",
    "MIN_LESION_VOXELS",
    "OVERLAP_METRICS",
    "PER_CLASS_METRICS",
    "REGIONS",
    "STRUCTURES",
    "Lesion",
    "Spacing",
    "confusion_matrix",
    "diameter_bin",
    "equivalent_diameter_mm",
    "evaluate_case",
    "find_lesions",
    "hd95",
    "label_components",
    "LESION_COLUMNS",
    "lesion_rows",
    "lesion_wise_metrics",
    "overlap_scores",
    "paper_metrics",
    "per_class_metrics",
    "region_mask",
    "summarize_cases",
]
