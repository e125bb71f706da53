"""Reading a cohort's label files into per-study records (lesions, diameters, class voxels), cached by file.

Only label files are read (through :mod:`bmcore.imaging`, in the file's own voxel order: components and voxel
counts do not depend on orientation). A record is kept on disk under a hash of the files it reads, so a
new report rereads no unchanged label.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bmcore import imaging
from bmcore.config import get_settings
from bmcore.metrics import REGIONS, find_lesions, lesion_rows, region_mask
from bmcore.patients import normalize_primary

CLASSES: dict[str, int] = {"NETC": 1, "SNFH": 2, "ET": 3}
IDENTITY_ORIENTATION = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
CACHE_VERSION = 2  # bump when a cached record or report changes shape


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


def file_key(path: Path | None) -> list[Any] | None:
    """What identifies a file's content in a cache key: its resolved path, size and modification time."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def cached_record(
    ref: imaging.StudyRef, prediction: Path | None, max_voxels: int | None, cache: Path | None
) -> dict[str, Any]:
    """:func:`_study_record`, kept in ``cache`` (when given) under a hash of the files it reads."""
    if cache is None:
        return _study_record(ref, prediction, max_voxels)
    key = [
        CACHE_VERSION,
        file_key(ref.label),
        ref.label_kind,
        sorted(ref.label_map.items()),
        file_key(prediction),
    ]
    path = cache / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = _study_record(replace(ref, study_id="", patient_id=""), prediction, max_voxels)
        write_atomically(path, json.dumps(record))
    return record | {"study_id": ref.study_id, "patient_id": ref.patient_id}


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temp.write_text(text)
    os.replace(temp, path)
