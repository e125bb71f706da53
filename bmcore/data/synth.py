"""Synthetic brain-metastasis cohorts with known ground truth (docs/design.md §3).

Each study: an ellipsoidal head (scalp/skull, CSF, grey and white matter with smooth folding, ventricles),
0–15 metastases from 2 to 30 mm (log-uniform diameter, slightly ellipsoidal), an enhancing rim on T1ce,
a necrotic core in lesions over 10 mm, a FLAIR/T2 edema halo around lesions over 5 mm, per-modality
tissue contrast, a smooth multiplicative bias field and Rician noise. Anatomy is laid out in millimetres,
so a coarse grid (tests) and a full grid (240×240×155) show the same head. Patients may have several
visits: the same anatomy and lesion positions, lesion sizes changed. Deterministic for a seed.
Written as int16, as scanners do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from bmcore import imaging

# Tissue classes used while drawing (not output labels).
BACKGROUND, SCALP, CSF, GREY, WHITE, EDEMA, NECROSIS, ENHANCING = range(8)
# Mean intensity of each tissue class per modality (arbitrary scanner units).
CONTRAST = {
    "t1": [0, 620, 260, 560, 720, 460, 300, 520],
    "t1ce": [0, 640, 260, 580, 730, 470, 290, 1150],
    "t2": [0, 320, 1500, 820, 600, 1250, 1400, 900],
    "flair": [0, 300, 180, 720, 560, 1150, 620, 820],
}
LAYOUTS = {
    # shape, spacing (mm), axis flips of the affine (BraTS files are LPS, UCSF here RAS)
    "brats": ((240, 240, 155), (1.0, 1.0, 1.0), (-1, -1, 1)),
    "ucsf": ((240, 240, 110), (0.86, 0.86, 1.5), (1, 1, 1)),
}
PRIMARY_CANCERS = {"lung": 0.390, "breast": 0.245, "melanoma": 0.163, "renal": 0.043, "other": 0.159}
HEAD_SEMI_AXES_MM = (72.0, 92.0, 74.0)
BRAIN_INSET_MM = 7.0
NECROSIS_ABOVE_MM = 10.0


@dataclass(frozen=True)
class SynthLesion:
    lesion_id: int
    centre_vox: tuple[float, float, float]
    centre_mm: tuple[float, float, float]
    diameter_mm: float
    necrotic: bool


@dataclass(frozen=True)
class StudyPlan:
    study_id: str
    patient_id: str
    patient_seed: int
    visit: int
    layout: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    write_multiclass: bool
    write_binary: bool


def make_affine(
    shape: tuple[int, int, int], spacing: tuple[float, ...], flips: tuple[int, ...]
) -> np.ndarray:
    """Affine with the volume centred on the world origin and the layout's axis directions."""
    affine = np.diag([flips[0] * spacing[0], flips[1] * spacing[1], flips[2] * spacing[2], 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], coarse: int = 8) -> np.ndarray:
    """A smooth random field in about [-1, 1], upsampled from a coarse grid."""
    small = rng.standard_normal((coarse, coarse, max(3, coarse * shape[2] // shape[0])))
    factors = [s / c for s, c in zip(shape, small.shape, strict=True)]
    field = ndimage.zoom(small, factors, order=1, mode="nearest", grid_mode=True)
    return (field / (np.abs(field).max() + 1e-6)).astype(np.float32)


def grid_mm(shape: tuple[int, int, int], spacing: tuple[float, ...]) -> list[np.ndarray]:
    """Open (broadcastable) coordinate grids in mm, centred on the volume centre."""
    return [
        ((np.arange(n, dtype=np.float32) - (n - 1) / 2) * s).reshape([-1 if a == i else 1 for a in range(3)])
        for i, (n, s) in enumerate(zip(shape, spacing, strict=True))
    ]


def draw_anatomy(rng: np.random.Generator, shape, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Tissue map and a normalised brain radius (0 centre → 1 brain surface)."""
    x, y, z = grid_mm(shape, spacing)
    scale = 1.0 + 0.05 * rng.standard_normal(3)
    ax, ay, az = (s * f for s, f in zip(HEAD_SEMI_AXES_MM, scale, strict=True))
    head_r = np.sqrt((x / ax) ** 2 + (y / ay) ** 2 + (z / az) ** 2)
    inset = BRAIN_INSET_MM
    brain_r = np.sqrt((x / (ax - inset)) ** 2 + (y / (ay - inset)) ** 2 + (z / (az - inset)) ** 2)
    folding = smooth_field(rng, shape, coarse=10)
    tissue = np.zeros(shape, dtype=np.uint8)
    tissue[head_r <= 1.0] = SCALP
    tissue[brain_r <= 1.04] = CSF
    tissue[brain_r <= 1.0] = GREY
    tissue[brain_r <= 0.86 + 0.06 * folding] = WHITE
    for side in (-1, 1):
        vent = ((x - side * 9) / 9) ** 2 + (y / 24) ** 2 + ((z - 8) / 12) ** 2
        tissue[vent <= 1.0] = CSF
    return tissue, brain_r


def place_lesions(rng: np.random.Generator, brain_r: np.ndarray, spacing, affine) -> list[SynthLesion]:
    """0–15 lesion centres inside the brain with log-uniform diameters from 2 to 30 mm."""
    weights = np.exp(-np.arange(16) / 4.0)
    count = int(rng.choice(16, p=weights / weights.sum()))
    candidates = np.argwhere(brain_r < 0.8)
    lesions = []
    for lesion_id in range(1, count + 1):
        diameter = float(np.exp(rng.uniform(np.log(2.0), np.log(30.0))))
        centre = candidates[rng.integers(len(candidates))].astype(float)
        centre_mm = (affine @ np.append(centre, 1.0))[:3]
        lesions.append(
            SynthLesion(
                lesion_id,
                tuple(centre.tolist()),
                tuple(np.round(centre_mm, 2).tolist()),
                round(diameter, 2),
                diameter > NECROSIS_ABOVE_MM,
            )
        )
    return lesions


def draw_lesion(
    tissue: np.ndarray, lesion: SynthLesion, spacing, rng: np.random.Generator, size_factor: float = 1.0
):
    """Paint one metastasis (rim, core, edema) into the tissue map, inside the brain only."""
    radius = lesion.diameter_mm * size_factor / 2.0
    edema_radius = radius * rng.uniform(1.6, 2.8) if lesion.diameter_mm > 5.0 else radius
    reach = [int(np.ceil(edema_radius / s)) + 1 for s in spacing]
    centre = [int(round(c)) for c in lesion.centre_vox]
    box = tuple(
        slice(max(0, c - r), min(n, c + r + 1)) for c, r, n in zip(centre, reach, tissue.shape, strict=True)
    )
    axes = rng.uniform(0.85, 1.15, 3)
    coords = np.ogrid[box]
    rho = np.sqrt(
        sum(
            (((g - c) * s) / a) ** 2
            for g, c, s, a in zip(coords, lesion.centre_vox, spacing, axes, strict=True)
        )
    )
    region = tissue[box]
    brain = (region == GREY) | (region == WHITE) | (region == EDEMA)
    region[(rho <= edema_radius) & brain & (rho > radius)] = EDEMA
    inside = (rho <= max(radius, 0.5 * min(spacing))) & (region != SCALP) & (region != BACKGROUND)
    region[inside] = ENHANCING
    if lesion.necrotic:
        rim = max(1.5, 0.25 * radius)
        region[inside & (rho < radius - rim)] = NECROSIS


def render(tissue: np.ndarray, rng: np.random.Generator, modality: str, bias: np.ndarray) -> np.ndarray:
    """Intensities for one modality: tissue contrast, texture, partial volume, bias field, Rician noise."""
    means = np.asarray(CONTRAST[modality], dtype=np.float32) * rng.uniform(0.9, 1.1)
    image = means[tissue]
    image *= 1.0 + 0.04 * rng.standard_normal(tissue.shape, dtype=np.float32)
    image = ndimage.gaussian_filter(image, 0.6, truncate=2.0)
    image *= bias
    sigma = 0.025 * means[WHITE]
    real = image + sigma * rng.standard_normal(tissue.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(tissue.shape, dtype=np.float32)
    image = np.sqrt(real * real + imag * imag)
    image[tissue == BACKGROUND] *= 0.0
    return np.clip(np.round(image), 0, np.iinfo(np.int16).max).astype(np.int16)


def bias_field(rng: np.random.Generator, shape) -> np.ndarray:
    terms = []
    for axis, n in enumerate(shape):
        t = np.linspace(-1, 1, n, dtype=np.float32)
        term = 0.12 * rng.uniform(-1, 1) * t + 0.05 * rng.uniform(-1, 1) * np.cos(np.pi * t)
        terms.append(term.reshape([-1 if a == axis else 1 for a in range(3)]))
    return np.exp(terms[0] + terms[1] + terms[2]).astype(np.float32)


def labels_from_tissue(tissue: np.ndarray) -> np.ndarray:
    labels = np.zeros(tissue.shape, dtype=np.uint8)
    labels[tissue == NECROSIS] = 1
    labels[tissue == EDEMA] = 2
    labels[tissue == ENHANCING] = 3
    return labels


def synth_study(plan: StudyPlan, out: Path) -> dict:
    """Draw and write one study; returns its ground-truth record."""
    shape, spacing = plan.shape, plan.spacing
    affine = make_affine(shape, spacing, LAYOUTS[plan.layout][2])
    anatomy_rng = np.random.default_rng(plan.patient_seed)
    tissue, brain_r = draw_anatomy(anatomy_rng, shape, spacing)
    lesions = place_lesions(anatomy_rng, brain_r, spacing, affine)
    visit_rng = np.random.default_rng([plan.patient_seed, plan.visit])
    # A later visit keeps the positions and rescales each lesion; necrosis follows the visit's diameter.
    factors = [1.0 if plan.visit == 0 else float(visit_rng.uniform(0.6, 1.4)) for _ in lesions]
    diameters = [round(lesion.diameter_mm * f, 2) for lesion, f in zip(lesions, factors, strict=True)]
    lesions = [
        replace(lesion, diameter_mm=d, necrotic=d > NECROSIS_ABOVE_MM)
        for lesion, d in zip(lesions, diameters, strict=True)
    ]
    for lesion in sorted(lesions, key=lambda lesion: -lesion.diameter_mm):
        draw_lesion(tissue, lesion, spacing, visit_rng)
    labels = labels_from_tissue(tissue)
    bias = bias_field(visit_rng, shape)
    directory = out / plan.study_id
    names = imaging.UCSF_SUFFIX if plan.layout == "ucsf" else imaging.BRATS_SUFFIX
    sep = "_" if plan.layout == "ucsf" else "-"
    for modality in imaging.MODALITIES:
        image = render(tissue, visit_rng, modality, bias)
        imaging.write_nifti(image, affine, directory / f"{plan.study_id}{sep}{names[modality]}.nii.gz")
    if plan.layout == "brats":
        imaging.write_nifti(labels, affine, directory / f"{plan.study_id}-seg.nii.gz", dtype=np.uint8)
    else:
        if plan.write_binary:
            imaging.write_nifti(
                (labels == 3).astype(np.uint8), affine, directory / f"{plan.study_id}_seg.nii.gz"
            )
        if plan.write_multiclass:
            imaging.write_nifti(labels, affine, directory / f"{plan.study_id}_BraTS-seg.nii.gz")
    records = [asdict(lesion) for lesion in lesions]
    return {
        "study_id": plan.study_id,
        "patient_id": plan.patient_id,
        "visit": plan.visit,
        "lesions": records,
        "label_voxels": {str(k): int((labels == k).sum()) for k in range(4)},
    }


def plan_cohort(
    cases: int, seed: int, layout: str, shape=None, spacing=None, multiclass_fraction: float = 0.5
) -> tuple[list[StudyPlan], dict[str, str]]:
    """Patients with one to three visits until ``cases`` studies; each patient's primary cancer."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if cases < 1:
        raise ValueError("--cases must be at least 1")
    default_shape, default_spacing, _ = LAYOUTS[layout]
    shape = tuple(shape or default_shape)
    spacing = tuple(spacing or default_spacing)
    rng = np.random.default_rng(seed)
    plans, primaries = [], {}
    patient = 0
    while len(plans) < cases:
        patient += 1
        visits = min(int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1])), cases - len(plans))
        patient_seed = int(rng.integers(2**31))
        if layout == "ucsf":
            patient_id = f"{100100 + patient:06d}"
            study_ids = [f"{patient_id}{chr(ord('A') + v)}" for v in range(visits)]
        else:
            patient_id = f"{patient:05d}"
            study_ids = [f"BraTS-MET-{patient_id}-{v:03d}" for v in range(visits)]
        primaries[patient_id] = str(rng.choice(list(PRIMARY_CANCERS), p=list(PRIMARY_CANCERS.values())))
        for visit, study_id in enumerate(study_ids):
            multiclass = layout == "brats" or bool(rng.random() < multiclass_fraction)
            plans.append(
                StudyPlan(
                    study_id,
                    patient_id,
                    patient_seed,
                    visit,
                    layout,
                    shape,
                    spacing,
                    write_multiclass=multiclass,
                    write_binary=layout == "ucsf",
                )
            )
    return plans, primaries


def synth_cohort(
    out: str | Path,
    cases: int,
    seed: int = 0,
    layout: str = "brats",
    shape=None,
    spacing=None,
    multiclass_fraction: float = 0.5,
    workers: int = 2,
    on_study: Callable[[dict], None] | None = None,
) -> dict:
    """Write a cohort and ``cohort.json`` (patients, primary cancers, every study's lesion list)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plans, primaries = plan_cohort(cases, seed, layout, shape, spacing, multiclass_fraction)
    studies = []
    with ExitStack() as stack:
        # One worker draws in this process: no fork (safe where torch or other threads are running).
        pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers)) if workers > 1 else None
        for record in (pool.map if pool else map)(synth_study, plans, [out] * len(plans)):
            studies.append(record)
            if on_study:
                on_study(record)
    cohort = {
        "layout": layout,
        "seed": seed,
        "shape": list(plans[0].shape),
        "spacing": list(plans[0].spacing),
        "patients": {pid: {"primary_cancer": p} for pid, p in primaries.items()},
        "studies": studies,
    }
    (out / "cohort.json").write_text(json.dumps(cohort, indent=1))
    return cohort
