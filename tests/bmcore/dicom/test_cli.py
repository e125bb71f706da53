"""The real ``bmseg import-dicom``: ``--list``, an import that names what it did not place, ``--map`` for
an ambiguous study, and every refusal as one ``error:`` line with exit code 1 and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage

from .scanner import PHI_BYTES, SeriesSpec, axial_affine, four_series, write_study, zip_folder

BMSEG = Path(sys.executable).with_name("bmseg")


def bmseg(*args) -> subprocess.CompletedProcess:
    assert BMSEG.exists(), f"{BMSEG} not installed (pip install -e .)"
    return subprocess.run([str(BMSEG), *map(str, args)], capture_output=True, text=True, timeout=120)


def assert_no_phi(*texts: str) -> None:
    for text in texts:
        for phi in PHI_BYTES:
            assert phi.decode() not in text


@pytest.fixture(scope="module")
def export_with_extras(tmp_path_factory, volumes) -> Path:
    """The four series plus a localizer, a diffusion series and a CT series, zipped."""
    root = tmp_path_factory.mktemp("cli")
    extras = [
        SeriesSpec(1, "localizer", volumes["t1"][:, :, :3], axial_affine()),
        SeriesSpec(11, "ep2d_diff_3scan_trace", volumes["t2"], axial_affine(), 90, 6000),
        SeriesSpec(20, "CT HEAD", volumes["t1"], axial_affine(), sop_class=CTImageStorage, modality="CT"),
    ]
    write_study(root / "export", four_series(volumes, axial_affine()) + extras)
    return zip_folder(root / "export", root / "export.zip")


def test_list_prints_each_series_and_how_it_was_identified(export_with_extras):
    result = bmseg("import-dicom", export_with_extras, "--list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["series", "files", "modality", "description", "how", "identified"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["1", "3", "5", "7", "9", "11", "20"]
    assert rows["9"].split()[:3] == ["9", "10", "t1ce"] and "ContrastBolusAgent is set" in rows["9"]
    assert rows["7"].split()[:3] == ["7", "10", "flair"]
    assert rows["1"].split()[:3] == ["1", "3", "-"] and "ignored: not a structural series" in rows["1"]
    assert "CT Image Storage, not MR Image Storage" in rows["20"]
    assert result.stderr == ""
    assert_no_phi(result.stdout)


def test_import_says_which_series_it_did_not_place(export_with_extras, tmp_path):
    result = bmseg("import-dicom", export_with_extras, "-o", tmp_path / "out", "--study", "P0001")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"imported study P0001 into {tmp_path / 'out' / 'P0001'}"
    assert lines[1].split()[:4] == ["t1", "series", "3", '"t1_mprage_sag_p2_iso",']
    placed_out = lines[lines.index("not placed:") + 1 :]
    assert placed_out == [
        '  series 1 "localizer": ignored: not a structural series',
        '  series 11 "ep2d_diff_3scan_trace": ignored: not a structural series',
        '  series 20 "CT HEAD": CT Image Storage, not MR Image Storage',
    ]
    assert (tmp_path / "out" / "P0001" / "P0001_T1post.nii.gz").is_file()
    assert_no_phi(result.stdout, result.stderr)


def test_an_ambiguous_study_is_refused_until_mapped(volumes, tmp_path):
    changes = {9: {"description": "t1_mprage_sag_p2_iso", "contrast_agent": None}}
    write_study(tmp_path / "export", four_series(volumes, axial_affine(), changes))
    out = tmp_path / "out"
    refused = bmseg("import-dicom", tmp_path / "export", "-o", out, "--study", "P0002")
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("error: cannot place every sequence")
    assert 'series 3 "t1_mprage_sag_p2_iso" and series 9 "t1_mprage_sag_p2_iso" all fit' in refused.stderr
    assert not out.exists()
    mapped = bmseg("import-dicom", tmp_path / "export", "-o", out, "--study", "P0002", "--map", "9=t1ce")
    assert mapped.returncode == 0, mapped.stderr
    assert "  t1ce  series 9" in mapped.stdout and "placed by the mapping" in mapped.stdout
    record = json.loads((out / "P0002" / "dicom_source.json").read_text())
    assert record["series"]["t1ce"]["series_number"] == 9


def test_the_rules_option_reads_a_rules_file(volumes, tmp_path):
    write_study(tmp_path / "export", four_series(volumes, axial_affine()))
    (tmp_path / "rules.json").write_text('{"rules": [{"modality": "ignore", "text": "tirm", "why": "site"}]}')
    result = bmseg("import-dicom", tmp_path / "export", "--list", "--rules", tmp_path / "rules.json")
    assert result.returncode == 0, result.stderr
    assert [line.split()[2] for line in result.stdout.splitlines()[1:]] == ["-", "-", "-", "-"]
    assert "ignored: site" in result.stdout


@pytest.mark.parametrize("problem", ["traversal", "no output", "bad map", "study name"])
def test_a_refusal_is_one_error_line_with_exit_code_1(problem, export_with_extras, tmp_path):
    source, args = export_with_extras, ["-o", tmp_path / "out"]
    if problem == "traversal":
        source = tmp_path / "evil.zip"
        with zipfile.ZipFile(source, "w") as handle:
            handle.writestr("../evil.dcm", b"DICM")
    elif problem == "no output":
        args = []
    elif problem == "bad map":
        args += ["--map", "9=t1post"]
    else:
        args += ["--study", "../escape"]
    result = bmseg("import-dicom", source, *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "out").exists()
