"""Voxel-wise overlap: confusion matrices, the reference study's pooled figures, Dice / IoU of masks."""

from __future__ import annotations

import numpy as np

from bmcore.metrics.labels import check_same_shape

OVERLAP_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "sensitivity")

# --- voxel-wise counts -------------------------------------------------------------------------


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int = 4) -> np.ndarray:
    """Confusion matrix of integer label arrays of any (equal) shape.

    Returns an int64 array of shape ``(num_classes, num_classes)``: rows are the target label,
    columns the predicted label (labels as in :data:`LABELS`). Matrices of several batches or
    studies add up, so training can accumulate it from ``argmax`` outputs.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    check_same_shape(pred, target)
    for name, array in (("prediction", pred), ("target", target)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}), got {array.min()}..{array.max()}"
            )
    codes = target.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    counts = np.bincount(codes, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _ratio(numerator: float, denominator: float, if_undefined: float) -> float:
    return float(numerator) / float(denominator) if denominator else float(if_undefined)


def _scores_from_counts(tp: float, fp: float, fn: float) -> dict[str, float]:
    """Dice, IoU, precision, sensitivity from voxel counts, with the empty-mask conventions.

    Dice and IoU are 1 when both masks are empty. Precision (prediction empty) and sensitivity
    (target empty) are 1 when the other mask is empty too, else 0.
    """
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        "precision": _ratio(tp, tp + fp, 1.0 if fn == 0 else 0.0),
        "sensitivity": _ratio(tp, tp + fn, 1.0 if fp == 0 else 0.0),
    }


def paper_metrics(confusion: np.ndarray) -> dict[str, float]:
    """The reference study's figures from a pooled confusion matrix (rows target, cols pred).

    Convention: all voxels pooled, **all classes including background**, each score computed per
    class (one-vs-rest) and macro-averaged over the classes present in the target or the
    prediction (an absent class is left out, as ``tf.keras.metrics.MeanIoU`` does);
    ``accuracy`` is the voxel accuracy. Background makes these numbers optimistic (mean IoU far
    above the foreground Dice); every key is prefixed ``paper_`` so they are never mistaken for
    the per-class metrics.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    total = confusion.sum()
    if total == 0:
        raise ValueError("paper_metrics needs a confusion matrix with at least one voxel")
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    tn = total - tp - fp - fn
    present = np.flatnonzero(tp + fp + fn)
    per_class = [_scores_from_counts(tp[c], fp[c], fn[c]) for c in present]
    result = {"paper_accuracy": float(tp.sum() / total)}
    for name in OVERLAP_METRICS:
        key = f"paper_mean_{name}" if name in ("dice", "iou") else f"paper_{name}"
        result[key] = float(np.mean([scores[name] for scores in per_class]))
    result["paper_specificity"] = float(np.mean([_ratio(tn[c], tn[c] + fp[c], 1.0) for c in present]))
    return result


# --- binary mask scores ------------------------------------------------------------------------


def overlap_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision and sensitivity of two boolean masks.

    Empty vs empty scores 1.0 for all four; one empty mask against a non-empty one scores 0.0.
    """
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    check_same_shape(pred, target)
    tp = np.count_nonzero(pred & target)
    return _scores_from_counts(tp, np.count_nonzero(pred) - tp, np.count_nonzero(target) - tp)
