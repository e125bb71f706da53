"""Pixel data of a checked series as one volume, in the voxel order of :mod:`bmcore.dicom.series`.

Stored values become real values through each slice's RescaleSlope and RescaleIntercept. Compressed
transfer syntaxes decode where pydicom has a decoder with its package installed here (pillow: JPEG
baseline / extended and JPEG 2000; pyjpegls: JPEG-LS; pydicom itself: RLE Lossless and deflate); any
other is refused, by name, before a pixel is read.
"""

from __future__ import annotations

import warnings

import numpy as np
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from bmcore.dicom.errors import DicomError
from bmcore.dicom.series import READ_ERRORS, Series, StackGeometry, read_dataset

PIXEL_ERRORS = (*READ_ERRORS, AttributeError, RuntimeError, NotImplementedError)


def check_decodable(series: Series, geometry: StackGeometry) -> None:
    """Refuse a series whose transfer syntax this installation cannot decode (naming the syntax)."""
    for syntax in sorted({s.transfer_syntax for s in geometry.slices}):
        uid = UID(syntax)
        named = f"{uid.name} ({uid})" if uid.name != str(uid) else f"unknown ({uid})"
        if uid.is_private or not uid.is_transfer_syntax:
            raise DicomError(f"{series.label}: transfer syntax {named} is not a DICOM transfer syntax")
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            raise DicomError(
                f"{series.label}: transfer syntax {named} cannot be decoded (no decoder exists)"
            ) from None
        if not decoder.is_available:
            raise DicomError(
                f"{series.label}: transfer syntax {named} cannot be decoded here (no decoder package for it "
                "is installed)"
            )


def _slice_values(path, series: Series, name: str, k: int, shape: tuple[int, int]) -> np.ndarray:
    """One slice's real values as ``(rows, columns)`` float64."""
    where = f"{name} ({series.label}, slice {k + 1})"
    try:
        ds = read_dataset(path, stop_before_pixels=False)
        if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise DicomError(f"{where}: not a single-frame greyscale image")
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise DicomError(
                f"{where}: photometric interpretation {photometric or 'missing'} is not greyscale"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = np.asarray(ds.pixel_array, dtype=np.float64)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except DicomError:
        raise
    except PIXEL_ERRORS as exc:
        reason = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__).split(" - ")[0][:120]
        raise DicomError(f"{where}: pixel data truncated or corrupt ({reason})") from None
    if pixels.shape != shape:
        raise DicomError(f"{where}: pixel data is {pixels.shape}, expected {shape}")
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise DicomError(f"{where}: invalid RescaleSlope / RescaleIntercept")
    return pixels * slope + intercept


def read_volume(series: Series, geometry: StackGeometry, max_voxels: int | None = None) -> np.ndarray:
    """The series as a float32 array ``(columns, rows, slices)``; ``max_voxels`` is checked first."""
    voxels = int(np.prod(geometry.shape, dtype=np.int64))
    if max_voxels is not None and voxels > max_voxels:
        raise DicomError(f"{series.label}: {voxels:,} voxels, over the limit of {max_voxels:,}")
    check_decodable(series, geometry)
    columns, rows, count = geometry.shape
    data = np.empty(geometry.shape, dtype=np.float32)
    for k, item in enumerate(geometry.slices):
        data[:, :, k] = _slice_values(item.file.path, series, item.file.name, k, (rows, columns)).T
    if not np.isfinite(data).all():
        raise DicomError(f"{series.label}: pixel values are not finite after rescaling")
    return data
