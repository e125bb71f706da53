"""Study uploads: four NIfTI modalities (and perhaps a label) in, one checked study folder and row out.

Nothing the client sends is trusted:

* the request size is capped by Flask (``MAX_CONTENT_LENGTH`` = ``settings.max_upload_bytes`` → 413);
* client file names are never used: each file is stored under a name derived from its form field;
* each NIfTI header is read before any voxel data: a gzip stream is expanded with a cap of the size its
  header implies plus 1 MB (a gzip bomb stops there), and ``peek_header`` refuses non-NIfTI, non-3D and
  oversized arrays (``settings.max_voxels``);
* files are stored with their free-text header fields cleared (``sanitize_nifti_file``: names, notes);
* the four modalities must share shape and affine, and ``load_study`` checks NaN, all-zero volumes and
  label values (0..3) on the staged folder.

Everything is written into a temporary folder inside ``uploads_dir`` and renamed into place only when
every check passed; the database row is committed after that. On any failure there is no row and no file.
Stored layout (BraTS-like, so ``bmcore.imaging.find_studies`` reads it)::

    <uploads_dir>/<study_uid>/<study_uid>-{t1n,t1c,t2w,t2f}.nii.gz  [+ <study_uid>-seg.nii.gz]
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from bmcore.db import Patient, Study, User
from bmcore.db.groups import DEFAULT_GROUP, group_named, personal_group
from bmcore.imaging import (
    BRATS_SUFFIX,
    MODALITIES,
    StudyError,
    load_study,
    sanitize_nifti_file,
    study_from_dir,
)
from bmcore.imaging.header import GZIP_MAGIC, PEEK_BYTES, HeaderError, peek_header
from services.web.common import WebError

log = logging.getLogger(__name__)

IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LABEL_FIELD = "seg"
FILE_FIELDS = (*MODALITIES, LABEL_FIELD)
STORED_SUFFIX = {**BRATS_SUFFIX, LABEL_FIELD: "seg"}
# Content types a browser or HTTP client may give a NIfTI file; the content itself is checked anyway.
ALLOWED_FILE_TYPES = frozenset(
    {
        "",
        "application/octet-stream",
        "application/gzip",
        "application/x-gzip",
        "application/x-compressed",
        "application/x-nifti",
        "application/nifti",
        "image/nifti",
        "image/x-nifti",
        "application/vnd.unknown.nifti-1",
    }
)
GZIP_SLACK_BYTES = 1 << 20  # a gzip stream may expand to the header-implied size plus this much
CHUNK_BYTES = 1 << 20

INCOMING_PREFIX = ".incoming-"
STALE_INCOMING_SECONDS = 6 * 3600


class UploadError(WebError):
    """An upload refused; no file and no row remain."""


def purge_stale_incoming(uploads_dir: Path, max_age_seconds: float = STALE_INCOMING_SECONDS) -> int:
    """Remove temporary upload folders a killed web process left behind; returns how many."""
    if not uploads_dir.is_dir():
        return 0
    cutoff = time.time() - max_age_seconds
    removed = 0
    for folder in uploads_dir.glob(f"{INCOMING_PREFIX}*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed


# ------------------------------------------------------------------------------------ header peeking


def implied_nifti_bytes(head: bytes, name: str, max_voxels: int) -> int:
    """The file size a single-file NIfTI-1/2 header implies (data offset + voxels × bytes per voxel).

    Reads only the header (:func:`bmcore.imaging.header.peek_header`), before nibabel loads the file;
    refuses what is not a single-file NIfTI or claims more than ``max_voxels`` voxels.
    """
    try:
        return peek_header(head, max_voxels).file_bytes
    except HeaderError as exc:
        raise UploadError(400, f"{name}: {exc}") from None


def _gunzip_bounded(source: Path, target: Path, name: str, max_voxels: int) -> None:
    """Expand ``source`` into ``target``, never past the header-implied size plus ``GZIP_SLACK_BYTES``."""
    try:
        with gzip.open(source, "rb") as stream, target.open("wb") as dst:
            head = stream.read(PEEK_BYTES)
            limit = implied_nifti_bytes(head, name, max_voxels) + GZIP_SLACK_BYTES
            dst.write(head)
            written = len(head)
            while piece := stream.read(CHUNK_BYTES):
                written += len(piece)
                if written > limit:
                    raise UploadError(
                        400, f"{name}: gzip data expands beyond the size its NIfTI header implies"
                    )
                dst.write(piece)
    except EOFError:
        raise UploadError(400, f"{name}: truncated gzip file") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise UploadError(400, f"{name}: corrupt gzip data ({exc})") from None
    if written < limit - GZIP_SLACK_BYTES:
        raise UploadError(400, f"{name}: truncated data ({written:,} of {limit - GZIP_SLACK_BYTES:,} bytes)")


def receive_nifti(upload: FileStorage, folder: Path, field: str, max_voxels: int) -> Path:
    """Save one uploaded file into ``folder`` under a name derived from ``field``; return an uncompressed
    ``<field>.nii`` whose header was checked and whose size matches its header."""
    raw = folder / f"{field}.upload"
    upload.save(raw)
    nii = folder / f"{field}.nii"
    with raw.open("rb") as handle:
        head = handle.read(PEEK_BYTES)
    if not head:
        raise UploadError(400, f"{field}: the file is empty")
    if head.startswith(GZIP_MAGIC):
        _gunzip_bounded(raw, nii, field, max_voxels)
        raw.unlink()
    else:
        implied = implied_nifti_bytes(head, field, max_voxels)
        size = raw.stat().st_size
        if size < implied:
            raise UploadError(400, f"{field}: truncated data ({size:,} of {implied:,} bytes)")
        raw.rename(nii)
    return nii


# ------------------------------------------------------------------------------------ the upload


def check_upload_fields(files: Mapping[str, FileStorage]) -> dict[str, FileStorage]:
    """The uploaded files by field; refuses unknown fields, missing modalities and odd content types."""
    present = {field: upload for field, upload in files.items() if upload is not None and upload.filename}
    unknown = sorted(set(files) - set(FILE_FIELDS))
    if unknown:
        raise UploadError(
            400,
            f"unexpected file field(s) {', '.join(unknown)}; "
            f"expected {', '.join(MODALITIES)} and optionally seg",
        )
    missing = [field for field in MODALITIES if field not in present]
    if missing:
        raise UploadError(400, f"missing file(s) for {', '.join(missing)}; all four modalities are required")
    for field, upload in present.items():
        mimetype = (upload.mimetype or "").lower()
        if mimetype not in ALLOWED_FILE_TYPES:
            raise UploadError(
                415, f"{field}: content type {mimetype!r} is not a NIfTI file (.nii or .nii.gz)"
            )
    return present


def _readable(message: str, study_uid: str) -> str:
    """A StudyError message with the stored file names replaced by the form fields the user knows."""
    for field, suffix in STORED_SUFFIX.items():
        message = message.replace(f"{study_uid}-{suffix}.nii.gz", field).replace(f"{field}.nii:", f"{field}:")
    return message.replace(f"{study_uid}: ", "", 1)


def _checksum(paths: Mapping[str, Path]) -> str:
    """sha256 over the stored files, in field order (field name, then bytes, for each file)."""
    digest = hashlib.sha256()
    for field in FILE_FIELDS:
        if field in paths:
            digest.update(field.encode() + b"\x00")
            with paths[field].open("rb") as handle:
                while block := handle.read(CHUNK_BYTES):
                    digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StagedStudy:
    """A checked study folder in its final place, before its row exists."""

    folder: Path
    stored: dict[str, Path]
    shape: list[int]
    spacing: list[float]
    checksum: str


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


def _refuse_existing(session: Session, uploads_dir: Path, study_uid: str) -> Path:
    """The study's final folder; 409 when a row or a folder of that uid exists already."""
    if session.scalars(select(Study.id).where(Study.study_uid == study_uid)).first() is not None:
        raise UploadError(409, f"a study {study_uid} already exists")
    uploads_dir.mkdir(parents=True, exist_ok=True)
    final = uploads_dir / study_uid
    if final.exists():
        raise UploadError(409, f"a study folder {study_uid} already exists")
    return final


def _stage_files(
    present: Mapping[str, FileStorage], incoming: Path, study_uid: str, max_voxels: int
) -> StagedStudy:
    """Receive, check and sanitise every file into ``incoming/<study_uid>``; load the staged study."""
    received, staged = incoming / "received", incoming / study_uid
    received.mkdir()
    staged.mkdir()
    stored: dict[str, Path] = {}
    zooms: dict[str, tuple[float, ...]] = {}
    for field in FILE_FIELDS:
        if field not in present:
            continue
        nii = receive_nifti(present[field], received, field, max_voxels)
        target = staged / f"{study_uid}-{STORED_SUFFIX[field]}.nii.gz"
        _shape, zooms[field] = sanitize_nifti_file(nii, target, max_voxels)
        nii.unlink()
        stored[field] = target
    volume = load_study(study_from_dir(staged), max_voxels=max_voxels)
    checksum = _checksum(stored)
    shutil.rmtree(received)
    return StagedStudy(
        folder=staged,
        stored=stored,
        shape=[int(s) for s in volume.native_shape],
        spacing=[round(float(z), 6) for z in zooms[MODALITIES[0]]],
        checksum=checksum,
    )


def stage_study(
    present: Mapping[str, FileStorage], uploads_dir: Path, study_uid: str, final: Path, max_voxels: int
) -> StagedStudy:
    """Check every file in a temporary folder and rename it to ``final``; raises ``UploadError`` (and
    leaves nothing behind) when refused."""
    incoming = Path(tempfile.mkdtemp(prefix=INCOMING_PREFIX, dir=uploads_dir))
    try:
        staged = _stage_files(present, incoming, study_uid, max_voxels)
        try:
            os.rename(staged.folder, final)
        except OSError:
            raise UploadError(409, f"a study folder {study_uid} already exists") from None
    except StudyError as exc:
        raise UploadError(400, _readable(str(exc), study_uid)) from None
    except (UploadError, MemoryError):
        raise
    except Exception as exc:  # a file nibabel chokes on in a way bmcore.imaging does not name
        log.warning("upload %s refused: %s", study_uid, exc, exc_info=True)
        raise UploadError(400, f"unreadable NIfTI data ({type(exc).__name__})") from None
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    stored = {field: final / path.name for field, path in staged.stored.items()}
    return StagedStudy(final, stored, staged.shape, staged.spacing, staged.checksum)


def register_study(
    session: Session, staged: StagedStudy, patient_id: str, study_uid: str, owner_id: int | None
) -> Study:
    """The study's row (and its patient's, when new), committed; on failure the folder is removed."""
    stored = staged.stored
    try:
        owner = session.get(User, owner_id) if owner_id is not None else None
        group = personal_group(session, owner) if owner is not None else group_named(session, DEFAULT_GROUP)
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
    owner_id: int | None,
    uploads_dir: Path,
    max_voxels: int,
) -> Study:
    """Check, store and register one uploaded study; raises ``UploadError`` (nothing kept) when refused."""
    patient_id, study_uid = check_identifiers(patient_id, study_uid)
    present = check_upload_fields(files)
    final = _refuse_existing(session, uploads_dir, study_uid)
    staged = stage_study(present, uploads_dir, study_uid, final, max_voxels)
    return register_study(session, staged, patient_id, study_uid, owner_id)
