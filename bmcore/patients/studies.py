"""Registering a stored study: its patient (found or made by pseudonym within a group) and its row.

Shared by the web's NIfTI upload (:mod:`services.web.study_intake`) and the worker's DICOM import
(:mod:`bmcore.jobs.ingest`), so both attach a study to a patient the same way: the pseudonym is looked up
**within the study's group only** (a patient of the same pseudonym in another group is never touched nor
revealed). The caller has stored and checked the study's folder; :func:`register_study` writes the row
and commits, and removes the folder when the row cannot be written, so nothing is left half-stored.
:func:`attach_label` keeps a known ground truth with a stored study that has none (the demo's DICOM
study, made from a synthetic one), checked against its T1ce grid.
Torch-free (the web imports it).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bmcore.db import Group, Patient, Study
from bmcore.imaging import (
    BRATS_SUFFIX,
    MODALITIES,
    UCSF_SUFFIX,
    StudyError,
    check_same_geometry,
    read_header,
    sanitize_nifti_file,
    study_from_dir,
)

# A pseudonym or a study uid: letters, digits, '_' and '-' (never a name, never a path).
IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PATIENT_ID_RULE = "patient_id must be 1-64 characters: letters, digits, '_' or '-' (a pseudonym)"
STUDY_UID_RULE = "study_uid must be 1-64 characters: letters, digits, '_' or '-'"
LABEL_FIELD = "seg"
CHUNK_BYTES = 1 << 20


class StudyIdError(ValueError):
    """A pseudonym or study uid that is not an identifier."""


class StudyExists(ValueError):
    """A study of this uid exists already (a row or a folder)."""


def check_identifiers(patient_id: str | None, study_uid: str | None) -> tuple[str, str]:
    """The patient pseudonym and the study uid (generated when empty), stripped; ``StudyIdError``."""
    patient_id = (patient_id or "").strip()
    if not IDENTIFIER.match(patient_id):
        raise StudyIdError(PATIENT_ID_RULE)
    study_uid = (study_uid or "").strip() or f"study-{uuid.uuid4().hex[:16]}"
    if not IDENTIFIER.match(study_uid):
        raise StudyIdError(STUDY_UID_RULE)
    return patient_id, study_uid


def refuse_existing(session: Session, uploads_dir: Path, study_uid: str) -> Path:
    """The study's final folder ``uploads_dir/<study_uid>``; ``StudyExists`` when a row or a folder of
    that uid exists already."""
    if session.scalars(select(Study.id).where(Study.study_uid == study_uid)).first() is not None:
        raise StudyExists(f"a study {study_uid} already exists")
    uploads_dir.mkdir(parents=True, exist_ok=True)
    final = uploads_dir / study_uid
    if final.exists():
        raise StudyExists(f"a study folder {study_uid} already exists")
    return final


@dataclass(frozen=True)
class StoredStudy:
    """A checked study folder in its final place, before its row exists: the files by field (the four
    modalities and perhaps ``seg``), the grid's shape, the voxel spacing (mm) and the files' checksum."""

    folder: Path
    stored: dict[str, Path]
    shape: list[int]
    spacing: list[float]
    checksum: str


def files_checksum(paths: Mapping[str, Path]) -> str:
    """sha256 over a study's files, in field order (field name, then bytes, for each file)."""
    digest = hashlib.sha256()
    for field in (*MODALITIES, LABEL_FIELD):
        if field in paths:
            digest.update(field.encode() + b"\x00")
            with Path(paths[field]).open("rb") as handle:
                while block := handle.read(CHUNK_BYTES):
                    digest.update(block)
    return digest.hexdigest()


def describe_stored(folder: Path, stored: Mapping[str, Path], max_voxels: int) -> StoredStudy:
    """A study folder's facts from its files' headers: every file on the first one's grid (else
    ``bmcore.imaging.StudyError``), the shape, the spacing and the checksum."""
    paths = {field: Path(stored[field]) for field in (*MODALITIES, LABEL_FIELD) if field in stored}
    shape = check_same_geometry(paths, max_voxels)
    zooms = read_header(paths[MODALITIES[0]], max_voxels).header.get_zooms()[:3]
    return StoredStudy(
        folder=folder,
        stored=paths,
        shape=list(shape),
        spacing=[round(float(z), 6) for z in zooms],
        checksum=files_checksum(paths),
    )


def register_study(
    session: Session,
    stored: StoredStudy,
    patient_id: str,
    study_uid: str,
    owner_id: int | None,
    group: Group,
) -> Study:
    """The study's row, with its patient found (or made) by pseudonym within ``group``; committed.

    On failure the session is rolled back and the study's folder removed; a row of the same uid written
    meanwhile raises ``StudyExists``.
    """
    try:
        patient = session.scalars(
            select(Patient).where(Patient.pseudonym == patient_id, Patient.group_id == group.id)
        ).one_or_none()
        if patient is None:
            patient = Patient(pseudonym=patient_id, group=group)
            session.add(patient)
        files = stored.stored
        study = Study(
            patient=patient,
            study_uid=study_uid,
            directory=str(stored.folder),
            files={field: str(path) for field, path in files.items() if field != LABEL_FIELD},
            label_path=str(files[LABEL_FIELD]) if LABEL_FIELD in files else None,
            shape=stored.shape,
            spacing=stored.spacing,
            checksum=stored.checksum,
            owner_id=owner_id,
        )
        session.add(study)
        session.commit()
    except IntegrityError:
        session.rollback()
        shutil.rmtree(stored.folder, ignore_errors=True)
        raise StudyExists(f"a study {study_uid} already exists") from None
    except BaseException:
        session.rollback()
        shutil.rmtree(stored.folder, ignore_errors=True)
        raise
    return study


# ------------------------------------------------------------------------------------ ground truth


class LabelRefused(ValueError):
    """A label that cannot be attached to a study; the message is one line."""


def _label_target(study: Study) -> Path:
    """Where a stored study's label goes: the name its folder's layout reads (``<uid>_BraTS-seg`` beside
    ``<uid>_T1post``, ``<uid>-seg`` beside ``<uid>-t1c``)."""
    folder, t1ce = Path(study.directory), Path(study.files.get("t1ce", ""))
    layouts = (("_", UCSF_SUFFIX["t1ce"], "BraTS-seg"), ("-", BRATS_SUFFIX["t1ce"], "seg"))
    for separator, suffix, label in layouts:
        stem = f"{folder.name}{separator}{suffix}"
        if t1ce.name in (f"{stem}.nii.gz", f"{stem}.nii"):
            return folder / f"{folder.name}{separator}{label}.nii.gz"
    raise LabelRefused(f"study {study.study_uid}: its T1ce file is not in a layout bmseg reads")


def attach_label(session: Session, study: Study, label_path: Path, max_voxels: int) -> Path:
    """Attach a ground-truth label (0..3) to a stored study that has none, such as a DICOM import made
    from a synthetic study whose truth is known; committed. Returns the stored file.

    The label must lie on the study's T1ce grid (shape and affine, from the headers); it is stored as an
    upload is (:func:`bmcore.imaging.sanitize_nifti_file`: no extensions, no free text, values 0..3)
    under the name the study's layout reads, and the study's checksum then covers it. ``LabelRefused``
    (nothing written, the row unchanged) otherwise.
    """
    if study.label_path is not None:
        raise LabelRefused(f"study {study.study_uid} has a label already")
    target = _label_target(study)
    if target.exists():
        raise LabelRefused(f"study {study.study_uid}: a label file is in its folder already")
    try:
        check_same_geometry({"t1ce": Path(study.files["t1ce"]), LABEL_FIELD: Path(label_path)}, max_voxels)
        sanitize_nifti_file(Path(label_path), target, max_voxels, label=True)
    except StudyError as exc:
        raise LabelRefused(f"study {study.study_uid}: {exc}") from None
    try:
        if study_from_dir(target.parent).label != target:
            raise LabelRefused(f"study {study.study_uid}: its layout does not read the stored label")
        files = {field: Path(path) for field, path in study.files.items()}
        study.label_path = str(target)
        study.checksum = files_checksum(files | {LABEL_FIELD: target})
        session.commit()
    except BaseException:
        session.rollback()
        target.unlink(missing_ok=True)
        raise
    return target
