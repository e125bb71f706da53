"""The cohort report's PNG plots, drawn from a summary (:mod:`bmcore.reports.cohort.summary`).

matplotlib is used through ``Figure`` objects only (no pyplot state), so plots can be drawn in a threaded
web server; it is imported when a plot is drawn (about 90 modules and a second of start-up that the web
process, which imports this package, should not pay at boot).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bmcore import imaging
from bmcore.data.split import SIDES
from bmcore.imaging.display import radiological, window_unit
from bmcore.metrics import DIAMETER_BINS_MM
from bmcore.patients import PRIMARY_CANCER_TYPES
from bmcore.reports.cohort.records import CLASSES

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
DPI = 90


def _figure(width: float = 6.2, height: float = 3.5):
    from matplotlib.figure import Figure  # lazy: matplotlib only when a plot is drawn, not at web start

    figure = Figure(figsize=(width, height), dpi=DPI)
    return figure, figure.subplots()


def _integer_axis(axis, which: str = "y") -> None:
    from matplotlib.ticker import MaxNLocator  # lazy: as in _figure

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
    from matplotlib.colors import ListedColormap  # lazy: as in _figure
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


def plot_lesion_volumes(visits: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Lesion volumes per visit: each lesion a dot (ml), the total a line; log scale over a wide range.

    ``visits``: ``[{"label": "A", "volumes_ml": [..]}, ...]`` in time order.
    """
    from matplotlib.ticker import FuncFormatter  # lazy: as in _figure

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
