"""``bmseg segment --dicom`` and a segment job's ``dicom`` option: RTSTRUCT, DICOM-SEG and the MR series
written next to the mask, with an untrained tiny model (any mask will do: geometry is tested elsewhere)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pydicom
import pytest

from bmcore.config import get_settings
from bmcore.jobs.errors import JobParamsError
from bmcore.jobs.params import validate_job
from tests.bmcore.dicom.geometry_cases import dciodvfy

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def study_and_model(tmp_path_factory) -> tuple[Path, Path]:
    from bmcore.data.synth import synth_cohort
    from bmcore.models import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("cohort")
    synth_cohort(root, 1, seed=4, layout="ucsf", shape=(64, 64, 24), spacing=(3.5, 3.5, 6.0), workers=1)
    study = next(p for p in root.iterdir() if p.is_dir())
    checkpoint = root / "tiny.pt"
    save_checkpoint(
        checkpoint,
        build_model("unet", base_channels=4, depth=2),
        "unet",
        extra={"preprocess": {"size": 64, "modalities": ["t1", "t1ce", "t2", "flair"]}},
    )
    return study, checkpoint


def bmseg(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bmcore.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"BMSEG_DATA_DIR": str(data_dir)},
    )


def test_segment_dicom_writes_rtstruct_seg_and_series_and_prints_them(study_and_model, tmp_path):
    study, checkpoint = study_and_model
    out = tmp_path / "out"
    done = bmseg(
        "segment",
        str(study),
        "--model",
        str(checkpoint),
        "-o",
        str(out),
        "--dicom",
        data_dir=tmp_path / "data",
    )
    assert done.returncode == 0, done.stderr
    name = study.name
    for kind, path in (
        ("rtstruct", out / f"{name}_rtstruct.dcm"),
        ("seg", out / f"{name}_seg.dcm"),
        ("mr_series", out / f"{name}_t1ce_dicom"),
    ):
        assert f"{name}: {kind} → {path}" in done.stdout
        assert path.exists()
    rtstruct = pydicom.dcmread(out / f"{name}_rtstruct.dcm")
    assert [r.ROIName for r in rtstruct.StructureSetROISequence][-3:] == ["ET", "TC", "WT"]
    assert rtstruct.PatientID == name[:6]  # the study's patient pseudonym
    for path in (out / f"{name}_rtstruct.dcm", out / f"{name}_seg.dcm"):
        dciodvfy(path)


def test_segment_dicom_refusal_is_one_line_and_writes_no_dicom(study_and_model, tmp_path):
    study, checkpoint = study_and_model
    copy = tmp_path / study.name
    copy.mkdir()
    for path in study.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "dicom_source.json").write_text("{not json")
    out = tmp_path / "out"
    done = bmseg(
        "segment",
        str(copy),
        "--model",
        str(checkpoint),
        "-o",
        str(out),
        "--dicom",
        data_dir=tmp_path / "data",
    )
    assert done.returncode != 0
    assert (
        done.stderr.strip().splitlines()[-1]
        == "error: dicom_source.json: not readable JSON (JSONDecodeError)"
    )
    assert "Traceback" not in done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{study.name}_lesions.csv", f"{study.name}_seg.nii.gz"]


def test_a_segment_job_with_dicom_adds_single_file_artifacts(study_and_model, tmp_path, monkeypatch):
    from bmcore.jobs.runner import run_segment

    study, checkpoint = study_and_model
    monkeypatch.setenv("BMSEG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        params = validate_job("segment", {"study_dir": str(study), "model": str(checkpoint), "dicom": True})
        metrics, artifacts = run_segment("job1", params, None, None, lambda *a: None, lambda: False)
    finally:
        get_settings.cache_clear()
    name = study.name
    assert set(artifacts) == {
        f"{name}_{kind}" for kind in ("seg", "lesions", "rtstruct", "dicom_seg", "t1ce_dicom")
    }
    assert all(Path(p).is_file() for p in artifacts.values())
    assert artifacts[f"{name}_dicom_seg"].endswith(f"{name}_seg.dcm")
    with zipfile.ZipFile(artifacts[f"{name}_t1ce_dicom"]) as archive:
        names = archive.namelist()
    assert len(names) == 24 and all(n.startswith(f"{name}_t1ce_dicom/slice_") for n in names)
    assert metrics["lesion_count"] == len(metrics["studies"][name]["lesions"])


def test_the_dicom_option_is_a_segment_flag():
    assert validate_job("segment", {"study_dir": "/s", "dicom": False})["dicom"] is False
    with pytest.raises(JobParamsError, match="params.dicom must be true or false"):
        validate_job("segment", {"study_dir": "/s", "dicom": "yes"})
    with pytest.raises(JobParamsError, match="unknown evaluate parameter"):
        validate_job("evaluate", {"data": "/d", "dicom": True})


def test_highdicom_loads_only_for_dicom_outputs():
    probe = "import sys, bmcore.cli.evaluate, bmcore.jobs.runner; print('highdicom' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, env=os.environ
    )
    assert done.stdout.strip() == "False", done.stderr
