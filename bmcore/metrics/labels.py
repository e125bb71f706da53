"""Labels and regions: what each label value means and which labels make up each scored structure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

LABELS: dict[int, str] = {0: "background", 1: "NETC", 2: "SNFH", 3: "ET"}
REGIONS: dict[str, tuple[int, ...]] = {"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}
# Every structure scored per study: the foreground labels by name, then the regions (ET shared).
STRUCTURES: dict[str, tuple[int, ...]] = {"NETC": (1,), "SNFH": (2,), **REGIONS}

Spacing = Sequence[float]


def region_mask(labels: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """Boolean mask of the voxels whose label is one of ``values`` (e.g. ``REGIONS["TC"]``)."""
    return np.isin(labels, tuple(values))


def check_same_shape(pred: np.ndarray, target: np.ndarray) -> None:
    """Raise ``ValueError`` unless a prediction and its target have the same shape."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
