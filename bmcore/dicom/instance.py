"""What every DICOM instance bmseg writes shares: file meta, a pseudonymous Patient module, the Study
and the equipment (bmseg), and an atomic write.

No PHI: the Patient module holds only the pseudonym (as Patient's Name and Patient ID, Patient Identity
Removed YES), and the study's date, time, accession number, study ID and referring physician are left
empty (type 2), whatever the source series had: bmseg never stores those.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bmcore.dicom.errors import DicomError

MANUFACTURER = "bmseg"
MODEL_NAME = "bmseg"
try:
    SOFTWARE_VERSION = version("bmseg")
except PackageNotFoundError:  # a source tree that is not installed
    SOFTWARE_VERSION = "unknown"
MAX_PSEUDONYM = 64  # LO: Patient ID


def check_pseudonym(pseudonym: str) -> str:
    """A pseudonym fit for Patient ID and Patient's Name: 1–64 printable characters, no backslash."""
    text = str(pseudonym).strip()
    if not text or len(text) > MAX_PSEUDONYM or "\\" in text or not text.isprintable():
        raise DicomError(f"the pseudonym must be 1-{MAX_PSEUDONYM} printable characters without a backslash")
    return text


def new_instance(sop_class_uid: str, sop_instance_uid: str, implicit_vr: bool = False) -> Dataset:
    """An empty instance with its file meta and SOP Common module (ISO_IR 192, UTF-8)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    now = dt.datetime.now()
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    return ds


def add_patient_and_study(ds: Dataset, pseudonym: str, study_instance_uid: str) -> None:
    """The Patient module (pseudonym only) and the General Study module (UID only)."""
    pseudonym = check_pseudonym(pseudonym)
    ds.PatientName = f"{pseudonym}^"  # the family-name component (a bare name is a retired form)
    ds.PatientID = pseudonym
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "bmseg: pseudonym only"
    ds.StudyInstanceUID = study_instance_uid
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""


def add_equipment(ds: Dataset) -> None:
    """The General Equipment module: bmseg made this instance."""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.SoftwareVersions = SOFTWARE_VERSION


def save_atomic(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file (preamble and file meta) via a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".tmp-{uuid.uuid4().hex}.dcm"
    try:
        ds.save_as(temp, enforce_file_format=True)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def replace_path(new: Path, target: Path) -> None:
    """Move the file or folder ``new`` to ``target``, replacing what was there."""
    if target.is_dir() and not target.is_symlink():
        old = target.parent / f".old-{uuid.uuid4().hex}"
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)
