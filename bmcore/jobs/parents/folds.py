"""Cross-validation folds: one explicit split per fold, by patient, and the fold's child train params.

Runs on the worker (:func:`crossval_children` reads the data set); the request itself is checked at
submit time by :func:`bmcore.jobs.parent_params.check_crossval`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from bmcore import imaging
from bmcore.data.split import kfold_patients
from bmcore.jobs.parent_params import check_child, check_crossval, config_hash

K2_VAL_FRACTION = 0.2


def crossval_splits(studies: Sequence[Any], folds: int, seed: int = 0) -> list[dict[str, Any]]:
    """One explicit split per fold from studies with ``study_id`` and ``patient_id``: fold i tests on
    patient group i, validates on group i+1 (k = 2: on a fifth of the other patients), trains on the rest."""
    patients = sorted({s.patient_id for s in studies})
    groups = kfold_patients(patients, folds, seed)
    splits = []
    for index, test in enumerate(groups):
        rest = [p for p in patients if p not in set(test)]
        if folds >= 3:
            val = groups[(index + 1) % folds]
        else:
            shuffled = sorted(rest)
            random.Random(seed * 1000 + index).shuffle(shuffled)
            val = sorted(shuffled[: max(1, round(K2_VAL_FRACTION * len(rest)))])
        train = [p for p in rest if p not in set(val)]
        if not train:
            raise ValueError(
                f"{folds}-fold cross-validation of {len(patients)} patients leaves fold {index} "
                "no training patient"
            )
        sides = {"train": train, "val": sorted(val), "test": sorted(test)}
        side_of = {p: side for side, members in sides.items() for p in members}
        study_ids: dict[str, list[str]] = {side: [] for side in sides}
        for study in studies:
            study_ids[side_of[study.patient_id]].append(study.study_id)
        splits.append({"seed": seed, "fold": index, "folds": folds, "patients": sides, "studies": study_ids})
    return splits


def crossval_children(params: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``({"fold": i}, child train params)`` per fold; reads the data set (the worker's side)."""
    base = check_crossval(params)
    labelled = [ref for ref in imaging.find_studies(params["data"]) if ref.label is not None]
    children = []
    for split in crossval_splits(labelled, params["folds"], params.get("seed", 0)):
        # a fold model learns from (k-1)/k of the patients and is scored on its own fold: it estimates
        # performance; it is not a candidate to segment with, so it never takes ``champion``
        child = {"data": params["data"], **base, "split": split, "evaluate_test": True}
        check_child(child, f"crossval fold {split['fold']}")
        child |= {"champion_eligible": False, "config_hash": config_hash(child)}  # internal: server-made
        children.append(({"fold": split["fold"]}, child))
    return children
