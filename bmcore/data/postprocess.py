"""Post-processing of a predicted label map (``(X, Y, Z)``, labels of docs/design.md §2): pure functions."""

from __future__ import annotations

import numpy as np

from bmcore.metrics import label_components


def remove_small_components(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """``labels`` without the tumour components (26-connected, any of labels 1-3) of fewer than
    ``min_voxels`` voxels, which become background; ``min_voxels`` 0 or 1 keeps everything.

    Components are those of the whole tumour, so a lesion's enhancing rim, necrosis and edema count
    together and a small rim inside a large edema is kept.
    """
    if min_voxels <= 1:
        return labels
    components, count = label_components(labels > 0)
    if count == 0:
        return labels
    small = np.bincount(components.ravel(), minlength=count + 1) < min_voxels
    small[0] = False
    return np.where(small[components], 0, labels).astype(labels.dtype, copy=False)
