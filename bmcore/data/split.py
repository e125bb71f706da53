"""Patient-level splits: all visits of one patient on one side, seeded, saved with the run.

Patients none of whose studies shows a lesion are split apart from the others, so that validation and
test get lesion-bearing patients whenever there are three or more: a side without lesions scores
every model 1.0 (no lesion, none predicted) and would choose the registry's champion blindly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bmcore import imaging

DEFAULT_RATIOS = (0.67, 0.20, 0.13)
SIDES = ("train", "val", "test")


def split_patients(patient_ids: Sequence[str], ratios=DEFAULT_RATIOS, seed: int = 0) -> dict[str, list[str]]:
    """Shuffle unique patients with ``seed`` and cut them 67 / 20 / 13.

    With three or more patients every side gets at least one, so a small cohort still has a test set.
    """
    if not np.isclose(sum(ratios), 1.0) or any(r < 0 for r in ratios):
        raise ValueError(f"split ratios {ratios} must be non-negative and sum to 1")
    patients = sorted(set(patient_ids))
    if not patients:
        raise ValueError("no patients to split")
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    n = len(order)
    n_val = round(ratios[1] * n)
    n_test = round(ratios[2] * n)
    if n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    n_train = n - n_val - n_test
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def split_studies(studies, ratios=DEFAULT_RATIOS, seed: int = 0, lesion_free: Collection[str] = ()) -> dict:
    """Split :class:`bmcore.imaging.StudyRef` objects by patient; returns patients and study ids per side.

    ``lesion_free``: patients none of whose studies shows a lesion (:func:`lesion_free_patients`); the
    lesion-bearing patients and they are each cut 67/20/13 on their own, then put together.
    """
    everyone = sorted({s.patient_id for s in studies})
    free = sorted(set(lesion_free) & set(everyone))
    bearing = sorted(set(everyone) - set(free))
    if free and bearing:
        parts = split_patients(bearing, ratios, seed), split_patients(free, ratios, seed)
        patients = {side: sorted(parts[0][side] + parts[1][side]) for side in SIDES}
    else:
        patients = split_patients(everyone, ratios, seed)
    side_of = {p: side for side, ps in patients.items() for p in ps}
    study_ids = {side: [] for side in SIDES}
    for study in studies:
        study_ids[side_of[study.patient_id]].append(study.study_id)
    return {
        "seed": seed,
        "ratios": list(ratios),
        "patients": patients,
        "studies": study_ids,
        "lesion_free_patients": free,
    }


def lesion_free_patients(studies, lesion_voxels: Callable[[Any], int | None] | None = None) -> list[str]:
    """Patients all of whose studies have a label marking no lesion voxel.

    ``lesion_voxels(study)`` counts a study's lesion voxels, None when unknown (default: read the label,
    :func:`bmcore.imaging.lesion_voxels`). A patient with an unlabelled or unknown study is not counted as
    lesion-free: nothing is known of that visit.
    """
    if lesion_voxels is None:

        def lesion_voxels(study) -> int | None:
            return None if study.label is None else imaging.lesion_voxels(study)

    bearing_or_unknown = set()
    for study in studies:
        count = lesion_voxels(study)
        if count is None or count > 0:
            bearing_or_unknown.add(study.patient_id)
    return sorted({s.patient_id for s in studies} - bearing_or_unknown)


def kfold_patients(patient_ids: Sequence[str], folds: int, seed: int = 0) -> list[list[str]]:
    """``folds`` disjoint patient groups of near-equal size (for cross-validation)."""
    patients = sorted(set(patient_ids))
    if folds < 2 or folds > len(patients):
        raise ValueError(f"cannot make {folds} folds from {len(patients)} patients")
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    return [sorted(order[i::folds]) for i in range(folds)]


def save_split(split: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split, indent=1))
    return path


def load_split(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
