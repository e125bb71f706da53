"""Reading a DICOM source: a folder as it is, a zip extracted under numbered names into a temporary folder
that is removed whatever happens, within limits that come from the settings."""

from __future__ import annotations

import os
import zipfile

import pytest

from bmcore.config import get_settings
from bmcore.dicom import ArchiveLimits, DicomError
from bmcore.dicom.archive import source_files


def listed(source, limits=None) -> list:
    with source_files(source, limits) as files:
        return files


def test_a_zip_is_extracted_under_numbered_names_and_removed_afterwards(tmp_path, no_temp_left):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("PATIENT/DOE_JANE/IM0001", b"one")
        handle.writestr("PATIENT/DOE_JANE/sub/IM0002", b"two")
        handle.writestr("PATIENT/empty/", b"")
    with source_files(archive) as files:
        assert [(f.name, f.path.read_bytes()) for f in files] == [("IM0001", b"one"), ("IM0002", b"two")]
        assert all(f.path.parent.parent == no_temp_left and "DOE" not in str(f.path) for f in files)
    assert not any(no_temp_left.iterdir())


def test_the_extraction_folder_is_removed_when_the_reader_fails(tmp_path, no_temp_left):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("IM0001", b"one")
    with pytest.raises(RuntimeError, match="reader failed"), source_files(archive) as files:
        assert files[0].path.exists()
        raise RuntimeError("reader failed")
    assert not any(no_temp_left.iterdir())


def test_a_folder_with_a_link_is_refused(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "IM0001").write_bytes(b"one")
    os.symlink("/etc/passwd", tmp_path / "export" / "IM0002")
    with pytest.raises(DicomError, match=r"export: holds a link \(IM0002\); links are refused"):
        listed(tmp_path / "export")


def test_a_folder_over_the_limits_is_refused(tmp_path):
    (tmp_path / "export").mkdir()
    for n in range(4):
        (tmp_path / "export" / f"IM{n:04d}").write_bytes(bytes(100))
    with pytest.raises(DicomError, match="more than 3 files, over the limit"):
        listed(tmp_path / "export", ArchiveLimits(max_files=3))
    with pytest.raises(DicomError, match="more than 250 bytes, over the limit"):
        listed(tmp_path / "export", ArchiveLimits(max_bytes=250))


@pytest.mark.parametrize(("name", "content"), [("notes.txt", b"hello"), ("missing.zip", None)])
def test_a_source_that_is_neither_folder_nor_zip_is_refused(tmp_path, name, content):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DicomError, match=f"{name}: (not a folder or a zip archive|no such file or folder)"):
        listed(tmp_path / name)


def test_the_limits_come_from_the_settings(monkeypatch):
    monkeypatch.setenv("BMSEG_DICOM_MAX_FILES", "12")
    monkeypatch.setenv("BMSEG_DICOM_MAX_BYTES", "3456")
    monkeypatch.setenv("BMSEG_DICOM_MAX_RATIO", "7.5")
    get_settings.cache_clear()
    try:
        assert ArchiveLimits.from_settings() == ArchiveLimits(max_files=12, max_bytes=3456, max_ratio=7.5)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
