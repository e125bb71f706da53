"""Where studies are found: the UCSF-BMSR and BraTS-METS folder layouts and CSV manifests.

Nothing here reads voxel data; a :class:`StudyRef` only says where a study's files are, and
:func:`bmcore.imaging.load_study` reads them.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
LABEL_VALUES = (0, 1, 2, 3)
UCSF_SUFFIX = {"t1": "T1pre", "t1ce": "T1post", "t2": "T2Synth", "flair": "FLAIR"}
BRATS_SUFFIX = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
UCSF_ID = re.compile(r"^(\d{6})[A-Za-z]*$")
BRATS_ID = re.compile(r"^BraTS-MET-(\d{5})-(\d{3})$")

LabelKind = Literal["multiclass", "enhancing"]


class StudyError(ValueError):
    """A study that cannot be used; the message is one line that says what is wrong and where."""


@dataclass(frozen=True)
class StudyRef:
    """Where a study's files are; nothing is read until :func:`bmcore.imaging.load_study`."""

    study_id: str
    patient_id: str
    layout: str
    images: dict[str, Path]
    label: Path | None = None
    label_kind: LabelKind | None = None
    label_map: dict[int, int] = field(default_factory=dict)
    directory: Path | None = None


# ---------------------------------------------------------------------------------------------- finding


def find_studies(root: str | Path) -> list[StudyRef]:
    """Every study under ``root``: a data set folder, one study folder, or a CSV manifest."""
    root = Path(root)
    if not root.exists():
        raise StudyError(f"{root}: no such file or directory")
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return read_manifest(root)
        raise StudyError(f"{root}: expected a data folder, a study folder or a CSV manifest")
    manifest = root / "manifest.csv"
    if manifest.is_file():
        return read_manifest(manifest)
    if _study_layout(root):
        return [study_from_dir(root)]
    studies = [study_from_dir(d) for d in sorted(root.iterdir()) if d.is_dir() and _study_layout(d)]
    if not studies:
        raise StudyError(
            f"{root}: no studies found (expected UCSF-BMSR or BraTS-METS folders, or manifest.csv)"
        )
    return studies


def _study_layout(directory: Path) -> str | None:
    names = [p.name for p in directory.glob("*.nii*")]
    if any(re.search(r"_(T1pre|T1post|T2Synth|FLAIR)\.nii(\.gz)?$", n) for n in names):
        return "ucsf"
    if any(re.search(r"-(t1n|t1c|t2w|t2f)\.nii(\.gz)?$", n) for n in names):
        return "brats"
    return None


def _find_file(directory: Path, stem: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        candidate = directory / f"{stem}{ext}"
        if candidate.exists():
            return candidate
    return None


def _patient_and_images(
    directory: Path, id_pattern: re.Pattern, separator: str, suffixes: dict[str, str]
) -> tuple[str, dict[str, Path]]:
    """A layout's patient id (the pattern's first group, else the study id) and image path per modality."""
    study_id = directory.name
    match = id_pattern.match(study_id)
    patient_id = match.group(1) if match else study_id
    stems = {m: f"{study_id}{separator}{s}" for m, s in suffixes.items()}
    images = {m: _find_file(directory, stem) or directory / f"{stem}.nii.gz" for m, stem in stems.items()}
    return patient_id, images


def study_from_dir(directory: str | Path) -> StudyRef:
    """A study folder in the UCSF-BMSR or BraTS-METS layout; missing files are reported at load time."""
    directory = Path(directory)
    layout = _study_layout(directory)
    study_id = directory.name
    if layout == "ucsf":
        patient_id, images = _patient_and_images(directory, UCSF_ID, "_", UCSF_SUFFIX)
        brats_seg = _find_file(directory, f"{study_id}_BraTS-seg")
        binary_seg = _find_file(directory, f"{study_id}_seg")
        if brats_seg is not None:
            label, kind = brats_seg, "multiclass"
        elif binary_seg is not None:
            label, kind = binary_seg, "enhancing"
        else:
            label, kind = None, None
        return StudyRef(study_id, patient_id, "ucsf", images, label, kind, {}, directory)
    if layout == "brats":
        patient_id, images = _patient_and_images(directory, BRATS_ID, "-", BRATS_SUFFIX)
        label = _find_file(directory, f"{study_id}-seg")
        kind = "multiclass" if label is not None else None
        return StudyRef(study_id, patient_id, "brats", images, label, kind, {}, directory)
    raise StudyError(f"{directory}: not a study folder (no UCSF-BMSR or BraTS-METS image files)")


def parse_label_map(text: str) -> dict[int, int]:
    """``"3:1 4:3"`` → ``{3: 1, 4: 3}`` (separators: spaces, commas or semicolons)."""
    mapping: dict[int, int] = {}
    for item in re.split(r"[\s,;]+", text.strip()):
        if not item:
            continue
        try:
            source, target = (int(v) for v in item.split(":"))
        except ValueError:
            raise StudyError(f"label_map entry {item!r} is not 'source:target'") from None
        if target not in LABEL_VALUES:
            raise StudyError(f"label_map entry {item!r} maps onto {target}, not a bmseg label 0-3")
        mapping[source] = target
    return mapping


def read_manifest(path: str | Path) -> list[StudyRef]:
    """Studies listed in a CSV manifest; an empty modality cell means the study lacks that modality."""
    path = Path(path)
    base = path.parent
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        required = {"patient_id", "study_id", *MODALITIES}
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise StudyError(f"{path}: manifest lacks column(s) {', '.join(sorted(missing))}")
        studies = []
        for line, row in enumerate(reader, start=2):
            if not row["study_id"] or not row["patient_id"]:
                raise StudyError(f"{path}:{line}: empty patient_id or study_id")
            images = {m: base / row[m] for m in MODALITIES if (row.get(m) or "").strip()}
            seg = (row.get("seg") or "").strip()
            kind = (row.get("label_kind") or "").strip() or "multiclass"
            if kind not in ("multiclass", "enhancing"):
                raise StudyError(f"{path}:{line}: label_kind must be multiclass or enhancing")
            studies.append(
                StudyRef(
                    study_id=row["study_id"].strip(),
                    patient_id=row["patient_id"].strip(),
                    layout="manifest",
                    images=images,
                    label=base / seg if seg else None,
                    label_kind=kind if seg else None,
                    label_map=parse_label_map(row.get("label_map") or ""),
                    directory=base,
                )
            )
    if not studies:
        raise StudyError(f"{path}: manifest lists no studies")
    return studies
