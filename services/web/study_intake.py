"""Taking an uploaded study in: its identifiers, the group it goes into, its patient and its row.

The files are checked and staged by :mod:`.uploads`; this module decides where the study belongs. The
group comes first (:func:`services.web.access.upload_group`: a group of the uploader, by default their
only one), and the pseudonym is looked up **within that group only**: an upload never attaches to, nor
reveals, a patient of another group, whatever its pseudonym. On any refusal no file and no row remain.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from bmcore.db import Group, Patient, Study, User
from services.web.access import upload_group
from services.web.common import WebError
from services.web.uploads import (
    IDENTIFIER,
    LABEL_FIELD,
    StagedStudy,
    UploadError,
    check_upload_fields,
    stage_study,
)


def check_identifiers(patient_id: str | None, study_uid: str | None) -> tuple[str, str]:
    """The patient pseudonym and study uid (generated when empty), or 400."""
    patient_id = (patient_id or "").strip()
    if not IDENTIFIER.match(patient_id):
        raise UploadError(
            400, "patient_id must be 1-64 characters: letters, digits, '_' or '-' (a pseudonym)"
        )
    study_uid = (study_uid or "").strip() or f"study-{uuid.uuid4().hex[:16]}"
    if not IDENTIFIER.match(study_uid):
        raise UploadError(400, "study_uid must be 1-64 characters: letters, digits, '_' or '-'")
    return patient_id, study_uid


def refuse_existing(session: Session, uploads_dir: Path, study_uid: str) -> Path:
    """The study's final folder; 409 when a row or a folder of that uid exists already."""
    if session.scalars(select(Study.id).where(Study.study_uid == study_uid)).first() is not None:
        raise UploadError(409, f"a study {study_uid} already exists")
    uploads_dir.mkdir(parents=True, exist_ok=True)
    final = uploads_dir / study_uid
    if final.exists():
        raise UploadError(409, f"a study folder {study_uid} already exists")
    return final


def register_study(
    session: Session,
    staged: StagedStudy,
    patient_id: str,
    study_uid: str,
    owner_id: int | None,
    group: Group,
) -> Study:
    """The study's row, with its patient found (or made) by pseudonym within ``group``; committed. On
    failure the folder is removed."""
    stored = staged.stored
    try:
        patient = session.scalars(
            select(Patient).where(Patient.pseudonym == patient_id, Patient.group_id == group.id)
        ).one_or_none()
        if patient is None:
            patient = Patient(pseudonym=patient_id, group=group)
            session.add(patient)
        study = Study(
            patient=patient,
            study_uid=study_uid,
            directory=str(staged.folder),
            files={field: str(path) for field, path in stored.items() if field != LABEL_FIELD},
            label_path=str(stored[LABEL_FIELD]) if LABEL_FIELD in stored else None,
            shape=staged.shape,
            spacing=staged.spacing,
            checksum=staged.checksum,
            owner_id=owner_id,
        )
        session.add(study)
        session.commit()
    except IntegrityError:
        session.rollback()
        shutil.rmtree(staged.folder, ignore_errors=True)
        raise UploadError(409, f"a study {study_uid} already exists") from None
    except BaseException:
        session.rollback()
        shutil.rmtree(staged.folder, ignore_errors=True)
        raise
    return study


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
