"""Fixtures for the DICOM-in tests: synthetic four-series MR studies written by the test-side scanner.

volumes          session-wide: synthetic t1 / t1ce / t2 / flair volumes (bmcore.data.synth's anatomy)
                 on the small grid SHAPE
no_temp_left     the system temporary folder pointed at an empty folder of the test's own; the test
                 asserts it is empty again at the end (the archive's extraction folder was removed)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from bmcore.data.synth import bias_field, draw_anatomy, render

from .scanner import SHAPE, SPACING


@pytest.fixture(scope="session")
def volumes() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    tissue, _ = draw_anatomy(rng, SHAPE, SPACING)
    bias = bias_field(rng, SHAPE)
    return {m: render(tissue, rng, m, bias).astype(np.float64) for m in ("t1", "t1ce", "t2", "flair")}


@pytest.fixture
def no_temp_left(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder
