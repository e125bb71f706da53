"""Evaluation of a model on whole studies, in native geometry, with every convention of DESIGN.md §4.

Predictions are made exactly as ``bmseg segment`` makes them (:func:`bmcore.inference.predict_volume`)
and compared with the study's own label on its native grid — never on resized slices. Studies whose
label is a binary enhancing mask (UCSF-BMSR ``_seg`` only) cannot score necrosis or edema; they are
listed as skipped rather than averaged in with figures that would be meaningless.
"""

from __future__ import annotations

from collections.abc import Callable

from bmcore import imaging, metrics
from bmcore.inference import Predictor, predict_volume

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


def evaluate_studies(
    predictor: Predictor,
    refs: list[imaging.StudyRef],
    batch_size: int = 16,
    tta: bool = False,
    on_study: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Segment and score every labelled study; returns ``{"summary", "cases", "skipped"}``."""
    scored = [r for r in refs if r.label is not None and r.label_kind == "multiclass"]
    skipped = [
        {"study_id": r.study_id, "reason": "no label" if r.label is None else "enhancing-only label"}
        for r in refs
        if r not in scored
    ]
    if not scored:
        raise ValueError("no study with a 3-class label to evaluate on")
    cases = []
    for index, ref in enumerate(scored):
        volume = imaging.load_study(ref, modalities=predictor.modalities)
        prediction = predict_volume(predictor, volume, batch_size, tta, should_stop=should_stop)
        result = metrics.evaluate_case(prediction, volume.label, volume.spacing)
        result["study_id"] = ref.study_id
        result["patient_id"] = ref.patient_id
        cases.append(result)
        if on_study is not None:
            on_study(index + 1, len(scored), ref.study_id)
    return {"summary": metrics.summarize_cases(cases), "cases": cases, "skipped": skipped}


def format_value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def headline_rows(summary: dict) -> list[tuple[str, str, str]]:
    """(figure, value, convention) rows for the printed and Markdown tables."""
    return [(label, format_value(summary.get(key)), convention) for key, label, convention in HEADLINE]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
