"""DICOM headers into series: read without pixel data, grouped by SeriesInstanceUID, and the geometry of
one series checked and turned into an affine.

Voxel order (the contract every bmcore.dicom module keeps): slices are sorted along the normal
``n = row direction × column direction`` (increasing); ``data[i, j, k]`` is the pixel at column ``i``,
row ``j`` of the ``k``-th slice; the affine maps ``(i, j, k)`` to RAS millimetres (DICOM patient
coordinates are LPS: ``x_ras = -x_lps``, ``y_ras = -y_lps``).
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

from bmcore.dicom.archive import SourceFile
from bmcore.dicom.errors import DicomError

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ORIENTATION_TOLERANCE = 1e-4  # direction cosines that differ by more are a different orientation
SPACING_TOLERANCE = 0.01  # slice gaps may differ from the median gap by this fraction of it …
SPACING_FLOOR_MM = 0.005  # … or by this many millimetres, whichever is larger
DUPLICATE_MM = 0.01  # slices closer than this along the normal share a position
READ_ERRORS = (
    InvalidDicomError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OSError,
    struct.error,
)


@dataclass(frozen=True)
class SliceHeader:
    """One MR image file: what sorting and checking its series needs."""

    file: SourceFile
    sop_instance_uid: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    transfer_syntax: str
    sop_class_uid: str


@dataclass
class Series:
    """The files of one SeriesInstanceUID, with the series-level attributes of its first file."""

    uid: str
    number: int | None
    description: str
    protocol: str
    sop_class_uid: str
    study_uid: str
    frame_of_reference_uid: str
    attributes: dict[str, object] = field(default_factory=dict)
    slices: list[SliceHeader] = field(default_factory=list)
    files: int = 0

    @property
    def label(self) -> str:
        number = "-" if self.number is None else str(self.number)
        return f'series {number} "{self.description}"' if self.description else f"series {number}"

    @property
    def is_mr_image(self) -> bool:
        return self.sop_class_uid == MR_IMAGE_STORAGE

    @property
    def sop_class_name(self) -> str:
        return UID(self.sop_class_uid).name if self.sop_class_uid else "no SOP class"


@dataclass(frozen=True)
class StackGeometry:
    """A checked series: its slices in voxel order, the array shape ``(columns, rows, slices)`` and the
    RAS affine."""

    slices: list[SliceHeader]
    shape: tuple[int, int, int]
    affine: np.ndarray


# ---------------------------------------------------------------------------------------------- reading


def _is_dicom_file(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else " ".join(str(value).split())


def _number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return float(value[0] if isinstance(value, MultiValue) else value)


def _attributes(ds: Dataset) -> dict[str, object]:
    """The sequence attributes that identification reads (times in ms)."""
    return {
        "echo_time": _number(ds, "EchoTime"),
        "repetition_time": _number(ds, "RepetitionTime"),
        "inversion_time": _number(ds, "InversionTime"),
        "sequence": " ".join(
            str(v) for keyword in ("ScanningSequence", "SequenceVariant") for v in _values(ds.get(keyword))
        ),
        "image_type": "\\".join(str(v) for v in _values(ds.get("ImageType"))),
        "contrast_agent": _text(ds, "ContrastBolusAgent"),
    }


def _values(value: object) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _floats(ds: Dataset, keyword: str, count: int, file: SourceFile) -> tuple[float, ...]:
    values = _values(ds.get(keyword))
    if len(values) != count:
        raise DicomError(f"{file.name}: truncated or incomplete MR image (no valid {keyword})")
    result = tuple(float(v) for v in values)
    if not np.isfinite(result).all():
        raise DicomError(f"{file.name}: {keyword} is not finite")
    return result


def _slice_header(ds: Dataset, file: SourceFile, sop_class: str) -> SliceHeader:
    for keyword in ("SOPInstanceUID", "Rows", "Columns"):
        if not ds.get(keyword):
            raise DicomError(f"{file.name}: truncated or incomplete MR image (no {keyword})")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if not syntax:
        raise DicomError(f"{file.name}: no transfer syntax in the file meta information")
    return SliceHeader(
        file=file,
        sop_instance_uid=str(ds.SOPInstanceUID),
        position=_floats(ds, "ImagePositionPatient", 3, file),
        orientation=_floats(ds, "ImageOrientationPatient", 6, file),
        pixel_spacing=_floats(ds, "PixelSpacing", 2, file),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        transfer_syntax=str(syntax),
        sop_class_uid=sop_class,
    )


def _new_series(ds: Dataset, uid: str, sop_class: str) -> Series:
    number = ds.get("SeriesNumber")
    return Series(
        uid=uid,
        number=None if number in (None, "") else int(number),
        description=_text(ds, "SeriesDescription"),
        protocol=_text(ds, "ProtocolName"),
        sop_class_uid=sop_class,
        study_uid=_text(ds, "StudyInstanceUID"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        attributes=_attributes(ds),
    )


def read_dataset(path: Path, stop_before_pixels: bool) -> Dataset:
    """``pydicom.dcmread`` with its warnings silenced: they may quote header values, patient data too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)


def _add_file(found: dict[str, Series], file: SourceFile) -> None:
    ds = read_dataset(file.path, stop_before_pixels=True)
    meta_class = str(ds.file_meta.get("MediaStorageSOPClassUID") or "")
    sop_class = str(ds.get("SOPClassUID") or "") or meta_class
    if meta_class and sop_class != meta_class:
        raise DicomError(
            f"{file.name}: truncated or inconsistent DICOM file (its SOP class disagrees with its meta)"
        )
    uid = _text(ds, "SeriesInstanceUID")
    if not uid:
        if sop_class == MR_IMAGE_STORAGE:
            raise DicomError(f"{file.name}: truncated or incomplete MR image (no SeriesInstanceUID)")
        return  # a DICOMDIR or another file that belongs to no series
    series = found.get(uid) or found.setdefault(uid, _new_series(ds, uid, sop_class))
    series.files += 1
    if sop_class != series.sop_class_uid:
        raise DicomError(f"{series.label}: mixes {series.sop_class_name} and {UID(sop_class).name} files")
    if sop_class == MR_IMAGE_STORAGE:
        series.slices.append(_slice_header(ds, file, sop_class))


def read_series(files: Iterable[SourceFile]) -> tuple[list[Series], int]:
    """Every series among ``files`` (ordered by series number, then UID), and how many files were not
    DICOM (skipped). A DICOM file that cannot be read, or an MR image missing what its geometry needs,
    is refused: a truncated file is never skipped silently."""
    found: dict[str, Series] = {}
    skipped = 0
    for file in files:
        try:
            if not _is_dicom_file(file.path):
                skipped += 1
                continue
            _add_file(found, file)
        except READ_ERRORS as exc:
            if isinstance(exc, DicomError):
                raise
            raise DicomError(f"{file.name}: truncated or corrupt DICOM file ({type(exc).__name__})") from None
    ordered = sorted(found.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))
    return ordered, skipped


# --------------------------------------------------------------------------------------------- geometry


def _check_same(series: Series, values: list, what: str, tolerance: float = 0.0) -> None:
    array = np.asarray(values, dtype=np.float64)
    if np.abs(array - array[0]).max() > tolerance:
        raise DicomError(f"{series.label}: slices have different {what}")


def _directions(series: Series, orientation: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    lengths_ok = np.allclose([np.linalg.norm(row), np.linalg.norm(column)], 1.0, atol=1e-3)
    if not lengths_ok or abs(float(row @ column)) > 1e-3:
        raise DicomError(f"{series.label}: ImageOrientationPatient is not two orthogonal unit vectors")
    return row / np.linalg.norm(row), column / np.linalg.norm(column)


def _sorted_positions(series: Series, normal: np.ndarray) -> tuple[list[SliceHeader], np.ndarray]:
    """The slices sorted along ``normal``, after the checks for duplicates, spacing and shear."""
    positions = np.asarray([s.position for s in series.slices], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    gaps = np.diff(along[order])
    duplicates = int((gaps < DUPLICATE_MM).sum())
    if duplicates:
        raise DicomError(
            f"{series.label}: {duplicates} slice(s) repeat another's position (duplicates, or several "
            "volumes in one series)"
        )
    spacing = float(np.median(gaps))
    if np.abs(gaps - spacing).max() > max(SPACING_TOLERANCE * spacing, SPACING_FLOOR_MM):
        raise DicomError(
            f"{series.label}: inconsistent slice spacing ({gaps.min():.4g} to {gaps.max():.4g} mm; "
            "a missing slice?)"
        )
    ordered = positions[order]
    offsets = ordered - ordered[0]
    sideways = offsets - np.outer(offsets @ normal, normal)
    if np.abs(sideways).max() > max(SPACING_TOLERANCE * spacing, SPACING_FLOOR_MM):
        raise DicomError(f"{series.label}: slices are not stacked along their normal (gantry tilt or shear)")
    return [series.slices[i] for i in order], ordered


def stack_geometry(series: Series) -> StackGeometry:
    """Check one MR series as a volume and build its affine (see the module docstring for voxel order).

    Refuses fewer than two slices, slices that differ in orientation, size or pixel spacing, duplicate
    positions, slice gaps that differ by more than a small fraction of the spacing, and sheared stacks.
    """
    if not series.is_mr_image:
        raise DicomError(f"{series.label}: {series.sop_class_name}, not MR Image Storage")
    if len(series.slices) < 2:
        raise DicomError(f"{series.label}: {len(series.slices)} slice(s), not a volume")
    slices = series.slices
    _check_same(
        series,
        [s.orientation for s in slices],
        "orientations (ImageOrientationPatient)",
        ORIENTATION_TOLERANCE,
    )
    _check_same(series, [(s.rows, s.columns) for s in slices], "sizes (Rows, Columns)")
    _check_same(series, [s.pixel_spacing for s in slices], "pixel spacing", 1e-4)
    row, column = _directions(series, slices[0].orientation)
    normal = np.cross(row, column)
    ordered, positions = _sorted_positions(series, normal)
    row_spacing, column_spacing = slices[0].pixel_spacing  # between rows, between columns
    if min(row_spacing, column_spacing) <= 0:
        raise DicomError(f"{series.label}: PixelSpacing is not positive")
    lps = np.eye(4)
    lps[:3, 0] = row * column_spacing
    lps[:3, 1] = column * row_spacing
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(ordered) - 1)
    lps[:3, 3] = positions[0]
    shape = (slices[0].columns, slices[0].rows, len(ordered))
    return StackGeometry(ordered, shape, LPS_TO_RAS @ lps)
