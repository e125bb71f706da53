"""Evaluation of a model on whole studies, in native geometry, with every convention of docs/design.md §4.

Predictions are made exactly as ``bmseg segment`` makes them (:func:`bmcore.inference.predict_volume`)
and compared with the study's own label on its native grid — never on resized slices. Studies whose
label is a binary enhancing mask (UCSF-BMSR ``_seg`` only) cannot score necrosis or edema; they are
listed as skipped rather than averaged in with figures that would be meaningless.
"""

from __future__ import annotations

from collections.abc import Callable

from bmcore import imaging, metrics
from bmcore.inference import Predictor, predict_volume


def evaluate_studies(
    predictor: Predictor,
    refs: list[imaging.StudyRef],
    batch_size: int = 16,
    tta: bool | None = None,  # None: the model's own default (TrainConfig.tta)
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
