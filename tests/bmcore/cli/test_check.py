"""The real ``bmseg`` entry point on good and broken data: ``check`` lines and exit codes, one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BMSEG = Path(sys.executable).with_name("bmseg")


def bmseg(*args: str) -> subprocess.CompletedProcess:
    assert BMSEG.exists(), f"{BMSEG} not installed (pip install -e .)"
    return subprocess.run([str(BMSEG), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_check_good_cohort_one_ok_line_per_study(ucsf_cohort):
    result = bmseg("check", ucsf_cohort)
    assert result.returncode == 0, result.stdout + result.stderr
    studies = sorted(p.name for p in ucsf_cohort.iterdir() if p.is_dir())
    lines = result.stdout.splitlines()
    assert [line.split()[1].rstrip(":") for line in lines if line.startswith("ok ")] == studies
    assert lines[-1] == f"{len(studies)} of {len(studies)} studies usable"
    assert "FAIL" not in result.stdout


def test_check_reports_each_bad_input_on_one_fail_line(bad_study):
    result = bmseg("check", bad_study.root, *bad_study.check_options)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1, output
    assert fails[0].startswith(f"FAIL {bad_study.study_id}")
    assert bad_study.expected in fails[0]
    assert "0 of 1 studies usable" in result.stdout


def test_check_lists_good_and_bad_studies_together(brats_cohort, tmp_path):
    for study in (p for p in brats_cohort.iterdir() if p.is_dir()):
        shutil.copytree(study, tmp_path / study.name)
    broken = sorted(p for p in tmp_path.iterdir())[1]
    (broken / f"{broken.name}-t2f.nii.gz").write_bytes(b"not an image")
    result = bmseg("check", tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert sum(line.startswith("ok ") for line in lines) == 3
    assert [line for line in lines if line.startswith("FAIL")] == [
        f"FAIL {broken.name}-t2f.nii.gz: not a readable NIfTI file "
        f"(File {broken.name}-t2f.nii.gz is not a gzip file)"
    ]
    assert lines[-1] == "3 of 4 studies usable"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("check", "{tmp}/absent"), "no such file or directory"),
        (("check", "{tmp}"), "no studies found"),
        (("split", "{tmp}/absent"), "no such file or directory"),
        (("split", "{tmp}/bad.csv"), "manifest lacks column(s) flair"),
        (("check", "{cohort}", "--modalities", "t1,pd"), "--modalities: unknown pd"),
    ],
)
def test_reading_commands_fail_with_one_error_line(tmp_path, brats_cohort, args, message):
    (tmp_path / "bad.csv").write_text("patient_id,study_id,t1,t1ce,t2\n")
    result = bmseg(*(a.format(tmp=tmp_path, cohort=brats_cohort) for a in args))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained 1-level CNN checkpoint, enough for ``bmseg segment`` to reach the study reading."""
    from bmcore.models import build_model, save_checkpoint

    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    model = build_model("cnn", in_channels=4, base_channels=4, depth=1)
    save_checkpoint(path, model, "cnn", extra={"preprocess": {"size": 64}})
    return path


def test_segment_refuses_bad_input_with_one_error_line(
    bad_study, tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    """The non-check path: a command that reads the images stops with ``error: …`` and exit code 2."""
    from bmcore import cli
    from bmcore.config import get_settings

    if bad_study.label_only:
        pytest.skip("segment does not read labels")
    argv = ["bmseg", "segment", str(bad_study.root), "--model", str(tiny_checkpoint), "-o", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    if bad_study.max_voxels:  # segment takes the limit from the settings
        monkeypatch.setenv("BMSEG_MAX_VOXELS", str(bad_study.max_voxels))
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main()
    finally:
        get_settings.cache_clear()
    captured = capsys.readouterr()
    assert exited.value.code == 2
    assert "Traceback" not in captured.out + captured.err
    error_lines = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, captured.err
    assert error_lines[0].startswith(f"error: {bad_study.study_id}")
    assert bad_study.expected in error_lines[0]
    assert not list(tmp_path.glob("*_seg.nii.gz"))
