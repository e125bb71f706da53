"""Preprocessing: brain mask, per-modality z-score inside it (clipped), in-plane resize and its inverse, and
the 2.5D context stack (neighbouring slices as channels).

Arrays are in canonical orientation (see :mod:`bmcore.imaging`): images ``(C, X, Y, Z)``, masks ``(X, Y, Z)``.
Resizing acts on the in-plane axes (X, Y) of every axial slice; the inverse maps per-class probabilities
back to the native grid before the argmax. Upsampled axes (240 → 256) go back by averaging each native
pixel's nearest-neighbour copies, which is lossless for a label map (a 3 mm lesion survives the round trip
voxel for voxel; bilinear sampling of one-hot maps lost its corners); downsampled axes go back linearly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

DEFAULT_SIZE = 256
DEFAULT_CLIP = 5.0
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)  # 4-connectivity within an axial slice, none across slices
_IN_PLANE[:, :, 1] = ndimage.generate_binary_structure(2, 1)


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Foreground (head) mask: voxels that differ from each modality's background value, holes filled.

    The background value is the most common one per modality (0 for skull-stripped scans, a constant for
    data z-scored by another tool), so both kinds are handled.
    """
    mask = np.zeros(image.shape[1:], dtype=bool)
    for channel in image:
        values, counts = np.unique(channel[::4, ::4, ::4], return_counts=True)
        distance = np.abs(channel - values[np.argmax(counts)])  # from the background value
        spread = np.percentile(distance, 99.5)
        mask |= distance > 0.05 * max(float(spread), 1e-6)
    mask = ndimage.binary_opening(mask, iterations=1)
    labelled, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum_labels(mask, labelled, index=np.arange(1, count + 1))
        mask = labelled == (int(np.argmax(sizes)) + 1)
    # Fill holes slice by slice (what binary_fill_holes does per axial slice, in one pass): background
    # that cannot reach the slice's edge through 4-connected background is a hole.
    background, count = ndimage.label(~mask, structure=_IN_PLANE)
    outside = np.zeros(count + 1, dtype=bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        outside[edge] = True
    outside[0] = False
    return ~outside[background]


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


def _axis_to_native(tensor: torch.Tensor, dim: int, native: int) -> torch.Tensor:
    """Undo the in-plane resize along one axis of a float tensor.

    Where the resize enlarged the axis (native ≤ size, e.g. 240 → 256), every resized pixel is a copy of
    one native pixel (nearest-exact), so each native pixel gets the mean of its own copies: the exact
    inverse for labels, a box filter one native pixel wide for probabilities. Where it shrank the axis,
    the values are interpolated linearly back up.
    """
    size = tensor.shape[dim]
    if native > size:
        moved = tensor.movedim(dim, -1)
        flat = F.interpolate(moved.reshape(-1, 1, size), size=native, mode="linear", align_corners=False)
        return flat.reshape(*moved.shape[:-1], native).movedim(-1, dim)
    # The native index each resized pixel was copied from, by the very rule resize_label used.
    index = torch.arange(native, dtype=torch.float32).view(1, 1, -1)
    source = F.interpolate(index, size=size, mode="nearest-exact").view(-1).long()
    shape = list(tensor.shape)
    shape[dim] = native
    total = torch.zeros(shape, dtype=tensor.dtype).index_add_(dim, source, tensor)
    copies = torch.bincount(source, minlength=native).to(tensor.dtype)
    return total / copies.view([native if axis == dim else 1 for axis in range(tensor.ndim)])


def probabilities_to_native(
    probabilities: np.ndarray | torch.Tensor, native_xy: tuple[int, int]
) -> np.ndarray:
    """Inverse of the resize: ``(K, S, S, Z)`` class probabilities → ``(X, Y, Z)`` native-grid labels."""
    tensor = torch.as_tensor(probabilities, dtype=torch.float32)
    native = _axis_to_native(_axis_to_native(tensor, 1, int(native_xy[0])), 2, int(native_xy[1]))
    # max(0).indices is argmax(0) (first maximum on ties), ~7x faster over a 4-long leading axis on CPU
    return native.max(0).indices.numpy().astype(np.uint8)


def label_to_native(label: np.ndarray, native_xy: tuple[int, int], num_classes: int = 4) -> np.ndarray:
    """A resized label map back to the native grid, through one-hot probabilities."""
    one_hot = np.stack([(label == k).astype(np.float32) for k in range(num_classes)])
    return probabilities_to_native(one_hot, native_xy)


def preprocess_image(image: np.ndarray, size: int = DEFAULT_SIZE, clip: float = DEFAULT_CLIP):
    """Mask, normalise and resize a study: returns ``(image (C, S, S, Z), mask (X, Y, Z))``; ``size`` 0
    keeps the native in-plane grid (``(C, X, Y, Z)``)."""
    mask = brain_mask(image)
    normalised = normalize(image, mask, clip)
    return (resize_image(normalised, size) if size else normalised), mask


def context_offsets(context: int) -> np.ndarray:
    """The slice offsets of a 2.5D input, in channel order: −k … +k."""
    return np.arange(-context, context + 1)


def context_stack(image: np.ndarray, z: np.ndarray | list[int], context: int) -> np.ndarray:
    """The model inputs of slices ``z`` of a ``(C, X, Y, Z)`` volume: ``(n, (2k + 1) · C, X, Y)``.

    Channels are slice-major: offsets −k … +k (:func:`context_offsets`), the C modalities within each, so
    the centre slice is channels ``k·C … k·C + C − 1``; ``context`` 0 gives the slices themselves.
    Neighbours beyond the volume are zeros, the value outside the brain after :func:`normalize`.
    """
    depth = image.shape[3]
    index = np.asarray(z, dtype=np.int64)[:, None] + context_offsets(context)[None, :]  # n, 2k+1
    stack = np.moveaxis(image[..., np.clip(index, 0, depth - 1)], (3, 4), (0, 1))  # n, 2k+1, C, X, Y
    stack[(index < 0) | (index >= depth)] = 0.0
    return np.ascontiguousarray(stack, dtype=np.float32).reshape(len(index), -1, *image.shape[1:3])
