"""The headline figures of an evaluation, as (figure, value, convention) rows; torch-free.

Used by ``bmseg evaluate``, the architecture comparison and the sweep reports, which print or write
the same table whether or not the process that draws it has torch.
"""

from __future__ import annotations

B2023 = "brats2023: BraTS-METS 2023 reference code, mean over studies"
B2025 = "brats2025: brats-evaluation (panoptica), lesions >= 20 mm3, mean over studies with one"

# (key, label, convention) rows of the printed table.
HEADLINE = (
    ("paper_accuracy", "accuracy", "paper-style: pooled voxels, 4 classes incl. background"),
    ("paper_mean_dice", "mean Dice", "paper-style: pooled voxels, 4 classes incl. background"),
    ("paper_mean_iou", "mean IoU", "paper-style: pooled voxels, 4 classes incl. background"),
    ("paper_precision", "precision", "paper-style: pooled voxels, 4 classes incl. background"),
    ("paper_sensitivity", "sensitivity", "paper-style: pooled voxels, 4 classes incl. background"),
    ("paper_specificity", "specificity", "paper-style: pooled voxels, 4 classes incl. background"),
    ("dice_ET", "Dice ET", "per study, foreground only, mean over studies"),
    ("dice_TC", "Dice TC", "per study, foreground only, mean over studies"),
    ("dice_WT", "Dice WT", "per study, foreground only, mean over studies"),
    ("dice_NETC", "Dice NETC", "per study, foreground only, mean over studies"),
    ("dice_SNFH", "Dice SNFH", "per study, foreground only, mean over studies"),
    ("hd95_TC", "HD95 TC (mm)", "per study, mean over studies"),
    ("lesion_dice_TC", "lesion-wise Dice TC", "BraTS-METS 2023 lesion-wise, mean over studies"),
    ("lesion_hd95_TC", "lesion-wise HD95 TC (mm)", "BraTS-METS 2023 lesion-wise, mean over studies"),
    ("brats2025_lesion_dice_TC", "lesion-wise Dice TC (brats2025)", B2025),
    ("brats2025_lesion_dice_ET", "lesion-wise Dice ET (brats2025)", B2025),
    ("brats2025_lesion_dice_WT", "lesion-wise Dice WT (brats2025)", B2025),
    ("brats2025_lesion_hd95_TC", "lesion-wise HD95 TC (brats2025, mm)", B2025),
    ("brats2025_lesion_nsd_TC", "lesion-wise NSD TC (brats2025)", B2025),
    ("brats2025_detection_sensitivity_TC", "lesions detected (brats2025)", "brats2025, pooled over studies"),
    ("brats2023_lesion_dice_TC", "lesion-wise Dice TC (brats2023)", B2023),
    ("brats2023_lesion_dice_ET", "lesion-wise Dice ET (brats2023)", B2023),
    ("brats2023_lesion_dice_WT", "lesion-wise Dice WT (brats2023)", B2023),
    ("brats2023_lesion_hd95_TC", "lesion-wise HD95 TC (brats2023, mm)", B2023),
    ("brats2023_detection_sensitivity_TC", "lesions detected (brats2023)", "brats2023, pooled over studies"),
    ("detection_sensitivity_TC", "lesions detected", "lesion-wise, pooled over studies"),
    ("detection_sensitivity_lt3mm_TC", "  detected < 3 mm", "lesion-wise, pooled over studies"),
    ("detection_sensitivity_3to6mm_TC", "  detected 3-6 mm", "lesion-wise, pooled over studies"),
    ("detection_sensitivity_6to10mm_TC", "  detected 6-10 mm", "lesion-wise, pooled over studies"),
    ("detection_sensitivity_gt10mm_TC", "  detected > 10 mm", "lesion-wise, pooled over studies"),
    ("fp_per_study_TC", "false-positive lesions / study", "lesion-wise, pooled over studies"),
)


# The figures a short summary shows (the demo's second cohort, bench_compare's record), in order.
KEY_FIGURES = (
    "brats2025_lesion_dice_TC",
    "brats2023_lesion_dice_TC",
    "dice_WT",
    "detection_sensitivity_lt3mm_TC",
    "detection_sensitivity_3to6mm_TC",
    "detection_sensitivity_6to10mm_TC",
    "detection_sensitivity_gt10mm_TC",
    "fp_per_study_TC",
)


def format_value(value: object) -> str:
    """A table cell: ``n/a`` for a missing figure, 4 decimals below 10, 1 decimal above."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def format_with_interval(summary: dict, key: str) -> str:
    """``summary[key]`` as a cell, followed by its 95 % interval ``[low, high]`` when the summary has one."""
    value, interval = format_value(summary.get(key)), summary.get(f"{key}_ci95")
    if value == "n/a" or not interval:
        return value
    return f"{value} [{format_value(interval[0])}, {format_value(interval[1])}]"


def headline_rows(summary: dict) -> list[tuple[str, str, str]]:
    """(figure, value, convention) rows for the printed and Markdown tables; a figure with a
    ``<key>_ci95`` in the summary shows it after the value, ``0.8123 [0.7012, 0.9034]``."""
    return [(label, format_with_interval(summary, key), convention) for key, label, convention in HEADLINE]


def headline_caption(summary: dict) -> str:
    """The line under the table: studies, patients and lesions scored, and how intervals are made."""
    parts = [f"{summary.get('n_studies', 'n/a')} studies"]
    if summary.get("patients") is not None:
        parts.append(f"{summary['patients']} patients")
    if summary.get("lesions") is not None:
        parts.append(f"{summary['lesions']} TC lesions (brats2025)")
    text = ", ".join(parts)
    if summary.get("ci95_method"):
        text += f"; [low, high]: 95 % {summary['ci95_method']}"
    return text
