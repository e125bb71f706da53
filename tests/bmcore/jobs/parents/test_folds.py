"""Cross-validation folds by patient (bmcore.jobs.parents.folds)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from bmcore.jobs.parents.folds import crossval_splits


@dataclass
class FakeStudy:
    study_id: str
    patient_id: str


def test_crossval_folds_test_every_patient_once_with_all_visits_together():
    studies = [FakeStudy(f"s{p}-{v}", f"p{p}") for p in range(7) for v in range(1 + p % 3)]
    for folds in (2, 3, 5, 7):
        splits = crossval_splits(studies, folds, seed=1)
        tested = [p for split in splits for p in split["patients"]["test"]]
        assert sorted(tested) == sorted({s.patient_id for s in studies})  # every patient tested exactly once
        assert Counter(s for split in splits for s in split["studies"]["test"]) == Counter(
            s.study_id for s in studies
        )
        for split in splits:
            sides = [set(split["patients"][side]) for side in ("train", "val", "test")]
            assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
            for side in ("train", "val", "test"):
                patients = set(split["patients"][side])
                assert set(split["studies"][side]) == {
                    s.study_id for s in studies if s.patient_id in patients
                }
    with pytest.raises(ValueError, match="cannot make 8 folds"):
        crossval_splits(studies, 8)
