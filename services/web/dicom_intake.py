"""Taking a DICOM archive in: a zip of a study's MR series, imported into a group by an ingest job.

The web reads no DICOM (pydicom stays on the workers): it checks what it can cheaply, the identifiers, the
group (:func:`services.web.access.upload_group`, as for a NIfTI upload), the series map and that the file
is a zip within the upload cap, streams the archive in chunks to a folder of the server's own under the
uploads folder (``.incoming-dicom-…/archive.zip``; the client's file name is never used) and queues an
``ingest`` job on the cpu queue (:mod:`bmcore.jobs.ingest`), which converts the series, stores the study and
registers it, or fails with the reason and leaves nothing. On any refusal here nothing is kept either.

The series map names series the importer could not place: ``5=t1ce, 7=flair`` (series number =
modality, the numbers the job's error lists).
"""

from __future__ import annotations

import re
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from bmcore.db import Job, User
from bmcore.jobs.errors import JobParamsError, JobQuotaExceeded, QueueUnavailable
from bmcore.jobs.ingest import ARCHIVE_NAME, archive_folder, archive_param, remove_archive
from bmcore.jobs.lifecycle import submit_job
from bmcore.jobs.params import check_series_map
from services.web.access import upload_group
from services.web.common import WebError
from services.web.study_intake import check_identifiers, refuse_existing
from services.web.uploads import CHUNK_BYTES, UploadError

DICOM_FIELD = "dicom"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty zip
ALLOWED_ARCHIVE_TYPES = frozenset(
    {
        "",
        "application/octet-stream",
        "application/zip",
        "application/x-zip",
        "application/x-zip-compressed",
        "multipart/x-zip",
    }
)
MAP_ITEM = re.compile(r"^(\d{1,10})\s*=\s*([A-Za-z0-9]{1,16})$")
MAP_HELP = "map must read like 5=t1ce, 7=flair (series number = t1, t1ce, t2 or flair)"


def is_dicom_upload(files: Mapping[str, FileStorage]) -> bool:
    """Whether the request uploads a DICOM archive (the ``dicom`` file field is given)."""
    upload = files.get(DICOM_FIELD)
    return upload is not None and bool(upload.filename)


def parse_series_map(text: str | None) -> dict[str, str]:
    """``"5=t1ce, 7=flair"`` as ``{"5": "t1ce", "7": "flair"}`` (empty: no map), or 400."""
    items = [item.strip() for item in re.split(r"[,;\n]", text or "") if item.strip()]
    pairs = {}
    for item in items:
        match = MAP_ITEM.match(item)
        if match is None or match[1] in pairs:
            raise UploadError(400, MAP_HELP)
        pairs[match[1]] = match[2].lower()
    try:
        return check_series_map(pairs, where="map")
    except JobParamsError as exc:
        raise UploadError(400, str(exc)) from None


def _check_fields(files: Mapping[str, FileStorage]) -> FileStorage:
    """The archive: the only file of the request, of a zip-like content type."""
    others = sorted(field for field, upload in files.items() if field != DICOM_FIELD and upload.filename)
    if others:
        also = ", ".join(others)
        raise UploadError(
            400, f"send either a DICOM archive (dicom) or NIfTI files, not both (also got {also})"
        )
    upload = files[DICOM_FIELD]
    if (upload.mimetype or "").lower() not in ALLOWED_ARCHIVE_TYPES:
        raise UploadError(415, f"dicom: content type {upload.mimetype!r} is not a zip archive")
    return upload


def receive_archive(upload: FileStorage, uploads_dir: Path, max_bytes: int) -> Path:
    """Stream the uploaded archive in chunks to ``.incoming-dicom-…/archive.zip`` under ``uploads_dir``;
    413 past ``max_bytes``, 400 unless it is a readable zip with entries (nothing kept when refused)."""
    folder = archive_folder(uploads_dir)
    target = folder / ARCHIVE_NAME
    try:
        source, written = upload.stream, 0
        with target.open("wb") as out:
            while block := source.read(CHUNK_BYTES):
                written += len(block)
                if written > max_bytes:
                    raise UploadError(
                        413, f"the upload is larger than the server accepts ({max_bytes // (1 << 20)} MB)"
                    )
                out.write(block)
        with target.open("rb") as handle:
            magic = handle.read(4)
        if not written:
            raise UploadError(400, "dicom: the file is empty")
        if magic not in ZIP_MAGIC:
            raise UploadError(400, "dicom: not a zip archive")
        try:
            with zipfile.ZipFile(target) as archive:
                entries = len(archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
            raise UploadError(400, f"dicom: not a readable zip archive ({exc})") from None
        if not entries:
            raise UploadError(400, "dicom: the zip archive is empty")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return target


def _submit(session: Session, params: dict[str, Any], owner: User, archive: Path, uploads_dir: Path) -> Job:
    """Queue the ingest job; its refusals as 4xx/5xx (the archive removed, the job row kept failed when
    the queue is down)."""
    try:
        internal = {"archive": archive_param(archive, uploads_dir)}
        return submit_job(session, "ingest", params, owner_id=owner.id, internal=internal)
    except JobParamsError as exc:
        raise UploadError(400, str(exc)) from None
    except JobQuotaExceeded as exc:
        raise UploadError(429, str(exc)) from None
    except QueueUnavailable as exc:
        raise UploadError(503, f"the job queue is unavailable, try again later ({exc})") from None


def queue_dicom_upload(
    session: Session,
    files: Mapping[str, FileStorage],
    form: Mapping[str, str | None],
    owner: User,
    uploads_dir: Path,
    max_bytes: int,
) -> Job:
    """Check a DICOM upload (``form``: ``patient_id``, ``study_uid``, ``group``, ``map``), store its
    archive and queue the ingest job of ``owner``; ``UploadError`` (nothing kept) when refused."""
    patient_id, study_uid = check_identifiers(form.get("patient_id"), form.get("study_uid"))
    upload = _check_fields(files)
    mapping = parse_series_map(form.get("map"))
    try:
        group = upload_group(session, owner, form.get("group"))
        refuse_existing(session, uploads_dir, study_uid)
        archive = receive_archive(upload, uploads_dir, max_bytes)
    except BaseException as exc:
        session.rollback()  # a personal group made for this upload goes too
        if isinstance(exc, WebError) and not isinstance(exc, UploadError):
            raise UploadError(exc.status, exc.message) from None
        raise
    params: dict[str, Any] = {"patient_id": patient_id, "study_uid": study_uid, "group": group.name}
    if mapping:
        params["map"] = mapping
    try:
        return _submit(session, params, owner, archive, uploads_dir)
    except BaseException:
        session.rollback()
        remove_archive(archive, uploads_dir)
        raise
