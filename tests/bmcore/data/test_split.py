"""Tests of bmcore.data.split: patient-level 67/20/13 splits and k folds."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bmcore import imaging
from bmcore.data.split import (
    kfold_patients,
    lesion_free_patients,
    load_split,
    save_split,
    split_patients,
    split_studies,
)

PATIENTS = [f"{100000 + i:06d}" for i in range(100)]


def test_hundred_patients_split_67_20_13():
    split = split_patients(PATIENTS, seed=0)
    assert {side: len(ids) for side, ids in split.items()} == {"train": 67, "val": 20, "test": 13}


@pytest.mark.parametrize("n", [3, 4, 5, 7, 10, 23, 50, 99, 100, 101, 137, 413])
def test_proportions_within_one_and_every_side_non_empty(n):
    split = split_patients([f"p{i}" for i in range(n)], seed=1)
    for side, ratio in zip(("train", "val", "test"), (0.67, 0.20, 0.13), strict=True):
        assert len(split[side]) >= 1
        if n >= 10:
            assert abs(len(split[side]) - ratio * n) <= 1, (side, n, len(split[side]))
    assert sorted(sum(split.values(), [])) == sorted(f"p{i}" for i in range(n))


def test_tiny_cohorts():
    assert split_patients(["a"]) == {"train": ["a"], "val": [], "test": []}
    assert sum(map(len, split_patients(["a", "b"]).values())) == 2
    with pytest.raises(ValueError, match="no patients"):
        split_patients([])
    with pytest.raises(ValueError, match="sum to 1"):
        split_patients(PATIENTS, ratios=(0.5, 0.2, 0.2))


def test_seeded_determinism():
    assert split_patients(PATIENTS, seed=7) == split_patients(list(reversed(PATIENTS)), seed=7)
    assert split_patients(PATIENTS, seed=7) != split_patients(PATIENTS, seed=8)


def test_visits_of_a_patient_stay_on_one_side(ucsf_cohort, tmp_path):
    studies = imaging.find_studies(ucsf_cohort)
    assert len({s.patient_id for s in studies}) < len(studies), "the cohort has multi-visit patients"
    for seed in range(5):
        result = split_studies(studies, seed=seed)
        side_of_study = {sid: side for side, ids in result["studies"].items() for sid in ids}
        assert sorted(side_of_study) == sorted(s.study_id for s in studies)
        for study in studies:
            assert study.patient_id in result["patients"][side_of_study[study.study_id]]
        sides = [set(result["patients"][side]) for side in ("train", "val", "test")]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        assert all(sides)
    path = save_split(result, tmp_path / "runs" / "split.json")
    assert load_split(path) == result


def test_kfold_disjoint_and_covering():
    folds = kfold_patients(PATIENTS + PATIENTS[:10], 5, seed=3)  # duplicates count once
    assert sorted(sum(folds, [])) == sorted(PATIENTS)
    assert all(len(f) == 20 for f in folds)
    assert all(not set(a) & set(b) for i, a in enumerate(folds) for b in folds[i + 1 :])
    assert kfold_patients(PATIENTS, 5, seed=3) == folds
    assert {len(f) for f in kfold_patients(PATIENTS[:7], 3)} == {2, 3}
    with pytest.raises(ValueError, match="cannot make 4 folds from 3 patients"):
        kfold_patients(["a", "b", "c"], 4)


def test_split_command_writes_the_split(ucsf_cohort, tmp_path):
    out = tmp_path / "split.json"
    bmseg = Path(sys.executable).with_name("bmseg")
    result = subprocess.run(
        [str(bmseg), "split", str(ucsf_cohort), "--seed", "2", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(out.read_text())
    studies = imaging.find_studies(ucsf_cohort)
    expected = split_studies(studies, seed=2, lesion_free=lesion_free_patients(studies))
    assert json.loads(out.read_text()) == expected  # the split training would use: stratified
    assert expected["lesion_free_patients"], "the UCSF fixture has a patient without lesions"


@dataclass(frozen=True)
class FakeStudy:
    patient_id: str
    study_id: str


def test_lesion_free_patients_never_fill_validation_or_test_alone():
    """7 of 10 patients show no lesion: unstratified, some seeds give validation or test no lesion at
    all (every model would score 1.0 there); stratified, each side gets one of the 3 lesion-bearing."""
    studies = [FakeStudy(f"p{i}", f"p{i}-000") for i in range(10)]
    free = [f"p{i}" for i in range(7)]
    blind = 0
    for seed in range(30):
        plain = split_studies(studies, seed=seed)
        blind += any(set(plain["patients"][side]) <= set(free) for side in ("val", "test"))
        split = split_studies(studies, seed=seed, lesion_free=free)
        for side in ("train", "val", "test"):
            assert len(set(split["patients"][side]) - set(free)) == 1, (seed, split["patients"])
        assert sorted(sum(split["patients"].values(), [])) == sorted(s.patient_id for s in studies)
        assert split["lesion_free_patients"] == free
    assert blind > 0  # the case the strata exist for does happen without them


def test_lesion_free_patients_reads_the_labels(brats_cohort, tmp_path):
    import nibabel as nib
    import numpy as np

    cohort = tmp_path / "cohort"
    shutil.copytree(brats_cohort, cohort)
    studies = imaging.find_studies(cohort)
    assert all(imaging.lesion_voxels(s) > 0 for s in studies)  # the synthetic studies all have lesions
    emptied = next(s for s in studies if [t.patient_id for t in studies].count(s.patient_id) == 1)
    label = nib.load(str(emptied.label))
    nib.save(nib.Nifti1Image(np.zeros(label.shape, np.uint8), label.affine), str(emptied.label))
    assert imaging.lesion_voxels(emptied) == 0
    assert lesion_free_patients(studies) == [emptied.patient_id]
    unlabelled = dataclasses.replace(emptied, label=None)
    assert lesion_free_patients([unlabelled]) == []  # unknown is not lesion-free
