"""A DICOM MR series written from a NIfTI volume: what RTSTRUCT and DICOM-SEG point at for a study that
did not come from DICOM.

One MR Image Storage instance per slice ``k`` (``data[:, :, k]``, the voxel order of
:mod:`bmcore.dicom.geometry`), new UIDs, real pixel data: integer volumes that fit 16 bits are stored as
they are (unsigned, or signed when negative), anything else is mapped linearly onto 0–4095 (a display
range: the series is a reference for contours, not a quantitative image). The files are named
``slice_<k+1>.dcm`` with Instance Number ``k + 1``; a left-handed NIfTI grid (determinant < 0) still gets
exactly its geometry, only its slices then run against the slice normal.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
from pydicom.uid import MRImageStorage, generate_uid

from bmcore import imaging
from bmcore.dicom.errors import DicomError
from bmcore.dicom.geometry import SeriesGeometry, ds, series_geometry
from bmcore.dicom.instance import (
    add_equipment,
    add_patient_and_study,
    check_pseudonym,
    new_instance,
    replace_path,
    save_atomic,
)

DISPLAY_MAX = 4095


def stored_pixels(data: np.ndarray, name: str) -> np.ndarray:
    """The volume as 16-bit integers: as is when it is integral and fits, else scaled onto 0–4095."""
    if not np.isfinite(data).all():
        raise DicomError(f"{name}: NaN or infinite voxels; cannot write DICOM")
    low, high = float(data.min()), float(data.max())
    if np.array_equal(data, np.round(data)):
        if low >= 0 and high <= np.iinfo(np.uint16).max:
            return data.astype(np.uint16)
        if low >= np.iinfo(np.int16).min and high <= np.iinfo(np.int16).max:
            return data.astype(np.int16)
    scale = DISPLAY_MAX / (high - low) if high > low else 0.0
    return np.round((data.astype(np.float64) - low) * scale).astype(np.uint16)


def _slice_dataset(
    geometry: SeriesGeometry,
    pixels: np.ndarray,
    k: int,
    uids: dict[str, str],
    pseudonym: str,
    series: tuple[int, str],
):
    """Slice ``k`` as an MR Image Storage instance (every module the IOD requires)."""
    item = new_instance(MRImageStorage, uids["sop"])
    add_patient_and_study(item, pseudonym, uids["study"])
    add_equipment(item)
    item.Modality = "MR"
    item.SeriesInstanceUID = uids["series"]
    item.SeriesNumber, item.SeriesDescription = series
    item.FrameOfReferenceUID = uids["frame"]
    item.PositionReferenceIndicator = ""
    item.InstanceNumber = k + 1
    item.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    item.BodyPartExamined = "BRAIN"  # unpaired, so no Laterality
    item.PatientPosition = ""  # type 2C, unknown: a NIfTI file does not record it
    item.ImageOrientationPatient = ds(geometry.orientation)
    item.ImagePositionPatient = ds(geometry.positions[k])
    item.PixelSpacing = ds(geometry.pixel_spacing)
    item.SliceThickness = ds([geometry.slice_thickness])[0]
    item.SpacingBetweenSlices = ds([geometry.slice_thickness])[0]
    item.SliceLocation = ds([float(np.dot(geometry.positions[k], geometry.normal))])[0]
    item.ScanningSequence, item.SequenceVariant, item.ScanOptions = "RM", "NONE", ""
    item.MRAcquisitionType = "3D"
    item.RepetitionTime, item.EchoTime, item.EchoTrainLength = "", "", ""
    plane = np.ascontiguousarray(pixels[:, :, k].T)  # rows = j, columns = i
    item.SamplesPerPixel, item.PhotometricInterpretation = 1, "MONOCHROME2"
    item.Rows, item.Columns = geometry.rows, geometry.columns
    item.BitsAllocated, item.BitsStored, item.HighBit = 16, 16, 15
    item.PixelRepresentation = 1 if plane.dtype == np.int16 else 0
    item.PixelData = plane.tobytes()
    return item


def _window(pixels: np.ndarray) -> tuple[str, str]:
    low, high = np.percentile(pixels, [1, 99.5])
    width = max(float(high - low), 1.0)
    return ds([low + width / 2])[0], ds([width])[0]


def write_mr_series(
    nifti_path: Path,
    out_dir: Path,
    pseudonym: str,
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 901,
    series_description: str = "T1 post-contrast (bmseg)",
) -> list[Path]:
    """Write the NIfTI volume at ``nifti_path`` as an MR series into the folder ``out_dir``.

    Returns the files in slice order (index ``k``). New Study and Frame of Reference UIDs unless given
    (pass them to put several series in one study). ``out_dir`` is replaced as a whole, atomically: the
    series is written into a temporary sibling folder first, so a failure leaves nothing behind.
    """
    pseudonym = check_pseudonym(pseudonym)
    nifti_path, out_dir = Path(nifti_path), Path(out_dir)
    try:
        image = imaging.read_header(nifti_path)
        data = imaging.read_data(image, nifti_path.name)
    except imaging.StudyError as exc:
        raise DicomError(str(exc)) from None
    geometry = series_geometry(image.affine, data.shape, nifti_path.name)
    pixels = stored_pixels(data, nifti_path.name)
    center, width = _window(pixels)
    uids = {
        "study": study_instance_uid or generate_uid(),
        "series": generate_uid(),
        "frame": frame_of_reference_uid or generate_uid(),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".tmp-{uuid.uuid4().hex}"
    try:
        names = []
        for k in range(geometry.shape[2]):
            item = _slice_dataset(
                geometry,
                pixels,
                k,
                uids | {"sop": generate_uid()},
                pseudonym,
                (series_number, series_description),
            )
            item.WindowCenter, item.WindowWidth = center, width
            names.append(save_atomic(item, staging / f"slice_{k + 1:04d}.dcm").name)
        replace_path(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out_dir / name for name in names]
