"""On-the-fly 2D augmentation of one slice: pure functions of (image, label, rng).

Images are ``(C, H, W)`` float32 (z-scored), labels ``(H, W)`` uint8. Geometry changes act on both;
intensity changes on the image only, per modality: a 2.5D input (``(2k + 1) · C`` channels, slice-major)
scales and shifts every slice of one modality alike.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MAX_ROTATION_DEG = 10.0


def flip(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left–right mirror (the first in-plane axis is left→right in canonical orientation)."""
    return image[:, ::-1, :], label[::-1, :]


def rotate(image: np.ndarray, label: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Small in-plane rotation about the slice centre: bilinear for the image, nearest for the label, zeros
    outside. (``grid_sample`` gives what ``scipy.ndimage.rotate`` gives, about five times faster.)"""
    angle = np.deg2rad(degrees)
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    theta = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=torch.float32)
    grid = F.affine_grid(theta, [1, 1, *label.shape], align_corners=False)
    pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    rotated = F.grid_sample(pixels, grid, mode="bilinear", align_corners=False)[0].numpy()
    labels = torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))[None, None]
    rotated_label = F.grid_sample(labels, grid, mode="nearest", align_corners=False)[0, 0].numpy()
    return rotated, rotated_label.astype(label.dtype)


def scale_shift(image: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return image * scale[:, None, None] + shift[:, None, None]


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return image + sigma * rng.standard_normal(image.shape, dtype=np.float32)


def augment_slice(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, modalities: int | None = None
):
    """Random flip (p 0.5), rotation ±10° (p 0.3), intensity scale/shift (p 0.5), noise (p 0.2).

    ``modalities`` (default: every channel its own) is C of a slice-major 2.5D input.
    """
    if rng.random() < 0.5:
        image, label = flip(image, label)
    if rng.random() < 0.3:
        image, label = rotate(image, label, rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    if rng.random() < 0.5:
        channels = modalities or image.shape[0]
        repeats = image.shape[0] // channels
        scale, shift = rng.uniform(0.9, 1.1, channels), rng.uniform(-0.1, 0.1, channels)
        image = scale_shift(image, np.tile(scale, repeats), np.tile(shift, repeats))
    if rng.random() < 0.2:
        image = add_noise(image, 0.05, rng)
    return image.astype(np.float32, copy=False), label
