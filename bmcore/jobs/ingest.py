"""An ingest job: a DICOM archive the web received becomes a study of the uploader's group.

The web (:mod:`services.web.dicom_intake`) streams the uploaded zip to a folder of its own under the uploads
folder (``.incoming-dicom-…/archive.zip``, the internal param ``archive``, relative to that folder) and
queues the job on the cpu
queue with the pseudonym, the study uid, the group's name and the user's series map. Here, in the worker's
job process: :func:`bmcore.dicom.import_dicom` converts the archive into the study layout in a temporary
folder inside the uploads folder (it refuses, with one line, a zip bomb, a path-traversal entry, an
archive without MR series, an ambiguous or missing sequence, …), the files are stored as NIfTI uploads
are (no extensions, no free text, values checked), the folder is renamed into place and the study is
registered in the group, owned by the job's owner (:mod:`bmcore.patients.studies`, as the web's upload).

Whatever happens the archive's folder and the temporary folder are removed; on a refusal the job fails with
the reason and leaves no row and no file. The result names the study (``study_id``) and which series
became which modality. No PHI is read into the result: UIDs and series numbers only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bmcore import imaging
from bmcore.config import get_settings
from bmcore.db import Job, session_scope
from bmcore.db.groups import find_group
from bmcore.patients import studies

if TYPE_CHECKING:  # pydicom and the decoders load with the first ingest job, not with the web
    from bmcore.dicom import ImportedStudy

ARCHIVE_PREFIX = ".incoming-dicom-"  # the web's folder for one archive (purged by the web when stale)
STAGING_PREFIX = ".incoming-ingest-"
ARCHIVE_NAME = "archive.zip"


class IngestError(ValueError):
    """An ingest job that cannot store its study; the message is one line."""


def archive_folder(uploads_dir: Path) -> Path:
    """A fresh folder for one uploaded archive inside ``uploads_dir`` (the web's side)."""
    uploads_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=ARCHIVE_PREFIX, dir=uploads_dir))


def remove_archive(archive: Path, uploads_dir: Path) -> None:
    """Remove an uploaded archive and the folder the web made for it (never anything outside it)."""
    folder = archive.parent
    if folder.parent.resolve() == uploads_dir.resolve() and folder.name.startswith(ARCHIVE_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)
    elif archive.resolve().is_relative_to(uploads_dir.resolve()):
        archive.unlink(missing_ok=True)


def archive_param(archive: Path, uploads_dir: Path) -> str:
    """The internal ``archive`` param of an archive the web stored: its path under ``uploads_dir`` (so the
    job finds it wherever the workers mount the uploads folder, and no server path reaches a client)."""
    return archive.relative_to(uploads_dir).as_posix()


def _checked_archive(value: Any, uploads_dir: Path) -> Path:
    archive = uploads_dir / str(value)
    if not archive.resolve().is_relative_to(uploads_dir.resolve()):
        raise IngestError("the archive is not in the uploads folder")
    return archive


def _mapping(params: dict[str, Any]) -> dict[int, str] | None:
    given = params.get("map") or {}
    return {int(number): modality for number, modality in given.items()} or None


def _owner_and_group(job_id: str, group_name: str, study_uid: str, uploads_dir: Path) -> int | None:
    """The job's owner, once the group exists and the study uid is free (``IngestError`` otherwise)."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if find_group(session, group_name) is None:
            raise IngestError(f"no group {group_name}")
        try:
            studies.refuse_existing(session, uploads_dir, study_uid)
        except studies.StudyExists as exc:
            raise IngestError(str(exc)) from None
        return job.owner_id if job is not None else None


def _store_files(folder: Path, max_voxels: int) -> studies.StoredStudy:
    """The imported study's files as stored uploads are (no extensions, no free text, values checked)."""
    try:
        ref = imaging.study_from_dir(folder)
        missing = [m for m, path in ref.images.items() if not path.is_file()]
        if missing:
            raise IngestError(f"the import wrote no {', '.join(missing)} volume")
        for path in ref.images.values():
            imaging.sanitize_nifti_file(path, path, max_voxels)
        return studies.describe_stored(folder, dict(ref.images), max_voxels)
    except imaging.StudyError as exc:
        raise IngestError(str(exc).replace(f"{folder}: ", "")) from None


def _register(job_id: str, stored: studies.StoredStudy, params: dict[str, Any], owner_id: int | None) -> int:
    with session_scope() as session:
        group = find_group(session, params["group"])
        if group is None:
            shutil.rmtree(stored.folder, ignore_errors=True)
            raise IngestError(f"no group {params['group']}")
        try:
            study = studies.register_study(
                session, stored, params["patient_id"], params["study_uid"], owner_id, group
            )
        except studies.StudyExists as exc:
            raise IngestError(str(exc)) from None
        return study.id


def ingest_archive(
    job_id: str, params: dict[str, Any], progress: Callable[[float, str], Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Import the job's archive as a study of its group; ``(metrics, artifacts)`` for the job's result."""
    from bmcore.dicom import import_dicom  # lazy: pydicom and the decoders, loaded by the first ingest job

    settings = get_settings()
    uploads_dir = settings.uploads_dir
    archive = _checked_archive(params["archive"], uploads_dir)
    study_uid = params["study_uid"]
    staging: Path | None = None
    try:
        if not archive.is_file():
            raise IngestError("the uploaded archive is gone (uploads older than 6 hours are purged)")
        owner_id = _owner_and_group(job_id, params["group"], study_uid, uploads_dir)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=uploads_dir))
        progress(0.05, "reading the DICOM archive")
        imported = import_dicom(archive, staging, study_uid, _mapping(params))
        remove_archive(archive, uploads_dir)
        progress(0.8, "storing the study")
        stored = _store_files(staging / study_uid, settings.max_voxels)
        final = uploads_dir / study_uid
        try:
            if final.exists():  # (renaming onto an empty folder would succeed)
                raise FileExistsError(final)
            os.rename(stored.folder, final)
        except OSError:
            raise IngestError(f"a study folder {study_uid} already exists") from None
        moved = {field: final / path.name for field, path in stored.stored.items()}
        stored = studies.StoredStudy(final, moved, stored.shape, stored.spacing, stored.checksum)
        study_id = _register(job_id, stored, params, owner_id)
    finally:
        remove_archive(archive, uploads_dir)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    metrics = {
        "study_id": study_id,
        "study_uid": study_uid,
        "patient_id": params["patient_id"],
        "group": params["group"],
        "series": series_summary(imported),
    }
    return metrics, {}


def series_summary(imported: ImportedStudy) -> dict[str, Any]:
    """Which series number became which modality, and the numbers of the series the import did not place
    (nothing from the headers beyond them)."""
    summary: dict[str, Any] = {modality: info.number for modality, info in imported.series.items()}
    if imported.unplaced:
        summary["unplaced"] = [info.number for info in imported.unplaced]
    return summary
