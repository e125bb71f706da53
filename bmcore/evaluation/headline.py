"""The headline figures of an evaluation, as (figure, value, convention) rows; torch-free.

Used by ``bmseg evaluate``, the architecture comparison and the sweep reports, which print or write
the same table whether or not the process that draws it has torch.
"""

from __future__ import annotations

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
    ("detection_sensitivity_TC", "lesions detected", "lesion-wise, pooled over studies"),
    ("detection_sensitivity_lt3mm_TC", "  detected < 3 mm", "lesion-wise, pooled over studies"),
    ("detection_sensitivity_3to6mm_TC", "  detected 3-6 mm", "lesion-wise, pooled over studies"),
    ("detection_sensitivity_6to10mm_TC", "  detected 6-10 mm", "lesion-wise, pooled over studies"),
    ("detection_sensitivity_gt10mm_TC", "  detected > 10 mm", "lesion-wise, pooled over studies"),
    ("fp_per_study_TC", "false-positive lesions / study", "lesion-wise, pooled over studies"),
)


def format_value(value: object) -> str:
    """A table cell: ``n/a`` for a missing figure, 4 decimals below 10, 1 decimal above."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def headline_rows(summary: dict) -> list[tuple[str, str, str]]:
    """(figure, value, convention) rows for the printed and Markdown tables."""
    return [(label, format_value(summary.get(key)), convention) for key, label, convention in HEADLINE]
