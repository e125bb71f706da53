"""How a volume is shown on screen, in one place for the web viewer and the cohort plots.

Intensities are windowed between the 0.5th and 99.5th percentile of the non-zero (brain) voxels; an
axial plane of a canonical RAS volume (``array[:, :, z]``, axes x, y) is shown in the radiological
convention: anterior up, the patient's right on the image's left.
"""

from __future__ import annotations

import numpy as np

WINDOW_PERCENTILES = (0.5, 99.5)


def window_unit(channel: np.ndarray) -> np.ndarray:
    """Intensities mapped to 0..1 (float32) between the window's percentiles of the non-zero voxels."""
    inside = channel[channel != 0]
    if inside.size == 0:
        return np.zeros(channel.shape, dtype=np.float32)
    low, high = np.percentile(inside, WINDOW_PERCENTILES)
    return np.clip((channel - low) / max(high - low, 1e-6), 0, 1).astype(np.float32)


def window_to_uint8(channel: np.ndarray) -> np.ndarray:
    """Intensities mapped to 0..255 (uint8) with the window of :func:`window_unit`."""
    return (window_unit(channel) * 255.0).astype(np.uint8)


def radiological(plane: np.ndarray) -> np.ndarray:
    """An (X, Y) canonical axial plane as (rows, columns): anterior up, the patient's right on the left."""
    return plane.T[::-1, ::-1]
