"""The cohort summary as JSON-ready data, and its short plain-text form for the command line.

What is counted: patients, studies, visits per patient; primary cancer types against the reference study's
proportions :data:`STUDY_PRIMARY_CANCER_SHARES`; lesions per study and lesion diameters; the patient-level
split; the per-class voxel distribution of the labels and of predicted masks, against the study's
predicted shares :data:`STUDY_PREDICTED_CLASS_SHARES` (see :mod:`bmcore.reports.cohort`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bmcore import imaging
from bmcore.data.split import DEFAULT_RATIOS, SIDES, lesion_free_patients, split_studies
from bmcore.metrics import DIAMETER_BIN_NAMES, diameter_bin
from bmcore.patients import PRIMARY_CANCER_TYPES, normalize_primary
from bmcore.reports.cohort.records import CLASSES, cached_record, load_primary_cancers

# The reference study's cohort (per patient) and its model's predicted class shares (of tumour voxels).
STUDY_PRIMARY_CANCER_SHARES: dict[str, float] = {
    "lung": 0.390,
    "breast": 0.245,
    "melanoma": 0.163,
    "renal": 0.043,
    "other": 0.158,
}
STUDY_PREDICTED_CLASS_SHARES: dict[str, float] = {"NETC": 0.329, "SNFH": 0.316, "ET": 0.356}
UNKNOWN = "unknown"


def _shares(counts: Mapping[str, int]) -> dict[str, float | None]:
    total = sum(counts.values())
    return {key: (round(value / total, 4) if total else None) for key, value in counts.items()}


def _class_summary(records: list[dict], key: str) -> dict[str, Any] | None:
    used = [r[key] for r in records if r[key] is not None]
    if not used:
        return None
    voxels = {name: int(sum(r[name] for r in used)) for name in CLASSES}
    return {"studies": len(used), "voxels": voxels, "shares": _shares(voxels)}


def _split_summary(split: Mapping[str, Any]) -> dict[str, Any]:
    patients = {side: len(split["patients"].get(side, [])) for side in SIDES}
    study_counts = {side: len(split["studies"].get(side, [])) for side in SIDES}
    return {
        "seed": split.get("seed"),
        "ratios": dict(zip(SIDES, split.get("ratios", DEFAULT_RATIOS), strict=True)),
        "patients": patients,
        "studies": study_counts,
        "patient_shares": _shares(patients),
        "study_shares": _shares(study_counts),
        "members": {side: list(split["patients"].get(side, [])) for side in SIDES},
    }


def _distribution(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "min": None, "max": None}
    array = np.asarray(values, dtype=float)
    return {
        "mean": round(float(array.mean()), 2),
        "median": round(float(np.median(array)), 2),
        "min": round(float(array.min()), 2),
        "max": round(float(array.max()), 2),
    }


def summarize_studies(
    studies: Sequence[imaging.StudyRef],
    primary_cancers: Mapping[str, str | None] | None = None,
    predictions: Mapping[str, Path] | None = None,
    split: Mapping[str, Any] | None = None,
    seed: int = 0,
    max_voxels: int | None = None,
    record_cache: Path | None = None,
) -> dict[str, Any]:
    """The cohort summary of ``studies`` (see the module docstring); JSON-ready.

    ``primary_cancers`` maps patient id → type (or None: unknown); ``predictions`` study id → mask file;
    ``split`` a :func:`split_studies` result (default: a fresh split with ``seed``). A study whose label
    cannot be read is listed under ``skipped`` and left out of the lesion and class figures.
    ``record_cache``: a folder keeping each study's figures, keyed by its files' paths, sizes and times.
    """
    records, skipped = _read_records(studies, predictions or {}, max_voxels, record_cache)
    by_patient: dict[str, list[str]] = {}
    for ref in studies:
        by_patient.setdefault(ref.patient_id, []).append(ref.study_id)
    visits = Counter(len(ids) for ids in by_patient.values())
    primary_of = {pid: normalize_primary((primary_cancers or {}).get(pid)) for pid in by_patient}
    labelled = [r for r in records if r["lesions"] is not None]
    lesions = _lesion_summary(labelled)
    return {
        "counts": {
            "patients": len(by_patient),
            "studies": len(studies),
            "labelled_studies": len(labelled),
            "multiclass_labels": sum(1 for r in labelled if r["label_kind"] != "enhancing"),
            "predicted_studies": sum(1 for r in records if r["predicted_class_voxels"] is not None),
            "lesions": lesions["total"],
        },
        "visits_per_patient": {
            "histogram": {str(k): visits[k] for k in sorted(visits)},
            "mean": round(len(studies) / len(by_patient), 2) if by_patient else None,
        },
        "primary_cancer": _primary_cancer_summary(primary_of.values()),
        "lesions": lesions,
        "split": _split_info(studies, records, split, seed) if split is not None or by_patient else None,
        "class_distribution": {
            "labels": _class_summary(records, "class_voxels"),
            "predictions": _class_summary(records, "predicted_class_voxels"),
            "reference_predicted": STUDY_PREDICTED_CLASS_SHARES,
        },
        "patients": [
            {"patient_id": pid, "primary_cancer": primary_of[pid], "studies": ids}
            for pid, ids in sorted(by_patient.items())
        ],
        "studies": records,
        "skipped": skipped,
    }


def _read_records(
    studies: Sequence[imaging.StudyRef],
    predictions: Mapping[str, Path],
    max_voxels: int | None,
    record_cache: Path | None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Each study's record, and the studies whose label could not be read (with the error's first line)."""
    records, skipped = [], []
    for ref in studies:
        try:
            records.append(cached_record(ref, predictions.get(ref.study_id), max_voxels, record_cache))
        except (imaging.StudyError, OSError) as exc:
            skipped.append({"study_id": ref.study_id, "error": str(exc).splitlines()[0] if str(exc) else ""})
    return records, skipped


def _primary_cancer_summary(primaries: Iterable[str | None]) -> dict[str, Any]:
    """Patients per primary cancer type (None: unknown), their shares and the reference study's."""
    counts = {name: 0 for name in PRIMARY_CANCER_TYPES}
    unknown = 0
    for value in primaries:
        if value is None:
            unknown += 1
        else:
            counts[value] += 1
    return {
        "counts": counts,
        "unknown": unknown,
        "shares": _shares(counts),
        "reference": STUDY_PRIMARY_CANCER_SHARES,
    }


def _lesion_summary(labelled: list[dict[str, Any]]) -> dict[str, Any]:
    """Lesions per labelled study and lesion diameters: histograms, distributions and size bins."""
    diameters = [d for r in labelled for d in r["diameters_mm"]]
    per_study = Counter(r["lesions"] for r in labelled)
    bins = Counter(diameter_bin(d) for d in diameters)
    return {
        "total": len(diameters),
        "per_study_histogram": {str(k): per_study[k] for k in sorted(per_study)},
        "per_study": _distribution([r["lesions"] for r in labelled]),
        "diameter_mm": _distribution(diameters),
        "diameter_bins": {name: bins.get(name, 0) for name in DIAMETER_BIN_NAMES},
    }


def _split_info(
    studies: Sequence[imaging.StudyRef],
    records: list[dict[str, Any]],
    split: Mapping[str, Any] | None,
    seed: int,
) -> dict[str, Any]:
    """The given split's summary, else that of a fresh patient-level split drawn with ``seed``."""
    if split is None:
        # the training split's strata, from the records rather than from the label files again
        lesion_voxels = {record["study_id"]: record.get("lesion_voxels") for record in records}
        lesion_free = lesion_free_patients(studies, lambda ref: lesion_voxels.get(ref.study_id))
        split = split_studies(list(studies), seed=seed, lesion_free=lesion_free)
    return _split_summary(split)


def summarize_cohort(
    data_dir: str | Path,
    predictions: dict[str, Path] | None = None,
    split: dict | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The summary of every study under ``data_dir`` (a data folder or a CSV manifest); primary cancers
    from its ``cohort.json`` when it is a synthetic cohort."""
    studies = imaging.find_studies(data_dir)
    return summarize_studies(studies, load_primary_cancers(data_dir), predictions, split, seed)


def format_table(summary: Mapping[str, Any]) -> str:
    """A short plain-text overview for the command line."""
    counts = summary["counts"]
    lines = [
        f"patients {counts['patients']}, studies {counts['studies']} "
        f"(labelled {counts['labelled_studies']}, 3-class {counts['multiclass_labels']}), "
        f"lesions {counts['lesions']}",
        "",
        f"{'primary cancer':<16}{'patients':>9}{'share':>8}{'study':>8}",
    ]
    info = summary["primary_cancer"]
    for name in PRIMARY_CANCER_TYPES:
        share = info["shares"][name]
        lines.append(
            f"{name:<16}{info['counts'][name]:>9}{'' if share is None else f'{100 * share:.1f}%':>8}"
            f"{100 * info['reference'][name]:>7.1f}%"
        )
    if info["unknown"]:
        lines.append(f"{UNKNOWN:<16}{info['unknown']:>9}")
    split = summary.get("split")
    if split:
        lines += ["", f"{'split':<16}{'patients':>9}{'studies':>9}"]
        lines += [f"{side:<16}{split['patients'][side]:>9}{split['studies'][side]:>9}" for side in SIDES]
    distribution = summary["class_distribution"]
    lines += ["", f"{'class':<16}{'labels':>9}{'predicted':>11}{'study':>8}"]
    for name in CLASSES:
        cells = []
        for key in ("labels", "predictions"):
            data = distribution[key]
            share = data["shares"][name] if data else None
            cells.append("–" if share is None else f"{100 * share:.1f}%")
        lines.append(
            f"{name:<16}{cells[0]:>9}{cells[1]:>11}{100 * distribution['reference_predicted'][name]:>7.1f}%"
        )
    lesions = summary["lesions"]
    lines += [
        "",
        f"lesions per study: mean {lesions['per_study']['mean']}, median {lesions['per_study']['median']}; "
        f"diameter median {lesions['diameter_mm']['median']} mm",
    ]
    if summary.get("skipped"):
        lines.append(f"skipped {len(summary['skipped'])} unreadable label(s)")
    return "\n".join(lines)
