"""Slices of a study as PNG, for the dashboard's viewer, in three planes; rendered server-side with numpy
and Pillow.

Volumes come from :func:`bmcore.imaging.load_study` (canonical RAS orientation, axes x, y, z): an axial
slice is ``array[:, :, k]``, a coronal one ``array[:, k, :]``, a sagittal one ``array[k, :, :]``. Each
modality is windowed once to uint8 (0.5th-99.5th percentile of the non-zero voxels) and kept in a small
in-process LRU cache, so moving the slider only slices and encodes.

Display follows the radiological convention of :func:`bmcore.imaging.display.radiological` in every
plane: axial with anterior up and the patient's right on the image's left; coronal with superior up and
the patient's right on the left; sagittal with superior up and anterior on the left (the patient faces
the viewer's left). Pixels are scaled to the voxel spacing of the plane, so anisotropic volumes keep
their physical aspect ratio. Overlay colours per label: NETC yellow, SNFH green, ET red.
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
# plane -> the volume axis it cuts across, and the orientation letters (top, bottom, left, right) it shows
PLANES: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
PLANE_ORIENTATION: dict[str, tuple[str, str, str, str]] = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}
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


def best_slice(mask: np.ndarray | None, depth: int, plane: str = "axial") -> int:
    """The slice of ``plane`` with the most labelled voxels, else the middle one."""
    if mask is not None and mask.any():
        others = tuple(axis for axis in range(3) if axis != PLANES[plane])
        return int(np.argmax((mask > 0).sum(axis=others)))
    return depth // 2


def best_slices(mask: np.ndarray | None, shape: tuple[int, int, int]) -> dict[str, int]:
    """Plane → the slice :func:`best_slice` starts the viewer on."""
    return {plane: best_slice(mask, shape[axis], plane) for plane, axis in PLANES.items()}


def lesion_centres(mask: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, list[int]]:
    """Lesion id → the (x, y, z) voxel through its centroid, numbered as in the lesion table (same
    components, same order: :func:`bmcore.metrics.find_lesions` on the tumour core)."""
    core = region_mask(mask, REGIONS["TC"])
    return {
        str(lesion.label_id): [int(round(c)) for c in lesion.centroid_vox]
        for lesion in find_lesions(core, spacing)
    }


def slice_count(shape: tuple[int, int, int], plane: str) -> int:
    """How many slices ``plane`` has in a volume of ``shape``; KeyError for an unknown plane."""
    return int(shape[PLANES[plane]])


def plane_section(array: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Slice ``index`` of ``plane`` of an (X, Y, Z) canonical array as display (rows, columns)."""
    return radiological(np.take(array, index, axis=PLANES[plane]))


def plane_pixel_mm(spacing: tuple[float, float, float], plane: str) -> tuple[float, float]:
    """(row height, column width) in mm of :func:`plane_section`'s pixels."""
    first, second = (axis for axis in range(3) if axis != PLANES[plane])
    return float(spacing[second]), float(spacing[first])


def display_size(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], plane: str
) -> tuple[int, int]:
    """(width, height) in pixels of a rendered slice of ``plane``: its physical extent, the longer side
    :data:`DISPLAY_PIXELS`."""
    first, second = (axis for axis in range(3) if axis != PLANES[plane])
    row_mm, column_mm = plane_pixel_mm(spacing, plane)
    height_mm, width_mm = shape[second] * row_mm, shape[first] * column_mm
    scale = DISPLAY_PIXELS / max(height_mm, width_mm)
    return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))


def _blend(image: Image.Image, labels: np.ndarray, opacity: float) -> Image.Image:
    """``image`` (RGB) with the label colours laid over at ``opacity``; labels already at its size."""
    rgb = np.asarray(image, dtype=np.float32).copy()
    alpha = min(max(float(opacity), 0.0), 1.0)
    for value, colour in LABEL_COLOURS.items():
        where = labels == value
        if where.any():
            rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colour, dtype=np.float32)
    return Image.fromarray(rgb.round().astype(np.uint8))


def render_slice(
    volume: DisplayVolume,
    modality: str,
    index: int,
    overlay: np.ndarray | None = None,
    opacity: float = 0.45,
    plane: str = "axial",
) -> bytes:
    """Slice ``index`` of ``plane`` as PNG bytes, with an optional label overlay, at its physical aspect
    ratio. KeyError for an unknown modality or plane, IndexError for a slice outside the volume."""
    if modality not in volume.channels:
        raise KeyError(modality)
    count = slice_count(volume.shape, plane)
    if not 0 <= int(index) < count:
        raise IndexError(f"{plane} slice must be from 0 to {count - 1}, got {index}")
    gray = plane_section(volume.channels[modality], plane, int(index))
    size = display_size(volume.shape, volume.spacing, plane)
    image = Image.fromarray(np.ascontiguousarray(gray)).resize(size, Image.Resampling.BILINEAR)
    image = image.convert("RGB")
    if overlay is not None and opacity > 0:
        section = plane_section(overlay, plane, int(index)).astype(np.uint8)
        labels = Image.fromarray(np.ascontiguousarray(section)).resize(size, Image.Resampling.NEAREST)
        image = _blend(image, np.asarray(labels), opacity)
    buffer = bytes_io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()
