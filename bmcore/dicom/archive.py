"""Reading a DICOM source safely: a folder as it is, or a zip archive extracted into a temporary folder.

A zip's directory is checked before anything is extracted: the number of entries, the total
uncompressed bytes and the compression ratio (:class:`ArchiveLimits`), entry names (no absolute paths,
drive letters or ``..``), no links and no encrypted entries. The same limits are enforced on the bytes
actually read, so an archive whose directory lies stops at the limit. Entries are written under
numbered names (an archive's own names never become paths) in a fresh temporary folder that is removed
when the ``with`` block ends, whatever happens. A folder is walked without following links, and a link
in it is refused.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bmcore.config import get_settings
from bmcore.dicom.errors import DicomError

# Entries (and archives) smaller than this are not held to the ratio: tiny files compress oddly well.
RATIO_FLOOR_BYTES = 1 << 20
CHUNK_BYTES = 1 << 20
TEMP_PREFIX = "bmseg-dicom-"


@dataclass(frozen=True)
class ArchiveLimits:
    """What a DICOM source may hold: files, uncompressed bytes, and (zip) compression ratio."""

    max_files: int = 20_000
    max_bytes: int = 8 << 30
    max_ratio: float = 100.0

    @classmethod
    def from_settings(cls) -> ArchiveLimits:
        """The limits of the settings (``BMSEG_DICOM_MAX_FILES``, ``_MAX_BYTES``, ``_MAX_RATIO``)."""
        settings = get_settings()
        return cls(settings.dicom_max_files, settings.dicom_max_bytes, settings.dicom_max_ratio)


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: where to read it, and the base name that messages show."""

    path: Path
    name: str


@contextmanager
def source_files(source: Path, limits: ArchiveLimits | None = None) -> Iterator[list[SourceFile]]:
    """The regular files of a folder or of a zip archive (then extracted into a temporary folder, removed
    on leaving the block); raises :class:`DicomError` for anything the limits or the rules refuse."""
    limits = limits or ArchiveLimits.from_settings()
    source = Path(source)
    if source.is_dir():
        yield _folder_files(source, limits)
        return
    if not source.is_file():
        raise DicomError(f"{source.name}: no such file or folder")
    if not zipfile.is_zipfile(source):
        raise DicomError(f"{source.name}: not a folder or a zip archive")
    temp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        yield _extract(source, temp, limits)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _folder_files(folder: Path, limits: ArchiveLimits) -> list[SourceFile]:
    files: list[SourceFile] = []
    total = 0
    for directory, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(directory) / name
            if path.is_symlink():
                raise DicomError(f"{folder.name}: holds a link ({name}); links are refused")
        for name in sorted(filenames):
            path = Path(directory) / name
            if not path.is_file():
                continue
            files.append(SourceFile(path, name))
            total += path.stat().st_size
            if len(files) > limits.max_files:
                raise DicomError(f"{folder.name}: more than {limits.max_files:,} files, over the limit")
            if total > limits.max_bytes:
                raise DicomError(f"{folder.name}: more than {limits.max_bytes:,} bytes, over the limit")
        dirnames.sort()
    return files


def _check_name(name: str, archive: str) -> None:
    """Refuse an entry name that would land outside the folder it is extracted into."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in parts or "\x00" in name:
        raise DicomError(f"{archive}: entry {name[:80]!r} points outside the archive (path traversal)")


def _checked_entries(archive: zipfile.ZipFile, limits: ArchiveLimits, name: str) -> list[zipfile.ZipInfo]:
    """The archive's file entries, after every check its directory allows."""
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise DicomError(f"{name}: {len(infos):,} entries, over the limit of {limits.max_files:,}")
    entries = []
    for info in infos:
        _check_name(info.filename, name)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DicomError(f"{name}: entry {info.filename[:80]!r} is a link; links are refused")
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise DicomError(f"{name}: entry {info.filename[:80]!r} is encrypted")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
            raise DicomError(
                f"{name}: entry {info.filename[:80]!r} expands {ratio:,.0f} times, over the compression "
                f"ratio limit of {limits.max_ratio:g} (a zip bomb?)"
            )
        entries.append(info)
    declared = sum(info.file_size for info in entries)
    packed = sum(info.compress_size for info in entries)
    if declared > limits.max_bytes:
        raise DicomError(f"{name}: expands to {declared:,} bytes, over the limit of {limits.max_bytes:,}")
    if declared > RATIO_FLOOR_BYTES and declared > limits.max_ratio * max(packed, 1):
        raise DicomError(
            f"{name}: expands {declared / max(packed, 1):,.0f} times, over the compression ratio limit of "
            f"{limits.max_ratio:g} (a zip bomb?)"
        )
    return entries


def _copy_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, name: str) -> int:
    """Extract one entry, stopping at the size its directory claims and at what the limit has left."""
    written = 0
    with archive.open(info) as stream, target.open("wb") as out:
        while block := stream.read(CHUNK_BYTES):
            written += len(block)
            if written > info.file_size:
                raise DicomError(f"{name}: entry {info.filename[:80]!r} expands beyond the size it claims")
            if written > budget:
                raise DicomError(f"{name}: expands beyond the limit on uncompressed bytes")
            out.write(block)
    return written


def _extract(source: Path, temp: Path, limits: ArchiveLimits) -> list[SourceFile]:
    files = []
    try:
        with zipfile.ZipFile(source) as archive:
            total = 0
            for index, info in enumerate(_checked_entries(archive, limits, source.name)):
                target = temp / f"{index:06d}"
                total += _copy_entry(archive, info, target, limits.max_bytes - total, source.name)
                files.append(SourceFile(target, PurePosixPath(info.filename.replace("\\", "/")).name))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DicomError(f"{source.name}: corrupt zip archive ({reason})") from None
    except OSError as exc:
        raise DicomError(
            f"{source.name}: the archive could not be extracted ({exc.strerror or exc})"
        ) from None
    return files
