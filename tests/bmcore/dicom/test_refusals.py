"""The bad-input battery of DICOM in: every case is refused with one line naming what is wrong, and leaves
no file in the output folder and no temporary folder behind."""

from __future__ import annotations

import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import MPEG2MPML, CTImageStorage, JPEGLosslessSV1, SecondaryCaptureImageStorage

from bmcore.dicom import ArchiveLimits, DicomError, import_dicom

from .scanner import SeriesSpec, axial_affine, four_series, write_study, zip_folder


def _study(tmp_path: Path, volumes, changes=None, extra=()) -> tuple[Path, object, list[SeriesSpec]]:
    specs = four_series(volumes, axial_affine(), changes) + list(extra)
    return tmp_path / "export", write_study(tmp_path / "export", specs), specs


def _zipped(tmp_path: Path, volumes, changes=None) -> Path:
    folder, _, _ = _study(tmp_path, volumes, changes)
    return zip_folder(folder, tmp_path / "export.zip")


def _slices_along_z(study, number: int):
    return sorted(study.slices[number], key=lambda s: s.position[2])


def no_mr_series(tmp_path, volumes):
    specs = [
        SeriesSpec(2, "CT HEAD 5mm", volumes["t1"], axial_affine(), sop_class=CTImageStorage, modality="CT"),
        SeriesSpec(
            3, "screen capture", volumes["t2"], axial_affine(), sop_class=SecondaryCaptureImageStorage
        ),
    ]
    write_study(tmp_path / "export", specs)
    return zip_folder(tmp_path / "export", tmp_path / "ct.zip"), None


def missing_sequence(tmp_path, volumes):
    specs = [s for s in four_series(volumes, axial_affine()) if s.number != 7]
    write_study(tmp_path / "export", specs)
    return zip_folder(tmp_path / "export", tmp_path / "three.zip"), None


def inconsistent_spacing(tmp_path, volumes):
    folder, study, _ = _study(tmp_path, volumes)
    _slices_along_z(study, 9)[4].path.unlink()
    return folder, None


def inconsistent_orientation(tmp_path, volumes):
    folder, study, _ = _study(tmp_path, volumes)
    path = _slices_along_z(study, 5)[3].path
    ds = pydicom.dcmread(path)
    angle = np.radians(8)
    ds.ImageOrientationPatient = [np.cos(angle), np.sin(angle), 0.0, -np.sin(angle), np.cos(angle), 0.0]
    ds.save_as(path)
    return folder, None


def duplicate_positions(tmp_path, volumes):
    specs = four_series(volumes, axial_affine())
    second_run = SeriesSpec(**{**specs[3].__dict__, "volume": specs[3].volume + 5})  # same UID and positions
    write_study(tmp_path / "export", [*specs, second_run])
    return tmp_path / "export", None


def mixed_frames_of_reference(tmp_path, volumes):
    return _zipped(tmp_path, volumes, {7: {"frame_of_reference": pydicom.uid.generate_uid()}}), None


def undecodable_syntax(tmp_path, volumes):
    return _zipped(tmp_path, volumes, {5: {"transfer_syntax": JPEGLosslessSV1}}), None


def syntax_without_decoder(tmp_path, volumes):
    return _zipped(tmp_path, volumes, {3: {"transfer_syntax": MPEG2MPML}}), None


def truncated_pixels(tmp_path, volumes):
    folder, study, _ = _study(tmp_path, volumes)
    path = _slices_along_z(study, 9)[6].path
    path.write_bytes(path.read_bytes()[:-300])
    return folder, None


def truncated_header(tmp_path, volumes):
    folder, study, _ = _study(tmp_path, volumes)
    path = _slices_along_z(study, 3)[2].path
    path.write_bytes(path.read_bytes()[:400])
    return zip_folder(folder, tmp_path / "export.zip"), None


def zip_bomb_ratio(tmp_path, volumes):
    archive = _zipped(tmp_path, volumes)
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("DICOM/0001/IM9999", bytes(40 << 20))
    return archive, None


def zip_bomb_entry(tmp_path, volumes):
    """One entry expanding a thousandfold inside an archive whose overall ratio is modest."""
    archive = _zipped(tmp_path, volumes)
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("DICOM/0001/IM9998", np.random.default_rng(1).bytes(2 << 20))
        handle.writestr("DICOM/0001/IM9999", bytes(5 << 20))
    return archive, None


def zip_bomb_total(tmp_path, volumes):
    return _zipped(tmp_path, volumes), ArchiveLimits(max_bytes=50_000)


def zip_lying_directory(tmp_path, volumes):
    """One entry of 3 MB whose local header and directory both claim 1000 bytes."""
    archive = tmp_path / "lying.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("IM0001", np.random.default_rng(0).integers(0, 16, 3 << 20, dtype=np.uint8).tobytes())
    raw = bytearray(archive.read_bytes())
    local, central = raw.index(b"PK\x03\x04"), raw.index(b"PK\x01\x02")
    raw[local + 22 : local + 26] = struct.pack("<I", 1000)
    raw[central + 24 : central + 28] = struct.pack("<I", 1000)
    archive.write_bytes(bytes(raw))
    return archive, None


def too_many_files(tmp_path, volumes):
    return _zipped(tmp_path, volumes), ArchiveLimits(max_files=10)


def _with_entry(tmp_path, volumes, info: zipfile.ZipInfo, data: bytes) -> Path:
    archive = _zipped(tmp_path, volumes)
    with zipfile.ZipFile(archive, "a") as handle:
        handle.writestr(info, data)
    return archive


def path_traversal(tmp_path, volumes):
    return _with_entry(tmp_path, volumes, zipfile.ZipInfo("../evil.dcm"), b"DICM"), None


def absolute_path(tmp_path, volumes):
    return _with_entry(tmp_path, volumes, zipfile.ZipInfo("/tmp/evil.dcm"), b"DICM"), None


def link_entry(tmp_path, volumes):
    info = zipfile.ZipInfo("DICOM/IM0000")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return _with_entry(tmp_path, volumes, info, b"/etc/passwd"), None


CASES = {
    "no MR series": (no_mr_series, "no MR series (found 1 CT Image Storage series, 1 Secondary Capture"),
    "missing sequence": (missing_sequence, "flair: no series fits (a missing sequence?)"),
    "inconsistent slice spacing": (
        inconsistent_spacing,
        'series 9 "T1 MPRAGE POST GD": inconsistent slice spacing',
    ),
    "inconsistent orientation": (
        inconsistent_orientation,
        'series 5 "t2_tse_tra": slices have different orientations',
    ),
    "duplicate positions": (duplicate_positions, "slice(s) repeat another's position"),
    "mixed frames of reference": (mixed_frames_of_reference, "do not share a frame of reference"),
    "undecodable syntax": (
        undecodable_syntax,
        "transfer syntax JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 "
        "[Selection Value 1]) (1.2.840.10008.1.2.4.70) cannot be decoded here",
    ),
    "syntax without decoder": (
        syntax_without_decoder,
        "MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)",
    ),
    "truncated pixel data": (truncated_pixels, "pixel data truncated or corrupt"),
    "truncated header": (truncated_header, "truncated or inconsistent DICOM file"),
    "zip bomb (ratio)": (zip_bomb_ratio, "over the compression ratio limit of 100 (a zip bomb?)"),
    "zip bomb (one entry)": (zip_bomb_entry, "entry 'DICOM/0001/IM9999' expands"),
    "zip bomb (total)": (zip_bomb_total, "over the limit of 50,000"),
    "zip directory lies": (zip_lying_directory, "corrupt zip archive"),
    "too many files": (too_many_files, "entries, over the limit of 10"),
    "path traversal": (path_traversal, "entry '../evil.dcm' points outside the archive (path traversal)"),
    "absolute path": (absolute_path, "entry '/tmp/evil.dcm' points outside the archive"),
    "link entry": (link_entry, "entry 'DICOM/IM0000' is a link"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_in_one_line_leaving_nothing(case, volumes, tmp_path, no_temp_left):
    build, expected = CASES[case]
    (tmp_path / "input").mkdir()
    source, limits = build(tmp_path / "input", volumes)
    out = tmp_path / "out"
    with pytest.raises(DicomError) as refused:
        import_dicom(source, out, "refused", limits=limits)
    message = str(refused.value)
    assert expected in message
    assert "\n" not in message and str(tmp_path) not in message and "Doe" not in message, message
    assert not out.exists() or not any(out.iterdir())
    assert not any(no_temp_left.iterdir()), "a temporary folder was left behind"
