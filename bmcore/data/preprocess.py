"""Preprocessing: brain mask, per-modality z-score inside it (clipped), in-plane resize and its inverse.

Arrays are in canonical orientation (see :mod:`bmcore.io`): images ``(C, X, Y, Z)``, masks ``(X, Y, Z)``.
Resizing acts on the in-plane axes (X, Y) of every axial slice; the inverse maps per-class probabilities
back to the native grid (bilinear) before the argmax, which keeps small lesions better than
nearest-neighbour resampling of labels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

DEFAULT_SIZE = 256
DEFAULT_CLIP = 5.0


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Foreground (head) mask: voxels that differ from each modality's background value, holes filled.

    The background value is the most common one per modality (0 for skull-stripped scans, a constant for
    data z-scored by another tool), so both kinds are handled.
    """
    mask = np.zeros(image.shape[1:], dtype=bool)
    for channel in image:
        values, counts = np.unique(channel[::4, ::4, ::4], return_counts=True)
        background = values[np.argmax(counts)]
        spread = np.percentile(np.abs(channel - background), 99.5)
        mask |= np.abs(channel - background) > 0.05 * max(float(spread), 1e-6)
    mask = ndimage.binary_opening(mask, iterations=1)
    labelled, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum_labels(mask, labelled, index=np.arange(1, count + 1))
        mask = labelled == (int(np.argmax(sizes)) + 1)
    for z in range(mask.shape[2]):
        mask[:, :, z] = ndimage.binary_fill_holes(mask[:, :, z])
    return mask


def normalize(image: np.ndarray, mask: np.ndarray, clip: float = DEFAULT_CLIP) -> np.ndarray:
    """Z-score each modality inside the mask, clip to ±``clip``, zero outside the mask."""
    out = np.zeros_like(image, dtype=np.float32)
    if not mask.any():
        raise ValueError("brain mask is empty: nothing to normalise")
    for c, channel in enumerate(image):
        inside = channel[mask]
        mean, std = float(inside.mean()), float(inside.std())
        out[c] = np.where(mask, np.clip((channel - mean) / max(std, 1e-6), -clip, clip), 0.0)
    return out


def _resize_slices(array: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``(C, X, Y, Z)`` → ``(C, size0, size1, Z)``, each axial slice resized."""
    stack = array.permute(3, 0, 1, 2)  # Z, C, X, Y
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    resized = F.interpolate(stack, size=size, mode=mode, **kwargs)
    return resized.permute(1, 2, 3, 0).contiguous()


def resize_image(image: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Bilinear in-plane resize of ``(C, X, Y, Z)`` images to ``size × size``."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return _resize_slices(tensor, (size, size), "bilinear").numpy()


def resize_label(label: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Nearest-neighbour in-plane resize of an ``(X, Y, Z)`` label map (training targets)."""
    tensor = torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))[None]
    return _resize_slices(tensor, (size, size), "nearest-exact")[0].numpy().astype(np.uint8)


def probabilities_to_native(probabilities: np.ndarray | torch.Tensor, native_xy: tuple[int, int]) -> np.ndarray:
    """Inverse of the resize: ``(K, S, S, Z)`` class probabilities → ``(X, Y, Z)`` labels on the native grid."""
    tensor = torch.as_tensor(probabilities, dtype=torch.float32)
    native = _resize_slices(tensor, tuple(native_xy), "bilinear")
    return native.argmax(0).numpy().astype(np.uint8)


def label_to_native(label: np.ndarray, native_xy: tuple[int, int], num_classes: int = 4) -> np.ndarray:
    """A resized label map back to the native grid, through one-hot probabilities."""
    one_hot = np.stack([(label == k).astype(np.float32) for k in range(num_classes)])
    return probabilities_to_native(one_hot, native_xy)


def preprocess_image(image: np.ndarray, size: int = DEFAULT_SIZE, clip: float = DEFAULT_CLIP):
    """Mask, normalise and resize a study: returns ``(image (C, S, S, Z), mask (X, Y, Z))``."""
    mask = brain_mask(image)
    normalised = normalize(image, mask, clip)
    return resize_image(normalised, size), mask
