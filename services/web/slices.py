"""Axial slices of a study as PNG, for the dashboard's viewer; rendered server-side with numpy and Pillow.

Volumes come from :func:`bmcore.imaging.load_study` (canonical RAS orientation: an axial slice is
``array[:, :, z]``). Each modality is windowed once to uint8 (0.5th-99.5th percentile of the non-zero
voxels) and kept in a small in-process LRU cache, so moving the slider only slices and encodes.
Display follows the radiological convention: anterior up, the patient's right on the image's left.
Overlay colours per label: NETC yellow, SNFH green, ET red.
"""

from __future__ import annotations

import io as bytes_io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from bmcore.imaging import MODALITIES, load_study, study_from_dir
from bmcore.imaging.display import radiological, window_to_uint8
from bmcore.metrics import REGIONS, find_lesions, region_mask

LABEL_COLOURS: dict[int, tuple[int, int, int]] = {1: (255, 214, 0), 2: (46, 204, 64), 3: (230, 32, 32)}
DISPLAY_PIXELS = 512  # the longer side of a rendered slice
T = TypeVar("T")


@dataclass(frozen=True)
class DisplayVolume:
    """A study ready to display: uint8 channels and the uploaded label (canonical orientation)."""

    channels: dict[str, np.ndarray]
    label: np.ndarray | None
    spacing: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        first = next(iter(self.channels.values()))
        return (int(first.shape[0]), int(first.shape[1]), int(first.shape[2]))


class LRUCache:
    """A tiny thread-safe LRU: ``get_or_create(key, factory)``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_create(self, key: Hashable, factory: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]  # type: ignore[return-value]
        value = factory()  # outside the lock: loading a volume takes a while
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


volume_cache = LRUCache(4)
mask_cache = LRUCache(8)


def _file_stamp(path: str | Path) -> tuple[str, float]:
    path = Path(path)
    return str(path), path.stat().st_mtime if path.exists() else 0.0


def display_volume(directory: str, max_voxels: int) -> DisplayVolume:
    """The study folder's modalities (and label, if uploaded), windowed, from the cache when possible."""

    def load() -> DisplayVolume:
        volume = load_study(study_from_dir(directory), max_voxels=max_voxels)
        channels = {m: window_to_uint8(volume.image[i]) for i, m in enumerate(volume.modalities)}
        return DisplayVolume(channels, volume.label, volume.spacing)

    return volume_cache.get_or_create(("volume", _file_stamp(directory)), load)


def display_mask(directory: str, mask_path: str, max_voxels: int) -> np.ndarray:
    """A segmentation mask in the study's canonical orientation, validated against the study's T1."""

    def load() -> np.ndarray:
        ref = study_from_dir(directory)
        ref = replace(ref, label=Path(mask_path), label_kind="multiclass", label_map={})
        volume = load_study(ref, modalities=(MODALITIES[0],), max_voxels=max_voxels)
        assert volume.label is not None
        return volume.label

    return mask_cache.get_or_create(("mask", _file_stamp(directory), _file_stamp(mask_path)), load)


def best_slice(mask: np.ndarray | None, depth: int) -> int:
    """The axial slice with the most labelled voxels, else the middle one."""
    if mask is not None and mask.any():
        return int(np.argmax((mask > 0).sum(axis=(0, 1))))
    return depth // 2


def lesion_slices(mask: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, int]:
    """Lesion id → the axial slice through its centroid, numbered as in the lesion table (same components,
    same order: :func:`bmcore.metrics.find_lesions` on the tumour core)."""
    core = region_mask(mask, REGIONS["TC"])
    return {
        str(lesion.label_id): int(round(lesion.centroid_vox[2])) for lesion in find_lesions(core, spacing)
    }


def render_slice(
    volume: DisplayVolume,
    modality: str,
    z: int,
    overlay: np.ndarray | None = None,
    opacity: float = 0.45,
) -> bytes:
    """One axial slice as PNG bytes, with an optional label overlay, at its physical aspect ratio."""
    if modality not in volume.channels:
        raise KeyError(modality)
    depth = volume.shape[2]
    z = min(max(int(z), 0), depth - 1)
    gray = radiological(volume.channels[modality][:, :, z])
    rows, columns = gray.shape
    sx, sy = volume.spacing[0], volume.spacing[1]
    height_mm, width_mm = rows * sy, columns * sx
    scale = DISPLAY_PIXELS / max(height_mm, width_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    image = Image.fromarray(np.ascontiguousarray(gray)).resize(size, Image.Resampling.BILINEAR)
    image = image.convert("RGB")
    if overlay is not None and opacity > 0:
        labels = Image.fromarray(np.ascontiguousarray(radiological(overlay[:, :, z]).astype(np.uint8)))
        labels_array = np.asarray(labels.resize(size, Image.Resampling.NEAREST))
        rgb = np.asarray(image, dtype=np.float32).copy()
        alpha = min(max(float(opacity), 0.0), 1.0)
        for value, colour in LABEL_COLOURS.items():
            where = labels_array == value
            if where.any():
                rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colour, dtype=np.float32)
        image = Image.fromarray(rgb.round().astype(np.uint8))
    buffer = bytes_io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()
