"""Fixtures for the data-path tests (bmcore.imaging, bmcore.data): small synthetic cohorts and bad inputs.

  brats_cohort   session-wide: 4 BraTS-METS-layout studies (3 patients, one with two visits) on a coarse grid
  ucsf_cohort    session-wide: 8 UCSF-BMSR-layout studies with multi-visit patients, binary-only studies
                 and studies that also have a ``_BraTS-seg``
  bad_study      parametrised over the bad-input battery: a data folder holding one broken copy of a
                 BraTS study, the message fragment the failure must name, and extra ``bmseg check`` options

Everything is written with nibabel into pytest's temporary folders; nothing is mocked.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bmcore.data.synth import plan_cohort, synth_cohort

SMALL_SHAPE = (64, 64, 40)
SMALL_SPACING = (3.5, 3.5, 4.0)


@pytest.fixture(scope="session")
def brats_cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("brats") / "cohort"
    synth_cohort(root, 4, 0, "brats", shape=SMALL_SHAPE, spacing=SMALL_SPACING, workers=1)
    return root


def _ucsf_seed(cases: int) -> int:
    """The first seed whose plan has a patient with several visits, binary-only and 3-class studies."""
    for seed in range(50):
        plans, _ = plan_cohort(cases, seed, "ucsf")
        patients = [p.patient_id for p in plans]
        kinds = {p.write_multiclass for p in plans}
        if len(set(patients)) < len(patients) and kinds == {True, False}:
            return seed
    raise AssertionError("no seed gives a varied UCSF cohort")


@pytest.fixture(scope="session")
def ucsf_cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ucsf") / "cohort"
    synth_cohort(root, 8, _ucsf_seed(8), "ucsf", shape=SMALL_SHAPE, spacing=SMALL_SPACING, workers=1)
    return root


# ------------------------------------------------------------------------------------- bad-input battery


@dataclass(frozen=True)
class BadStudy:
    name: str
    root: Path  # a data folder with the one broken study
    study_id: str
    expected: str  # fragment of the one-line message
    check_options: tuple[str, ...] = ()
    max_voxels: int | None = None
    label_only: bool = False  # only commands that read labels see the problem


def _file(study: Path, suffix: str) -> Path:
    return study / f"{study.name}-{suffix}.nii.gz"


def _replace_data(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    original = nib.load(path)
    nib.save(nib.Nifti1Image(data, original.affine if affine is None else affine), path)


def _edit_header(path: Path, offset: int, fmt: str, *values) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    struct.pack_into(fmt, raw, offset, *values)
    path.write_bytes(gzip.compress(bytes(raw)))


def _image(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _missing(study):
    _file(study, "t1n").unlink()


def _truncated(study):
    raw = _file(study, "t2w").read_bytes()
    _file(study, "t2w").write_bytes(raw[: len(raw) // 2])


def _not_nifti(study):
    _file(study, "t2w").write_bytes(b"this is a text file, not an image\n" * 50)


def _two_d(study):
    _replace_data(_file(study, "t2w"), np.ones(SMALL_SHAPE[:2], np.int16))


def _five_d(study):
    _replace_data(_file(study, "t2w"), np.ones((*SMALL_SHAPE, 2, 2), np.int16))


def _shape(study):
    _replace_data(
        _file(study, "t2w"), np.ones((SMALL_SHAPE[0], SMALL_SHAPE[1], SMALL_SHAPE[2] + 1), np.int16)
    )


def _affine(study):
    path = _file(study, "t2w")
    affine = nib.load(path).affine.copy()
    affine[0, 3] += 5.0
    _replace_data(path, _image(path), affine)


def _with_value(study, suffix, value, dtype=np.float32):
    path = _file(study, suffix)
    data = _image(path).astype(dtype)
    data[SMALL_SHAPE[0] // 2, SMALL_SHAPE[1] // 2, SMALL_SHAPE[2] // 2] = value
    _replace_data(path, data)


def _all_zero(study):
    _replace_data(_file(study, "t2w"), np.zeros(SMALL_SHAPE, np.int16))


def _huge_header_only(study):
    """A header claiming 2000³ voxels and no data at all: only a check before reading can name the size."""
    path = _file(study, "t2w")
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.int16)
    header.set_sform(nib.load(_file(study, "t1n")).affine, code=1)
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))


def _complex(study):
    path = _file(study, "t2w")
    _replace_data(path, _image(path).astype(np.complex64))


def _singular_affine(study):
    for suffix in ("t1n", "t1c", "t2w", "t2f", "seg"):  # sform_code 1 with zero rows, qform off
        _edit_header(_file(study, suffix), 252, "<hh", 0, 1)
        for offset in (280, 296, 312):
            _edit_header(_file(study, suffix), offset, "<4f", 0, 0, 0, 0)


def _bad_dim_count(study):
    _edit_header(_file(study, "t2w"), 40, "<h", 9)  # dim[0] = 9: nibabel refuses the header


BAD_CASES = {
    # name: (damage, expected message fragment, extra options, label only)
    "missing_modality": (_missing, "missing modality t1", (), False),
    "truncated_gz": (_truncated, "truncated or corrupt data", (), False),
    "not_nifti": (_not_nifti, "not a readable NIfTI file", (), False),
    "array_2d": (_two_d, "array is 2D", (), False),
    "array_5d": (_five_d, "array is 5D", (), False),
    "shape_mismatch": (_shape, "shape (64, 64, 41) disagrees with", (), False),
    "affine_mismatch": (_affine, "affine disagrees with", (), False),
    "nan_voxels": (lambda s: _with_value(s, "t2w", np.nan), "1 NaN/Inf voxels", (), False),
    "inf_voxels": (lambda s: _with_value(s, "t2w", np.inf), "1 NaN/Inf voxels", (), False),
    "all_zero": (_all_zero, "volume is all zero", (), False),
    "too_many_voxels": (
        _huge_header_only,
        "header claims 8,000,000,000 voxels, over the limit of 1,000,000",
        ("--max-voxels", "1000000"),
        False,
    ),
    "complex_voxels": (_complex, "unsupported voxel type complex64", (), False),
    "singular_affine": (_singular_affine, "affine is singular or not finite", (), False),
    "corrupt_header": (_bad_dim_count, "not a readable NIfTI file", (), False),
    "label_out_of_range": (
        lambda s: _with_value(s, "seg", 5, np.uint8),
        "label values [5] outside [0, 1, 2, 3]",
        (),
        True,
    ),
    "label_not_integer": (lambda s: _with_value(s, "seg", 1.5), "label values are not integers", (), True),
}


@pytest.fixture(scope="session", params=sorted(BAD_CASES))
def bad_study(request, brats_cohort, tmp_path_factory) -> BadStudy:
    damage, expected, options, label_only = BAD_CASES[request.param]
    source = sorted(p for p in brats_cohort.iterdir() if p.is_dir())[0]
    root = tmp_path_factory.mktemp(f"bad-{request.param}")
    study = root / source.name
    shutil.copytree(source, study)
    damage(study)
    max_voxels = int(options[1]) if options else None
    return BadStudy(request.param, root, source.name, expected, options, max_voxels, label_only)
