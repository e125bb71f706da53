"""Lesion-balanced sampling: every lesion as likely to be drawn as any other, whatever its size.

Drawing lesion slices uniformly favours large lesions: a 30 mm metastasis spans thirty 1 mm slices, a
2 mm one two, so the smallest lesions, the ones radiosurgery planning must not miss, are a few per cent
of what the network sees. With lesion balance, each 3D lesion (26-connected component of the label) of
the training studies carries a total weight of one, shared evenly by the slices it spans; a slice's
weight is the sum over the lesions it shows, and a crop of that slice is centred on one of its lesions
(2D components) drawn uniformly. Pure functions of the labels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_FULL_3D = np.ones((3, 3, 3), dtype=bool)


def slice_weights(label: np.ndarray) -> np.ndarray:
    """Per axial slice of ``label`` ``(X, Y, Z)``: the sum over the lesions it shows of one over the
    number of slices each spans (0 for slices without a lesion)."""
    components, count = ndimage.label(label > 0, structure=_FULL_3D)
    weights = np.zeros(label.shape[2], dtype=np.float64)
    if count == 0:
        return weights
    present = np.zeros((count + 1, label.shape[2]), dtype=bool)
    for z in range(label.shape[2]):
        present[np.unique(components[:, :, z]), z] = True
    present = present[1:]
    spans = present.sum(axis=1, keepdims=True)
    return (present / spans).sum(axis=0)


def lesion_centre(label: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A random voxel of one of the lesions (2D components) of slice ``label``, the lesion drawn
    uniformly; ``label`` must show a lesion."""
    components, count = ndimage.label(label > 0)
    if count == 0:
        raise ValueError("the slice shows no lesion")
    chosen = np.flatnonzero(components == rng.integers(1, count + 1))
    x, y = np.unravel_index(rng.choice(chosen), label.shape)
    return int(x), int(y)
