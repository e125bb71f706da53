"""Study uploads: four NIfTI modalities (and perhaps a label) in, one checked study folder and row out.

Nothing the client sends is trusted:

* the request size is capped by Flask (``MAX_CONTENT_LENGTH`` = ``settings.max_upload_bytes`` → 413);
* client file names are never used: each file is stored under a name derived from its form field;
* each file is streamed to disk in chunks, and its NIfTI header is read from the first bytes before any
  voxel data: ``peek_header`` refuses non-NIfTI files and arrays over the web's voxel cap
  (``settings.max_upload_voxels``, below the worker's), and a gzip stream is expanded with a cap of the
  size its header implies plus 1 MB (a gzip bomb stops there);
* files are stored without header extensions and with their free-text fields cleared
  (``sanitize_nifti_file``: DICOM sidecars, names, notes), their values checked chunk by chunk on the
  way (NaN, all-zero volumes, label values 0..3), so memory stays bounded whatever the upload;
* the four modalities (and the label) must share shape and affine, checked from the stored headers.

Everything is written into a temporary folder inside ``uploads_dir`` and renamed into place only when
every check passed; the database row is committed after that (:mod:`.study_intake`, which also picks
the study's group and patient). On any failure there is no row and no file.
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
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from werkzeug.datastructures import FileStorage

from bmcore.imaging import (
    BRATS_SUFFIX,
    MODALITIES,
    StudyError,
    check_same_geometry,
    sanitize_nifti_file,
    study_from_dir,
)
from bmcore.imaging.header import GZIP_MAGIC, PEEK_BYTES, HeaderError, HeaderInfo, peek_header
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
MAX_HEADER_BYTES = 16 << 20  # header and extensions: where the voxel data of an upload may start, at most
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


def upload_header(head: bytes, name: str, max_voxels: int) -> HeaderInfo:
    """The header in an uploaded file's first (uncompressed) bytes, checked before anything else is read.

    Refuses what is not a single-file NIfTI-1/2 (:func:`bmcore.imaging.header.peek_header`), claims more
    than ``max_voxels`` voxels, or puts its data more than ``MAX_HEADER_BYTES`` in (extensions that big
    are no DICOM sidecar, and would be expanded for nothing: they are not stored).
    """
    try:
        info = peek_header(head, max_voxels)
    except HeaderError as exc:
        raise UploadError(400, f"{name}: {exc}") from None
    if info.data_offset > MAX_HEADER_BYTES:
        raise UploadError(
            400, f"{name}: header extensions over {MAX_HEADER_BYTES // (1 << 20)} MB (data offset)"
        )
    return info


def implied_nifti_bytes(head: bytes, name: str, max_voxels: int) -> int:
    """The file size a checked upload header implies (data offset + voxels × bytes per voxel)."""
    return upload_header(head, name, max_voxels).file_bytes


def _gunzip_bounded(source: BinaryIO, target: Path, name: str, max_voxels: int) -> None:
    """Expand the gzip stream ``source`` into ``target`` chunk by chunk: the header from the first bytes
    is checked before more is read, and the data never grows past the size it implies plus
    ``GZIP_SLACK_BYTES`` (a gzip bomb stops there)."""
    try:
        with gzip.GzipFile(fileobj=source, mode="rb") as stream, target.open("wb") as dst:
            head = stream.read(PEEK_BYTES)
            implied = implied_nifti_bytes(head, name, max_voxels)
            dst.write(head)
            written = len(head)
            while piece := stream.read(CHUNK_BYTES):
                written += len(piece)
                if written > implied + GZIP_SLACK_BYTES:
                    raise UploadError(
                        400, f"{name}: gzip data expands beyond the size its NIfTI header implies"
                    )
                dst.write(piece)
    except EOFError:
        raise UploadError(400, f"{name}: truncated gzip file") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise UploadError(400, f"{name}: corrupt gzip data ({exc})") from None
    if written < implied:
        raise UploadError(400, f"{name}: truncated data ({written:,} of {implied:,} bytes)")


def _copy_checked(source: BinaryIO, target: Path, name: str, max_voxels: int) -> None:
    """Copy the uncompressed upload ``source`` to ``target`` in chunks once its header passed."""
    head = source.read(PEEK_BYTES)
    implied = implied_nifti_bytes(head, name, max_voxels)
    with target.open("wb") as dst:
        dst.write(head)
        shutil.copyfileobj(source, dst, CHUNK_BYTES)
        size = dst.tell()
    if size < implied:
        raise UploadError(400, f"{name}: truncated data ({size:,} of {implied:,} bytes)")


def receive_nifti(upload: FileStorage, folder: Path, field: str, max_voxels: int) -> Path:
    """Stream one uploaded file into ``folder/<field>.nii`` (a name derived from the field, never the
    client's), uncompressed, in chunks: its header is read and checked from the first bytes before any
    voxel data, and its size must match what the header implies. The upload's stream is the spooled file
    werkzeug parsed the request into (seekable)."""
    source = upload.stream
    magic = source.read(len(GZIP_MAGIC))
    if not magic:
        raise UploadError(400, f"{field}: the file is empty")
    source.seek(0)
    nii = folder / f"{field}.nii"
    if magic == GZIP_MAGIC:
        _gunzip_bounded(source, nii, field, max_voxels)
    else:
        _copy_checked(source, nii, field, max_voxels)
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


def _stage_files(
    present: Mapping[str, FileStorage], incoming: Path, study_uid: str, max_voxels: int
) -> StagedStudy:
    """Receive, check and sanitise every file into ``incoming/<study_uid>``, in bounded memory: each file's
    values are checked as they are copied, the study's geometry from the stored headers."""
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
        _shape, zooms[field] = sanitize_nifti_file(nii, target, max_voxels, label=field == LABEL_FIELD)
        nii.unlink()
        stored[field] = target
    shape = check_same_geometry(stored, max_voxels)
    study_from_dir(staged)  # in the layout bmcore.imaging.find_studies reads
    checksum = _checksum(stored)
    shutil.rmtree(received)
    return StagedStudy(
        folder=staged,
        stored=stored,
        shape=list(shape),
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
