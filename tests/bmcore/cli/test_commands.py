"""CLI behaviour beyond `check`: refusing to mix cohorts, segmenting past a bad study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def bmseg(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bmcore.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
        timeout=300,
    )


def test_synth_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "old-study").mkdir()
    done = bmseg("synth", str(tmp_path), "--cases", "1", "--shape", "32,32,16", "--spacing", "7,7,10")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: ") and "--force" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old-study"]


def test_segment_goes_on_past_a_bad_study_and_exits_non_zero(tmp_path):
    from bmcore.data.synth import synth_cohort
    from bmcore.models import build_model, save_checkpoint

    cohort = tmp_path / "cohort"
    synth_cohort(cohort, 2, seed=5, layout="brats", shape=(64, 64, 24), spacing=(3.5, 3.5, 6.0), workers=1)
    bad, good = sorted(p for p in cohort.iterdir() if p.is_dir())
    (bad / f"{bad.name}-t2w.nii.gz").write_bytes(b"not a nifti file")
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(
        checkpoint,
        build_model("unet", base_channels=4, depth=2),
        "unet",
        extra={"preprocess": {"size": 64, "modalities": ["t1", "t1ce", "t2", "flair"]}},
    )
    done = bmseg("segment", str(cohort), "--model", str(checkpoint), "-o", str(tmp_path / "out"))
    assert done.returncode == 1, done.stderr
    assert f"FAIL {bad.name}" in done.stdout and "Traceback" not in done.stdout + done.stderr
    assert (tmp_path / "out" / f"{good.name}_seg.nii.gz").is_file()
    assert (tmp_path / "out" / f"{good.name}_lesions.csv").is_file()
    assert not (tmp_path / "out" / f"{bad.name}_seg.nii.gz").exists()
