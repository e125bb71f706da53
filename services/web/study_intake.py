"""Taking an uploaded study in: its identifiers, the group it goes into, its patient and its row.

The files are checked and staged by :mod:`.uploads`; this module decides where the study belongs. The
group comes first (:func:`services.web.access.upload_group`: a group of the uploader, by default their
only one), and the pseudonym is looked up **within that group only**: an upload never attaches to, nor
reveals, a patient of another group, whatever its pseudonym. On any refusal no file and no row remain.
The database part (identifiers, the patient within its group, the row) is
:mod:`bmcore.patients.studies`, which the worker's DICOM import shares; here its refusals become 4xx.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from bmcore.db import Group, Study, User
from bmcore.patients import studies
from services.web.access import upload_group
from services.web.common import WebError
from services.web.uploads import StagedStudy, UploadError, check_upload_fields, stage_study


def check_identifiers(patient_id: str | None, study_uid: str | None) -> tuple[str, str]:
    """The patient pseudonym and study uid (generated when empty), or 400."""
    try:
        return studies.check_identifiers(patient_id, study_uid)
    except studies.StudyIdError as exc:
        raise UploadError(400, str(exc)) from None


def refuse_existing(session: Session, uploads_dir: Path, study_uid: str) -> Path:
    """The study's final folder; 409 when a row or a folder of that uid exists already."""
    try:
        return studies.refuse_existing(session, uploads_dir, study_uid)
    except studies.StudyExists as exc:
        raise UploadError(409, str(exc)) from None


def register_study(
    session: Session,
    staged: StagedStudy,
    patient_id: str,
    study_uid: str,
    owner_id: int | None,
    group: Group,
) -> Study:
    """The study's row, with its patient found (or made) by pseudonym within ``group``; committed. On
    failure the folder is removed (409 when a study of that uid was stored meanwhile)."""
    stored = studies.StoredStudy(staged.folder, staged.stored, staged.shape, staged.spacing, staged.checksum)
    try:
        return studies.register_study(session, stored, patient_id, study_uid, owner_id, group)
    except studies.StudyExists as exc:
        raise UploadError(409, str(exc)) from None


def store_study_upload(
    session: Session,
    files: Mapping[str, FileStorage],
    patient_id: str | None,
    study_uid: str | None,
    owner: User,
    uploads_dir: Path,
    max_voxels: int,
    group: str | None = None,
) -> Study:
    """Check, store and register one study ``owner`` uploaded into ``group`` (a name, or None for their
    default group); raises ``UploadError`` (nothing kept) when refused."""
    patient_id, study_uid = check_identifiers(patient_id, study_uid)
    try:
        target = upload_group(session, owner, group)
        present = check_upload_fields(files)
        final = refuse_existing(session, uploads_dir, study_uid)
        staged = stage_study(present, uploads_dir, study_uid, final, max_voxels)
    except BaseException as exc:
        session.rollback()  # a personal group made for this upload goes too
        if isinstance(exc, WebError) and not isinstance(exc, UploadError):
            raise UploadError(exc.status, exc.message) from None
        raise
    return register_study(session, staged, patient_id, study_uid, owner.id, target)
