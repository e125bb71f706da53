"""The cohort at a glance: a JSON summary and PNG plots of a set of studies (``bmseg cohort``, ``/cohort``).

Torch-free (the web imports it); matplotlib is used through ``Figure`` objects only (no pyplot state),
so plots can be drawn in a threaded web server.

What is counted
---------------
* patients, studies, visits per patient; primary cancer types (from ``cohort.json`` of a synthetic
  cohort, or from the database's ``Patient.primary_cancer``), against the reference study's proportions
  :data:`STUDY_PRIMARY_CANCER_SHARES`;
* lesions per study and lesion diameters: a lesion is a 26-connected tumour-core component
  (:func:`bmcore.metrics.find_lesions`), the diameter that of the sphere of equal volume;
* the patient-level split (:func:`bmcore.data.split.split_studies`, or a split handed in);
* the per-class voxel distribution (NETC, SNFH, ET as shares of tumour voxels) of the labels, and of the
  predicted masks when they are given, against the study's reported predicted shares
  :data:`STUDY_PREDICTED_CLASS_SHARES`. Enhancing-only labels (UCSF-BMSR ``_seg``) count for lesions but
  not for the class distribution, which they would skew towards ET.

Only label files are read (through :mod:`bmcore.imaging`, in the file's own voxel order: components and voxel
counts do not depend on orientation); the images of one study are loaded for the modality sample slices.

The reference figures are the study's as published (its "other" is 15.8 %; the synthetic generator draws
with 15.9 % so that its five shares sum to one).

``bmseg cohort DIR`` runs :func:`write_cohort_report` on a data folder; the web's ``/cohort`` runs
:func:`database_report` on the database's studies and caches it under ``settings.cache_dir / "cohort"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bmcore import imaging
from bmcore.data.split import DEFAULT_RATIOS, SIDES, lesion_free_patients, split_studies
from bmcore.db import Study
from bmcore.imaging.display import radiological, window_unit
from bmcore.metrics import (
    DIAMETER_BIN_NAMES,
    DIAMETER_BINS_MM,
    REGIONS,
    diameter_bin,
    find_lesions,
    lesion_rows,
    region_mask,
)
from bmcore.patients import PRIMARY_CANCER_TYPES, normalize_primary

# The reference study's cohort (per patient) and its model's predicted class shares (of tumour voxels).
STUDY_PRIMARY_CANCER_SHARES: dict[str, float] = {
    "lung": 0.390,
    "breast": 0.245,
    "melanoma": 0.163,
    "renal": 0.043,
    "other": 0.158,
}
STUDY_PREDICTED_CLASS_SHARES: dict[str, float] = {"NETC": 0.329, "SNFH": 0.316, "ET": 0.356}
CLASSES: dict[str, int] = {"NETC": 1, "SNFH": 2, "ET": 3}
UNKNOWN = "unknown"
PLOTS: tuple[str, ...] = (
    "primary_cancer",
    "visits_per_patient",
    "lesions_per_study",
    "lesion_diameters",
    "modality_slices",
    "split",
    "class_distribution",
)
PLOT_TITLES: dict[str, str] = {
    "primary_cancer": "Primary cancer",
    "visits_per_patient": "Visits per patient",
    "lesions_per_study": "Lesions per study",
    "lesion_diameters": "Lesion diameters",
    "modality_slices": "Modalities of one study",
    "split": "Train / validation / test split",
    "class_distribution": "Tumour classes",
}
CLASS_COLOURS = {"NETC": "#e6b800", "SNFH": "#2eaa40", "ET": "#e02020"}
OVERLAY_RGBA = ((0, 0, 0, 0), (1.0, 0.84, 0.0, 0.85), (0.18, 0.8, 0.25, 0.6), (0.9, 0.13, 0.13, 0.85))
MODALITY_TITLES = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
IDENTITY_ORIENTATION = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
DPI = 90
CACHE_VERSION = 2  # bump when a cached record or report changes shape
KEEP_REPORTS = 8
KEEP_PATIENT_PLOTS = 256


# ------------------------------------------------------------------------------------------ reading


def read_label(
    path: str | Path,
    kind: imaging.LabelKind = "multiclass",
    label_map: Mapping[int, int] | None = None,
    max_voxels: int | None = None,
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """A label or mask file as bmseg labels 0..3 in the file's voxel order: (labels, spacing, affine).

    Validated by :mod:`bmcore.imaging` (header, integers, allowed values; an enhancing-only file maps 1 → 3).
    """
    path = Path(path)
    if max_voxels is None:
        from bmcore.config import get_settings

        max_voxels = get_settings().max_voxels
    image = imaging.read_header(path, max_voxels)
    ref = imaging.StudyRef(path.name, "", "label", {}, path, kind, dict(label_map or {}))
    labels = imaging.to_canonical_label(image, ref, IDENTITY_ORIENTATION)
    affine = np.asarray(image.affine, dtype=float)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return labels, (float(zooms[0]), float(zooms[1]), float(zooms[2])), affine


def study_lesions(ref: imaging.StudyRef, max_voxels: int | None = None) -> list[dict]:
    """The ground-truth lesions of a study with a label (an empty list without one)."""
    if ref.label is None:
        return []
    labels, spacing, affine = read_label(ref.label, ref.label_kind or "multiclass", ref.label_map, max_voxels)
    return lesion_rows(labels, spacing, lambda centroid: affine @ np.append(centroid, 1.0))


def load_primary_cancers(data_dir: str | Path) -> dict[str, str | None]:
    """Patient id → primary cancer from a synthetic cohort's ``cohort.json`` (empty when there is none)."""
    root = Path(data_dir)
    path = (root if root.is_dir() else root.parent) / "cohort.json"
    try:
        patients = json.loads(path.read_text()).get("patients", {})
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(patients, dict):
        return {}
    return {
        str(pid): normalize_primary((record or {}).get("primary_cancer")) for pid, record in patients.items()
    }


def _class_voxels(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels.ravel(), minlength=4)
    return {name: int(counts[value]) for name, value in CLASSES.items()}


def _study_record(ref: imaging.StudyRef, prediction: Path | None, max_voxels: int | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "study_id": ref.study_id,
        "patient_id": ref.patient_id,
        "label_kind": ref.label_kind,
        "lesions": None,
        "lesion_voxels": None,
        "diameters_mm": [],
        "tumour_core_ml": None,
        "class_voxels": None,
        "predicted_class_voxels": None,
    }
    if ref.label is not None:
        labels, spacing, _ = read_label(ref.label, ref.label_kind or "multiclass", ref.label_map, max_voxels)
        lesions = find_lesions(region_mask(labels, REGIONS["TC"]), spacing)
        record["lesions"] = len(lesions)
        record["lesion_voxels"] = int(np.count_nonzero(labels))
        record["diameters_mm"] = [round(lesion.diameter_mm, 2) for lesion in lesions]
        record["tumour_core_ml"] = round(sum(lesion.volume_ml for lesion in lesions), 4)
        if ref.label_kind != "enhancing":
            record["class_voxels"] = _class_voxels(labels)
    if prediction is not None:
        predicted, _, _ = read_label(prediction, "multiclass", None, max_voxels)
        record["predicted_class_voxels"] = _class_voxels(predicted)
    return record


def _file_key(path: Path | None) -> list[Any] | None:
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _cached_record(
    ref: imaging.StudyRef, prediction: Path | None, max_voxels: int | None, cache: Path | None
) -> dict[str, Any]:
    """:func:`_study_record`, kept in ``cache`` (when given) under a hash of the files it reads."""
    if cache is None:
        return _study_record(ref, prediction, max_voxels)
    key = [
        CACHE_VERSION,
        _file_key(ref.label),
        ref.label_kind,
        sorted(ref.label_map.items()),
        _file_key(prediction),
    ]
    path = cache / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = _study_record(replace(ref, study_id="", patient_id=""), prediction, max_voxels)
        _write_atomically(path, json.dumps(record))
    return record | {"study_id": ref.study_id, "patient_id": ref.patient_id}


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


# ------------------------------------------------------------------------------------------ summary


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
    primary_cancers = primary_cancers or {}
    predictions = predictions or {}
    records, skipped = [], []
    for ref in studies:
        try:
            records.append(_cached_record(ref, predictions.get(ref.study_id), max_voxels, record_cache))
        except (imaging.StudyError, OSError) as exc:
            skipped.append({"study_id": ref.study_id, "error": str(exc).splitlines()[0] if str(exc) else ""})

    by_patient: dict[str, list[str]] = {}
    for ref in studies:
        by_patient.setdefault(ref.patient_id, []).append(ref.study_id)
    visits = Counter(len(ids) for ids in by_patient.values())
    primary_of = {pid: normalize_primary(primary_cancers.get(pid)) for pid in by_patient}
    primary_counts = {name: 0 for name in PRIMARY_CANCER_TYPES}
    unknown = 0
    for value in primary_of.values():
        if value is None:
            unknown += 1
        else:
            primary_counts[value] += 1

    labelled = [r for r in records if r["lesions"] is not None]
    diameters = [d for r in labelled for d in r["diameters_mm"]]
    per_study = Counter(r["lesions"] for r in labelled)
    bins = Counter(diameter_bin(d) for d in diameters)

    # the training split's strata, from the records rather than from the label files again
    lesion_voxels = {record["study_id"]: record.get("lesion_voxels") for record in records}
    split_info = None
    if split is not None:
        split_info = _split_summary(split)
    elif by_patient:
        split_info = _split_summary(
            split_studies(
                list(studies),
                seed=seed,
                lesion_free=lesion_free_patients(studies, lambda ref: lesion_voxels.get(ref.study_id)),
            )
        )

    return {
        "counts": {
            "patients": len(by_patient),
            "studies": len(studies),
            "labelled_studies": len(labelled),
            "multiclass_labels": sum(1 for r in labelled if r["label_kind"] != "enhancing"),
            "predicted_studies": sum(1 for r in records if r["predicted_class_voxels"] is not None),
            "lesions": len(diameters),
        },
        "visits_per_patient": {
            "histogram": {str(k): visits[k] for k in sorted(visits)},
            "mean": round(len(studies) / len(by_patient), 2) if by_patient else None,
        },
        "primary_cancer": {
            "counts": primary_counts,
            "unknown": unknown,
            "shares": _shares(primary_counts),
            "reference": STUDY_PRIMARY_CANCER_SHARES,
        },
        "lesions": {
            "total": len(diameters),
            "per_study_histogram": {str(k): per_study[k] for k in sorted(per_study)},
            "per_study": _distribution([r["lesions"] for r in labelled]),
            "diameter_mm": _distribution(diameters),
            "diameter_bins": {name: bins.get(name, 0) for name in DIAMETER_BIN_NAMES},
        },
        "split": split_info,
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


# ------------------------------------------------------------------------------------------ plots


def _figure(width: float = 6.2, height: float = 3.5):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    return figure, figure.subplots()


def _integer_axis(axis, which: str = "y") -> None:
    from matplotlib.ticker import MaxNLocator

    (axis.yaxis if which == "y" else axis.xaxis).set_major_locator(MaxNLocator(integer=True))


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def _bar_labels(axis, bars, texts: Sequence[str]) -> None:
    for bar, text in zip(bars, texts, strict=True):
        axis.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 2),
            textcoords="offset points",
        )


def plot_primary_cancer(summary: dict, path: Path) -> Path:
    info = summary["primary_cancer"]
    names = list(PRIMARY_CANCER_TYPES)
    counts = [info["counts"][n] for n in names]
    known = sum(counts)
    figure, axis = _figure()
    shares = [100 * c / known if known else 0 for c in counts]
    bars = axis.bar(names, shares, color="#3b6ea5", label=f"this cohort ({known} patients)")
    _bar_labels(axis, bars, [str(c) for c in counts])
    reference = [100 * info["reference"][n] for n in names]
    axis.scatter(names, reference, marker="D", color="#111", zorder=3, s=22, label="reference study")
    axis.set_ylabel("% of patients")
    title = "Primary cancer"
    if info["unknown"]:
        title += f" ({info['unknown']} unknown, not shown)"
    axis.set_title(title, fontsize=10)
    axis.set_ylim(0, max([*shares, *reference]) * 1.25 + 1)
    axis.legend(fontsize=7, loc="upper right")
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def plot_visits(summary: dict, path: Path) -> Path:
    histogram = summary["visits_per_patient"]["histogram"]
    figure, axis = _figure()
    keys = list(histogram)
    bars = axis.bar(keys, [histogram[k] for k in keys], color="#6b8fbf")
    _bar_labels(axis, bars, [str(histogram[k]) for k in keys])
    axis.set_xlabel("visits (studies) per patient")
    axis.set_ylabel("patients")
    _integer_axis(axis)
    axis.set_ylim(0, max([*histogram.values(), 1]) * 1.15)
    counts = summary["counts"]
    axis.set_title(f"{counts['patients']} patients, {counts['studies']} studies", fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def plot_lesions_per_study(summary: dict, path: Path) -> Path:
    histogram = {int(k): v for k, v in summary["lesions"]["per_study_histogram"].items()}
    figure, axis = _figure()
    if histogram:
        top = max(histogram)
        axis.bar(range(top + 1), [histogram.get(k, 0) for k in range(top + 1)], color="#c0504d")
    axis.set_xlabel("lesions in a study (26-connected tumour-core components)")
    axis.set_ylabel("studies")
    _integer_axis(axis)
    _integer_axis(axis, "x")
    axis.set_title(
        f"{summary['lesions']['total']} lesions in {summary['counts']['labelled_studies']} labelled studies",
        fontsize=10,
    )
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def plot_lesion_diameters(summary: dict, path: Path) -> Path:
    diameters = [d for record in summary["studies"] for d in record["diameters_mm"]]
    figure, axis = _figure()
    if diameters:
        top = max(35.0, max(diameters))
        axis.hist(diameters, bins=np.arange(0, top + 2, 2.0), color="#8064a2", edgecolor="white")
    for low, _high in DIAMETER_BINS_MM[1:]:
        axis.axvline(low, color="#444", linestyle=":", linewidth=1)
    axis.set_xlabel("equivalent-sphere diameter (mm); dotted: 3 / 6 / 10 mm bins")
    axis.set_ylabel("lesions")
    _integer_axis(axis)
    median = summary["lesions"]["diameter_mm"]["median"]
    axis.set_title(
        f"Lesion diameters (median {median} mm)" if median is not None else "No lesions", fontsize=10
    )
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def plot_split(summary: dict, path: Path) -> Path:
    split = summary["split"]
    figure, axis = _figure()
    if split:
        x = np.arange(len(SIDES))
        width = 0.38
        patients = [100 * (split["patient_shares"][s] or 0) for s in SIDES]
        studies = [100 * (split["study_shares"][s] or 0) for s in SIDES]
        bars_p = axis.bar(x - width / 2, patients, width, color="#3b6ea5", label="patients")
        bars_s = axis.bar(x + width / 2, studies, width, color="#9bbb59", label="studies")
        _bar_labels(axis, bars_p, [str(split["patients"][s]) for s in SIDES])
        _bar_labels(axis, bars_s, [str(split["studies"][s]) for s in SIDES])
        target = [100 * split["ratios"][s] for s in SIDES]
        axis.scatter(x, target, marker="_", s=900, color="#111", zorder=3, label="target 67 / 20 / 13")
        axis.set_xticks(x, [s for s in SIDES])
        axis.set_ylim(0, 95)
        axis.legend(fontsize=7, loc="upper right")
        axis.set_title(f"Patient-level split (seed {split['seed']})", fontsize=10)
    axis.set_ylabel("% of the cohort")
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def plot_class_distribution(summary: dict, path: Path) -> Path:
    info = summary["class_distribution"]
    names = list(CLASSES)
    series = [
        (f"labels ({info['labels']['studies']} studies)", info["labels"], "#7f9cc4")
        if info["labels"]
        else None,
        (f"predictions ({info['predictions']['studies']} studies)", info["predictions"], "#e39d4a")
        if info["predictions"]
        else None,
    ]
    series = [s for s in series if s is not None]
    figure, axis = _figure()
    x = np.arange(len(names))
    width = 0.8 / max(1, len(series))
    for index, (label, data, colour) in enumerate(series):
        values = [100 * (data["shares"][n] or 0) for n in names]
        offset = (index - (len(series) - 1) / 2) * width
        bars = axis.bar(x + offset, values, width, color=colour, label=label)
        _bar_labels(axis, bars, [f"{v:.1f}" for v in values])
    reference = [100 * info["reference_predicted"][n] for n in names]
    axis.scatter(x, reference, marker="D", color="#111", zorder=3, s=22, label="reference study (predicted)")
    axis.set_xticks(
        x, [f"{n}\n{ {'NETC': 'necrotic core', 'SNFH': 'edema', 'ET': 'enhancing'}[n] }" for n in names]
    )
    axis.set_ylabel("% of tumour voxels")
    axis.set_ylim(0, 125)
    axis.set_yticks(range(0, 101, 20))
    axis.legend(fontsize=7, loc="upper center", ncol=3, frameon=False)
    axis.set_title("Tumour voxels per class", fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def choose_sample(summary: dict) -> str | None:
    """The study shown in the sample slices: the labelled (multiclass if possible) one with most tumour."""
    candidates = [r for r in summary["studies"] if r["lesions"] is not None]
    if not candidates:
        return None
    return max(
        candidates,
        key=lambda r: (r["class_voxels"] is not None, sum((r["class_voxels"] or {}).values()), r["lesions"]),
    )["study_id"]


def plot_modality_slices(ref: imaging.StudyRef, path: Path, max_voxels: int | None = None) -> dict[str, Any]:
    """One axial slice per modality (the one with most tumour) and the label over T1ce; returns where."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    present = tuple(m for m in imaging.MODALITIES if m in ref.images and ref.images[m].exists())
    volume = imaging.load_study(ref, modalities=present, max_voxels=max_voxels)
    depth = volume.image.shape[3]
    z = depth // 2
    if volume.label is not None and volume.label.any():
        z = int(np.argmax((volume.label > 0).sum(axis=(0, 1))))
    sx, sy = volume.spacing[0], volume.spacing[1]
    panels = len(present) + (1 if volume.label is not None else 0)
    figure = Figure(figsize=(2.5 * panels, 2.9), dpi=DPI)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for axis, (index, modality) in zip(axes, enumerate(present), strict=False):
        axis.imshow(radiological(window_unit(volume.image[index][:, :, z])), cmap="gray", aspect=sy / sx)
        axis.set_title(MODALITY_TITLES.get(modality, modality), fontsize=9)
    if volume.label is not None:
        base = present.index("t1ce") if "t1ce" in present else 0
        axis = axes[-1]
        axis.imshow(radiological(window_unit(volume.image[base][:, :, z])), cmap="gray", aspect=sy / sx)
        axis.imshow(
            radiological(volume.label[:, :, z]),
            cmap=ListedColormap(OVERLAY_RGBA),
            vmin=0,
            vmax=3,
            interpolation="nearest",
            aspect=sy / sx,
        )
        axis.set_title(f"label on {MODALITY_TITLES.get(present[base], present[base])}", fontsize=9)
    for axis in axes:
        axis.axis("off")
    figure.suptitle(
        f"{ref.study_id}, axial slice {z + 1} of {depth} "
        "(radiological view; NETC yellow, SNFH green, ET red)",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return {"study_id": ref.study_id, "slice": z, "depth": depth, "modalities": list(present)}


def write_plots(
    summary: dict, studies: Sequence[imaging.StudyRef], out_dir: str | Path, max_voxels: int | None = None
) -> dict[str, str]:
    """Every plot of :data:`PLOTS` as ``out_dir/<name>.png``; returns name → file name.

    The modality sample is left out when no study can be loaded; its details go to ``summary["sample"]``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    drawers = {
        "primary_cancer": plot_primary_cancer,
        "visits_per_patient": plot_visits,
        "lesions_per_study": plot_lesions_per_study,
        "lesion_diameters": plot_lesion_diameters,
        "split": plot_split,
        "class_distribution": plot_class_distribution,
    }
    for name in PLOTS:
        if name == "modality_slices":
            continue
        drawers[name](summary, out / f"{name}.png")
        written[name] = f"{name}.png"
    summary["sample"] = None
    by_id = {ref.study_id: ref for ref in studies}
    sample_id = choose_sample(summary)
    candidates = [by_id[sample_id]] if sample_id in by_id else []
    candidates += [ref for ref in studies if ref.study_id != sample_id][:3]
    for ref in candidates:
        try:
            summary["sample"] = plot_modality_slices(ref, out / "modality_slices.png", max_voxels)
        except (imaging.StudyError, OSError) as exc:
            summary.setdefault("sample_errors", []).append(f"{ref.study_id}: {exc}")
            continue
        written["modality_slices"] = "modality_slices.png"
        break
    return {name: written[name] for name in PLOTS if name in written}


def write_report(
    studies: Sequence[imaging.StudyRef],
    out_dir: str | Path,
    primary_cancers: Mapping[str, str | None] | None = None,
    predictions: Mapping[str, Path] | None = None,
    split: Mapping[str, Any] | None = None,
    seed: int = 0,
    max_voxels: int | None = None,
    record_cache: Path | None = None,
    skipped: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """Summary + plots into ``out_dir`` (``cohort.json`` and one PNG per plot); returns the summary.

    ``skipped``: studies left out before this call (listed in the summary's ``skipped``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize_studies(studies, primary_cancers, predictions, split, seed, max_voxels, record_cache)
    summary["skipped"] = [*map(dict, skipped), *summary["skipped"]]
    summary["plots"] = write_plots(summary, studies, out, max_voxels) if studies else {}
    (out / "cohort.json").write_text(json.dumps(summary, indent=1))
    return summary


def write_cohort_report(
    data_dir: str | Path,
    out_dir: str | Path,
    predictions: dict[str, Path] | None = None,
    split: dict | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`write_report` for every study under ``data_dir``; refuses to write into the data folder
    (its own ``cohort.json`` would be overwritten)."""
    data = Path(data_dir).resolve()
    out = Path(out_dir).resolve()
    if out == (data if data.is_dir() else data.parent):
        raise ValueError(f"{out_dir} is the data folder: choose another output folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    studies = imaging.find_studies(data_dir)
    return write_report(studies, out, load_primary_cancers(data_dir), predictions, split, seed)


def write_report_atomically(target: Path, **report_args: Any) -> dict[str, Any]:
    """:func:`write_report` into a temporary sibling folder renamed to ``target`` (concurrent writers:
    the first rename wins, the others are discarded); returns the summary stored there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        summary = write_report(out_dir=temp, **report_args)
        try:
            os.rename(temp, target)
        except OSError:
            if not (target / "cohort.json").is_file():
                raise
            summary = json.loads((target / "cohort.json").read_text())
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return summary


# ------------------------------------------------------------------------------------------ patients


def plot_lesion_volumes(visits: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Lesion volumes per visit: each lesion a dot (ml), the total a line; log scale over a wide range.

    ``visits``: ``[{"label": "A", "volumes_ml": [..]}, ...]`` in time order.
    """
    from matplotlib.ticker import FuncFormatter

    figure, axis = _figure(7.4, 3.2)
    x = np.arange(len(visits))
    totals, every = [], []
    for index, visit in enumerate(visits):
        volumes = [float(v) for v in visit["volumes_ml"] if v and v > 0]
        every += volumes
        totals.append(sum(volumes) if volumes else math.nan)
        if volumes:
            jitter = np.linspace(-0.08, 0.08, len(volumes)) if len(volumes) > 1 else np.zeros(1)
            axis.scatter(index + jitter, volumes, s=18, color="#c0504d", alpha=0.75, zorder=3)
    axis.plot(x, totals, "-o", color="#1f3a5f", label="total", zorder=2)
    axis.scatter([], [], s=18, color="#c0504d", label="one lesion")
    largest = max((t for t in totals if not math.isnan(t)), default=1.0)
    if every and largest / min(every) > 50:
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
    else:
        axis.set_ylim(0, largest * 1.15)
    axis.set_xticks(x, [str(v["label"]) for v in visits], fontsize=8)
    axis.set_xlim(-0.5, max(0.5, len(visits) - 0.5))
    axis.set_ylabel("volume (ml)")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(figure, path)


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


# ------------------------------------------------------------------------------------------ database


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


def study_ref(study: Study) -> imaging.StudyRef:
    """The files of a database study (found from ``Study.directory``), under its uid and pseudonym."""
    ref = imaging.study_from_dir(study.directory)
    if ref.label is None and study.label_path and Path(study.label_path).is_file():
        ref = replace(ref, label=Path(study.label_path), label_kind="multiclass")
    return replace(ref, study_id=study.study_uid, patient_id=study.patient.pseudonym)


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
                s.patient.primary_cancer,
                _file_key(predictions.get(s.study_uid)),
            ]
            for s in studies
        ),
    ]
    target = cache_root / "reports" / hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:24]
    if (target / "cohort.json").is_file():
        return json.loads((target / "cohort.json").read_text()), target
    refs, unreadable = [], []
    for study in studies:
        try:
            refs.append(study_ref(study))
        except (imaging.StudyError, OSError) as exc:
            unreadable.append({"study_id": study.study_uid, "error": str(exc).splitlines()[0]})
    primaries = {s.patient.pseudonym: s.patient.primary_cancer for s in studies}
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
    key = [CACHE_VERSION, _file_key(ref.label), ref.label_kind, sorted(ref.label_map.items())]
    path = Path(cache_root) / "lesions" / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        rows = study_lesions(ref, max_voxels)
        _write_atomically(path, json.dumps(rows))
        return rows
