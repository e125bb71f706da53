"""A loaded study: reading and validating its images and label, and writing a mask back to its grid.

Volumes are reoriented to canonical RAS on load (see :mod:`bmcore.imaging`) and :func:`save_mask`
undoes that reorientation exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from bmcore.config import get_settings
from bmcore.imaging.layouts import LABEL_VALUES, MODALITIES, StudyError, StudyRef
from bmcore.imaging.nifti import read_data, read_header, write_nifti

AFFINE_TOLERANCE = 1e-3


@dataclass
class Volume:
    """A loaded study in canonical RAS orientation; ``image`` is ``(C, X, Y, Z)`` float32."""

    ref: StudyRef
    modalities: tuple[str, ...]
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray
    native_shape: tuple[int, int, int]
    orientation: np.ndarray
    header: nib.Nifti1Header

    @property
    def study_id(self) -> str:
        return self.ref.study_id

    @property
    def patient_id(self) -> str:
        return self.ref.patient_id


# ---------------------------------------------------------------------------------------------- loading


def lesion_voxels(ref: StudyRef, max_voxels: int | None = None) -> int:
    """Voxels the study's label marks as lesion (any class above 0 after its ``label_map``); 0 without
    a label. Reads the label alone; :func:`load_study` still validates it fully."""
    if ref.label is None:
        return 0
    data = read_data(read_header(ref.label, max_voxels), ref.label.name, dtype=np.int64)
    values, counts = np.unique(data, return_counts=True)
    return int(sum(n for v, n in zip(values, counts, strict=True) if ref.label_map.get(int(v), int(v)) > 0))


def _check_finite(data: np.ndarray, name: str) -> None:
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise StudyError(f"{name}: {bad:,} NaN/Inf voxels")


def _check_same_geometry(image: nib.Nifti1Image, name: str, reference: nib.Nifti1Image, reference_name: str):
    """Raise unless ``image`` has the reference's 3D shape and (within tolerance) its affine."""
    if image.shape[:3] != reference.shape[:3]:
        raise StudyError(
            f"{name}: shape {image.shape[:3]} disagrees with {reference_name} {reference.shape[:3]}"
        )
    difference = float(np.abs(image.affine - reference.affine).max())
    if difference > AFFINE_TOLERANCE:
        raise StudyError(f"{name}: affine disagrees with {reference_name}'s (by up to {difference:.3g})")


def load_study(
    ref: StudyRef,
    modalities: tuple[str, ...] = MODALITIES,
    max_voxels: int | None = None,
    with_label: bool = True,
) -> Volume:
    """Read and validate a study; raises :class:`StudyError` with a one-line reason."""
    if max_voxels is None:
        max_voxels = get_settings().max_voxels
    prefix = ref.study_id
    present = [m for m in MODALITIES if m in ref.images and ref.images[m].exists()]
    missing = [m for m in modalities if m not in present]
    if missing:
        absent = [ref.images[m].name for m in missing if m in ref.images]
        files = f"; no file {', '.join(absent)}" if absent else ""
        raise StudyError(
            f"{prefix}: missing modality {', '.join(missing)} (has {', '.join(present) or 'none'}{files})"
        )
    try:
        headers = {m: read_header(ref.images[m], max_voxels) for m in modalities}
        first, first_name = headers[modalities[0]], ref.images[modalities[0]].name
        for m in modalities[1:]:
            _check_same_geometry(headers[m], ref.images[m].name, first, first_name)
        label_image = None
        if with_label and ref.label is not None:
            label_image = read_header(ref.label, max_voxels)
            _check_same_geometry(label_image, ref.label.name, first, first_name)
        ornt = nib.orientations.io_orientation(first.affine)
        channels = []
        for m in modalities:
            data = read_data(headers[m], ref.images[m].name)
            _check_finite(data, ref.images[m].name)
            if not data.any():
                raise StudyError(f"{ref.images[m].name}: volume is all zero")
            channels.append(nib.orientations.apply_orientation(data, ornt))
        label = None
        if label_image is not None:
            label = to_canonical_label(label_image, ref, ornt)
    except StudyError as exc:
        message = str(exc)
        raise StudyError(message if message.startswith(prefix) else f"{prefix}: {message}") from None
    zooms = np.sqrt((first.affine[:3, :3] ** 2).sum(axis=0))  # voxel sizes of the affine, not pixdim
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = zooms
    return Volume(
        ref=ref,
        modalities=tuple(modalities),
        image=np.ascontiguousarray(np.stack(channels), dtype=np.float32),
        label=label,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        affine=first.affine.copy(),
        native_shape=tuple(int(s) for s in first.shape[:3]),
        orientation=ornt,
        header=first.header.copy(),
    )


def to_canonical_label(image: nib.Nifti1Image, ref: StudyRef, ornt: np.ndarray) -> np.ndarray:
    """Label volume mapped to bmseg's convention (docs/design.md §2), reoriented like the images."""
    name = ref.label.name if ref.label else "label"
    raw = read_data(image, name, dtype=np.float64)
    _check_finite(raw, name)
    if not np.array_equal(raw, np.round(raw)):
        raise StudyError(f"{name}: label values are not integers")
    values = raw.astype(np.int64)
    if ref.label_map:
        mapped = values.copy()
        for source, target in ref.label_map.items():
            mapped[values == source] = target
        values = mapped
    present = set(np.unique(values).tolist())
    allowed = {0, 1} if ref.label_kind == "enhancing" else set(LABEL_VALUES)
    outside = sorted(present - allowed)
    if outside:
        raise StudyError(f"{name}: label values {outside} outside {sorted(allowed)}")
    if ref.label_kind == "enhancing":
        values = values * 3
    return nib.orientations.apply_orientation(values.astype(np.uint8), ornt).astype(np.uint8)


def check_study(
    ref: StudyRef, modalities: tuple[str, ...] = MODALITIES, max_voxels: int | None = None
) -> Volume:
    """Validate a whole study (headers, geometry, data, labels); returns the loaded volume."""
    return load_study(ref, modalities=modalities, max_voxels=max_voxels)


# ---------------------------------------------------------------------------------------------- writing


def to_native(array: np.ndarray, volume: Volume) -> np.ndarray:
    """Undo the canonical reorientation of a ``(X, Y, Z)`` array: back to the file's voxel axes."""
    canonical = nib.orientations.axcodes2ornt(("R", "A", "S"))
    back = nib.orientations.ornt_transform(canonical, volume.orientation)
    native = nib.orientations.apply_orientation(array, back)
    if tuple(native.shape) != volume.native_shape:
        raise ValueError(f"mask shape {native.shape} does not match the study's {volume.native_shape}")
    return native


def save_mask(mask: np.ndarray, volume: Volume, path: str | Path) -> Path:
    """Write a canonical-orientation label mask in exactly the study's native shape and affine."""
    native = to_native(np.asarray(mask, dtype=np.uint8), volume)
    header = nib.Nifti1Header()
    header.set_xyzt_units(*volume.header.get_xyzt_units())
    return write_nifti(native, volume.affine, path, header=header, dtype=np.uint8)
