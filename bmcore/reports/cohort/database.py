"""The cohort report of database studies (the web's ``/cohort`` and patient pages), cached on disk.

Reports live under ``cache_root/reports/<fingerprint>/``, per-study figures under ``records/`` and
lesion tables under ``lesions/``; old reports beyond the newest :data:`KEEP_REPORTS` are removed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bmcore import imaging
from bmcore.db import Study
from bmcore.reports.cohort.records import CACHE_VERSION, file_key, study_lesions, write_atomically
from bmcore.reports.cohort.report import write_report_atomically

KEEP_REPORTS = 8
KEEP_PATIENT_PLOTS = 256


def visit_label(study: Study) -> str:
    """A study's visit as shown: ``Study.visit``, else the UCSF-BMSR letter or BraTS-METS number of its id,
    else its upload date."""
    if study.visit:
        return study.visit
    ucsf = re.match(r"^\d{6}([A-Za-z]+)$", study.study_uid)
    if ucsf:
        return ucsf.group(1)
    brats = imaging.BRATS_ID.match(study.study_uid)
    if brats:
        return brats.group(2)
    return study.created_at.strftime("%Y-%m-%d") if study.created_at else study.study_uid


def sort_visits(studies: Sequence[Study]) -> list[Study]:
    """A patient's studies in visit order (visit label, then upload time, then id)."""
    return sorted(
        studies, key=lambda s: (visit_label(s), s.created_at.isoformat() if s.created_at else "", s.id)
    )


def patient_label(study: Study, qualified: bool = False) -> str:
    """The patient as a cohort report names it: the pseudonym, or ``group/pseudonym`` when ``qualified``."""
    patient = study.patient
    return f"{patient.group.name}/{patient.pseudonym}" if qualified else patient.pseudonym


def shared_pseudonyms(studies: Sequence[Study]) -> set[str]:
    """Pseudonyms that name more than one patient among ``studies`` (the same pseudonym in two groups)."""
    patients: dict[str, set[int]] = {}
    for study in studies:
        patients.setdefault(study.patient.pseudonym, set()).add(study.patient_id)
    return {pseudonym for pseudonym, ids in patients.items() if len(ids) > 1}


def study_ref(study: Study, qualified: bool = False) -> imaging.StudyRef:
    """The files of a database study (found from ``Study.directory``), under its uid and patient label."""
    ref = imaging.study_from_dir(study.directory)
    if ref.label is None and study.label_path and Path(study.label_path).is_file():
        ref = replace(ref, label=Path(study.label_path), label_kind="multiclass")
    return replace(ref, study_id=study.study_uid, patient_id=patient_label(study, qualified))


def database_report(
    studies: Sequence[Study],
    cache_root: str | Path,
    predictions: Mapping[str, Path] | None = None,
    seed: int = 0,
    max_voxels: int | None = None,
) -> tuple[dict[str, Any], Path]:
    """The report of database studies, cached under ``cache_root/<fingerprint>/``: (summary, folder).

    The fingerprint covers the studies (ids, checksums, folders), their patients' primary cancers, the
    prediction files and the seed, so an edit or a new segmentation gives a new report. Per-study figures
    are cached apart (``cache_root/records``), so a new report rereads no unchanged label; old reports
    beyond the newest :data:`KEEP_REPORTS` are removed. Layout: ``reports/<fingerprint>/``, ``records/``,
    ``lesions/`` (see :func:`cached_study_lesions`).
    """
    cache_root = Path(cache_root)
    predictions = dict(predictions or {})
    studies = sort_visits(studies)
    target = cache_root / "reports" / _fingerprint(studies, predictions, seed)
    if (target / "cohort.json").is_file():
        return json.loads((target / "cohort.json").read_text()), target
    refs, unreadable = [], []
    shared = shared_pseudonyms(studies)  # two groups' patients of one pseudonym are two patients
    for study in studies:
        try:
            refs.append(study_ref(study, study.patient.pseudonym in shared))
        except (imaging.StudyError, OSError) as exc:
            unreadable.append({"study_id": study.study_uid, "error": str(exc).splitlines()[0]})
    primaries = {patient_label(s, s.patient.pseudonym in shared): s.patient.primary_cancer for s in studies}
    summary = write_report_atomically(
        target,
        studies=refs,
        primary_cancers=primaries,
        predictions=predictions,
        seed=seed,
        max_voxels=max_voxels,
        record_cache=cache_root / "records",
        skipped=unreadable,
    )
    prune_cache(target.parent, KEEP_REPORTS)
    return summary, target


def _fingerprint(studies: Sequence[Study], predictions: Mapping[str, Path], seed: int) -> str:
    """The report's cache key: everything about the studies, their patients and predictions it shows."""
    key = [
        CACHE_VERSION,
        seed,
        sorted(
            [
                s.id,
                s.study_uid,
                s.checksum,
                s.directory,
                s.label_path,
                s.patient.pseudonym,
                s.patient.group_id,
                s.patient.primary_cancer,
                file_key(predictions.get(s.study_uid)),
            ]
            for s in studies
        ),
    ]
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:24]


def prune_cache(folder: Path, keep: int) -> None:
    """Keep the ``keep`` newest entries of a cache folder (temporary ``.``-entries are left alone)."""
    try:
        entries = [(p.stat().st_mtime, p) for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError:
        return
    for _, old in sorted(entries, reverse=True)[keep:]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def cached_study_lesions(
    study: Study, cache_root: str | Path, max_voxels: int | None = None
) -> list[dict] | None:
    """Ground-truth lesion rows of a database study (None without a label), kept in
    ``cache_root/lesions`` by label file."""
    ref = study_ref(study)
    if ref.label is None:
        return None
    key = [CACHE_VERSION, file_key(ref.label), ref.label_kind, sorted(ref.label_map.items())]
    path = Path(cache_root) / "lesions" / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        rows = study_lesions(ref, max_voxels)
        write_atomically(path, json.dumps(rows))
        return rows
