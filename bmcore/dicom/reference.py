"""The image series an RTSTRUCT or DICOM-SEG points at.

A study imported from DICOM keeps its source series' UIDs in ``dicom_source.json`` (written by
:func:`bmcore.dicom.import_dicom`); its T1 post-contrast NIfTI is exactly that series' grid, so the
reference is rebuilt from the recorded UIDs and the NIfTI geometry: nothing of the source headers is
read again, and nothing but the pseudonym goes into the Patient module. Any other study gets a new MR
series written from its T1 post-contrast volume (:func:`bmcore.dicom.write_mr_series`), and the outputs
point at that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from bmcore import imaging
from bmcore.dicom.errors import DicomError
from bmcore.dicom.geometry import SeriesGeometry, ds, series_geometry
from bmcore.dicom.instance import add_patient_and_study, check_pseudonym

SOURCE_RECORD = "dicom_source.json"


@dataclass(frozen=True)
class ReferenceSeries:
    """The referenced series: its UIDs, one SOP instance per slice ``k``, and the slices' geometry."""

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    geometry: SeriesGeometry
    pseudonym: str
    series_number: int | None = None
    modality: str = "MR"

    def datasets(self) -> list[Dataset]:
        """Header-only datasets of the slices, ``k`` in order (what highdicom needs of source images)."""
        items = []
        geometry = self.geometry
        for k, sop_uid in enumerate(self.sop_instance_uids):
            item = Dataset()
            add_patient_and_study(item, self.pseudonym, self.study_instance_uid)
            item.SOPClassUID, item.SOPInstanceUID = self.sop_class_uid, sop_uid
            item.Modality = self.modality
            item.SeriesInstanceUID = self.series_instance_uid
            item.SeriesNumber = self.series_number
            item.InstanceNumber = k + 1
            item.FrameOfReferenceUID = self.frame_of_reference_uid
            item.ImageOrientationPatient = ds(geometry.orientation)
            item.ImagePositionPatient = ds(geometry.positions[k])
            item.PixelSpacing = ds(geometry.pixel_spacing)
            item.SliceThickness = ds([geometry.slice_thickness])[0]
            item.Rows, item.Columns = geometry.rows, geometry.columns
            item.SamplesPerPixel, item.PhotometricInterpretation = 1, "MONOCHROME2"
            item.BitsAllocated, item.BitsStored, item.HighBit, item.PixelRepresentation = 16, 16, 15, 0
            items.append(item)
        return items


def t1ce_geometry(t1ce_path: Path) -> SeriesGeometry:
    """The DICOM geometry of the study's T1 post-contrast NIfTI grid."""
    try:
        image = imaging.read_header(Path(t1ce_path))
    except imaging.StudyError as exc:
        raise DicomError(str(exc)) from None
    return series_geometry(image.affine, image.shape[:3], Path(t1ce_path).name)


def _uid(value, what: str) -> str:
    if not isinstance(value, str) or not UID(value).is_valid:
        raise DicomError(f"{SOURCE_RECORD}: {what} is not a valid UID")
    return value


def read_source_record(study_dir: Path) -> dict | None:
    """The study's ``dicom_source.json`` (None when the study did not come from DICOM)."""
    path = Path(study_dir) / SOURCE_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DicomError(f"{SOURCE_RECORD}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(record, dict) or not isinstance(record.get("series"), dict):
        raise DicomError(f"{SOURCE_RECORD}: expected an object with a 'series' object")
    return record


def from_source_record(record: dict, t1ce_path: Path, pseudonym: str) -> ReferenceSeries:
    """The T1 post-contrast source series of an imported study, rebuilt from its recorded UIDs."""
    series = record["series"].get("t1ce")
    if not isinstance(series, dict):
        raise DicomError(f"{SOURCE_RECORD}: no t1ce series recorded")
    geometry = t1ce_geometry(t1ce_path)
    sop_uids = series.get("sop_instance_uids")
    if not isinstance(sop_uids, list) or len(sop_uids) != geometry.shape[2]:
        count = len(sop_uids) if isinstance(sop_uids, list) else 0
        raise DicomError(
            f"{SOURCE_RECORD}: {count} t1ce SOP instance UIDs for {geometry.shape[2]} slices of "
            f"{Path(t1ce_path).name}"
        )
    sop_uids = [_uid(u, "a t1ce SOP instance UID") for u in sop_uids]
    if len(set(sop_uids)) != len(sop_uids):
        raise DicomError(f"{SOURCE_RECORD}: t1ce SOP instance UIDs repeat (one instance per slice is needed)")
    number = series.get("series_number")
    return ReferenceSeries(
        study_instance_uid=_uid(record.get("study_instance_uid"), "study_instance_uid"),
        series_instance_uid=_uid(series.get("series_instance_uid"), "the t1ce series_instance_uid"),
        frame_of_reference_uid=_uid(record.get("frame_of_reference_uid"), "frame_of_reference_uid"),
        sop_class_uid=_uid(series.get("sop_class_uid"), "the t1ce sop_class_uid"),
        sop_instance_uids=tuple(sop_uids),
        geometry=geometry,
        pseudonym=check_pseudonym(pseudonym),
        series_number=number if isinstance(number, int) and not isinstance(number, bool) else None,
        modality=series.get("modality") if series.get("modality") in ("MR", "CT") else "MR",
    )


def from_written_series(files: list[Path], t1ce_path: Path, pseudonym: str) -> ReferenceSeries:
    """A series :func:`bmcore.dicom.write_mr_series` wrote from ``t1ce_path`` (``files`` in slice order)."""
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    first = headers[0]
    return ReferenceSeries(
        study_instance_uid=str(first.StudyInstanceUID),
        series_instance_uid=str(first.SeriesInstanceUID),
        frame_of_reference_uid=str(first.FrameOfReferenceUID),
        sop_class_uid=str(first.SOPClassUID),
        sop_instance_uids=tuple(str(h.SOPInstanceUID) for h in headers),
        geometry=t1ce_geometry(t1ce_path),
        pseudonym=check_pseudonym(pseudonym),
        series_number=int(first.SeriesNumber),
    )
