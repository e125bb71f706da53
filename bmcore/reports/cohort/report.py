"""Writing a cohort report: ``cohort.json`` and one PNG per plot, into a folder or atomically into a cache.

``bmseg cohort DIR`` runs :func:`write_cohort_report` on a data folder; the web's ``/cohort`` writes its
reports through :func:`bmcore.reports.cohort.database.database_report`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bmcore import imaging
from bmcore.reports.cohort.plots import (
    PLOTS,
    choose_sample,
    plot_class_distribution,
    plot_lesion_diameters,
    plot_lesions_per_study,
    plot_modality_slices,
    plot_primary_cancer,
    plot_split,
    plot_visits,
)
from bmcore.reports.cohort.records import load_primary_cancers
from bmcore.reports.cohort.summary import summarize_studies


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
