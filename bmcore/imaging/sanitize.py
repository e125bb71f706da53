"""Sanitising an uploaded NIfTI file in bounded memory: a clean header, then the voxel data in chunks.

A stored upload gets a header rebuilt from the file's fixed header fields alone: no extensions (where
converters put DICOM sidecars with names, birth dates and accession numbers) and the free-text fields
blanked (:data:`bmcore.imaging.nifti.FREE_TEXT_FIELDS`, ``data_type`` included). The voxel bytes are
copied unchanged (type, byte order and scaling kept), :data:`CHUNK_VOXELS` at a time, and checked on the
way: an image must be finite and not all zero, a label whole numbers in 0..3. Memory stays at a few
chunks whatever the size of the image, and the header-only checks come before any voxel is read.
"""

from __future__ import annotations

import gzip
import os
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np
from nibabel.spatialimages import HeaderDataError

from bmcore.imaging.header import GZIP_MAGIC, PEEK_BYTES, HeaderError, parse_header, peek_header
from bmcore.imaging.layouts import LABEL_VALUES, StudyError
from bmcore.imaging.nifti import clear_free_text, read_header
from bmcore.imaging.volume import AFFINE_TOLERANCE

CHUNK_VOXELS = 1 << 20
STORED_COMPRESSLEVEL = 1  # nibabel's default for .nii.gz: most of the gain, a fraction of the time


class _VoxelCheck:
    """What the voxel data must satisfy, fed chunk by chunk; :meth:`finish` raises what was found."""

    def __init__(self, name: str, label: bool, slope: float | None, inter: float | None) -> None:
        self.name, self.label = name, label
        self.slope, self.inter = slope, inter
        self.not_finite = 0
        self.any_nonzero = False
        self.fractional = False
        self.outside: set[float] = set()

    def feed(self, chunk: np.ndarray) -> None:
        values = chunk
        if self.slope is not None:
            values = chunk.astype(np.float64) * self.slope + (self.inter or 0.0)
        if values.dtype.kind == "f":
            finite = np.isfinite(values)
            self.not_finite += int(values.size - np.count_nonzero(finite))
            values = values[finite]
        if not self.label:
            self.any_nonzero = self.any_nonzero or bool(np.any(values))
            return
        if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
            self.fractional = True
        found = np.unique(values)
        self.outside.update(float(v) for v in found[~np.isin(found, LABEL_VALUES)][:16])

    def finish(self) -> None:
        if self.not_finite:
            raise StudyError(f"{self.name}: {self.not_finite:,} NaN/Inf voxels")
        if self.label and self.fractional:
            raise StudyError(f"{self.name}: label values are not integers")
        if self.label and self.outside:
            shown = sorted(int(v) if v.is_integer() else v for v in self.outside)[:16]
            raise StudyError(f"{self.name}: label values {shown} outside {sorted(LABEL_VALUES)}")
        if not self.label and not self.any_nonzero:
            raise StudyError(f"{self.name}: volume is all zero")


def _scaling(header: nib.Nifti1Header, name: str) -> tuple[float | None, float | None]:
    """The header's (slope, intercept), or (None, None) when the stored values are the values."""
    try:
        slope, inter = header.get_slope_inter()
    except HeaderDataError:
        raise StudyError(f"{name}: invalid scaling (scl_slope, scl_inter) in the NIfTI header") from None
    if slope is None or (slope == 1 and not inter):
        return None, None
    if not (np.isfinite(slope) and np.isfinite(inter or 0.0)):
        raise StudyError(f"{name}: invalid scaling (scl_slope, scl_inter) in the NIfTI header")
    return float(slope), float(inter or 0.0)


def _clean_header(head: bytes, name: str, max_voxels: int) -> tuple[nib.Nifti1Header, int, np.dtype]:
    """The header of ``head`` without extensions and free text, 3D, with the data's offset and type;
    refuses what :func:`bmcore.imaging.nifti.read_header` refuses, from the header alone."""
    try:
        info = peek_header(head, max_voxels)
        header = parse_header(head)
    except HeaderError as exc:
        raise StudyError(f"{name}: not a readable NIfTI file ({exc})") from None
    shape = info.shape[:3] if len(info.shape) == 4 and info.shape[3] == 1 else info.shape
    if len(shape) != 3:
        raise StudyError(f"{name}: array is {len(info.shape)}D {info.shape}, expected 3D")
    if info.dtype is None or info.dtype.kind not in "biuf":
        raise StudyError(f"{name}: unsupported voxel type (expected integers or floats)")
    affine = header.get_best_affine()
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise StudyError(f"{name}: affine is singular or not finite")
    header.set_data_shape(shape)
    clear_free_text(header)
    header["vox_offset"] = 0  # nibabel writes the data right after the header and an empty extension flag
    return header, info.data_offset, info.dtype


def _copy_voxels(source: BinaryIO, target: BinaryIO, voxels: int, dtype: np.dtype, check: _VoxelCheck):
    """Copy ``voxels`` voxels of ``dtype`` from ``source`` to ``target`` in chunks, checking each."""
    remaining = voxels
    while remaining:
        count = min(remaining, CHUNK_VOXELS)
        block = source.read(count * dtype.itemsize)
        if len(block) != count * dtype.itemsize:
            read = voxels - remaining + len(block) // dtype.itemsize
            raise StudyError(f"{check.name}: truncated data ({read:,} of {voxels:,} voxels)")
        check.feed(np.frombuffer(block, dtype=dtype))
        target.write(block)
        remaining -= count


def _open(path: Path) -> BinaryIO:
    with path.open("rb") as handle:
        gzipped = handle.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def sanitize_nifti_file(
    source: Path, target: Path, max_voxels: int, label: bool = False
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Check an uploaded NIfTI (``.nii`` or gzipped) and store it gzipped at ``target``: no extensions,
    no free text, the voxel data as it was (values checked as an image, or as a label when ``label``).

    Returns the shape and zooms; raises :class:`StudyError` for anything unusable (``target`` then absent).
    """
    name = source.name
    temp = target.parent / f".tmp-{uuid.uuid4().hex}.nii.gz"
    try:
        with _open(source) as stream:
            header, offset, dtype = _clean_header(stream.read(PEEK_BYTES), name, max_voxels)
            stream.seek(offset)
            shape = header.get_data_shape()
            check = _VoxelCheck(name, label, *_scaling(header, name))
            with gzip.GzipFile(temp, "wb", compresslevel=STORED_COMPRESSLEVEL, mtime=0) as out:
                header.write_to(out)
                _copy_voxels(stream, out, int(np.prod(shape, dtype=np.int64)), dtype, check)
        check.finish()
        os.replace(temp, target)
    except (OSError, EOFError, zlib.error) as exc:
        raise StudyError(f"{name}: truncated or corrupt data ({type(exc).__name__})") from None
    finally:
        temp.unlink(missing_ok=True)
    return tuple(int(s) for s in shape), tuple(float(z) for z in header.get_zooms()[:3])


def check_same_geometry(paths: Mapping[str, Path], max_voxels: int) -> tuple[int, ...]:
    """Refuse unless every file has the first one's 3D shape and (within tolerance) its affine, from
    the headers alone; returns that shape."""
    images = {key: read_header(path, max_voxels) for key, path in paths.items()}
    (first_key, first), *others = images.items()
    first_name = paths[first_key].name
    for key, image in others:
        name = paths[key].name
        if image.shape[:3] != first.shape[:3]:
            raise StudyError(f"{name}: shape {image.shape[:3]} disagrees with {first_name} {first.shape[:3]}")
        difference = float(np.abs(image.affine - first.affine).max())
        if difference > AFFINE_TOLERANCE:
            raise StudyError(f"{name}: affine disagrees with {first_name}'s (by up to {difference:.3g})")
    return tuple(int(s) for s in first.shape[:3])
