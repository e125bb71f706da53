"""A DICOM MR study (a folder or a zip) into a bmseg study folder: ``list_series`` and ``import_dicom``.

``import_dicom`` writes ``out_dir/<study_name>/`` in the UCSF-BMSR layout
(``<name>_{T1pre,T1post,T2Synth,FLAIR}.nii.gz``) plus ``dicom_source.json``. The T1 post-contrast
series keeps its own grid (its NIfTI grid is exactly the DICOM grid); the other three are resampled
onto it when their grids differ (:mod:`bmcore.dicom.resample`). The NIfTI files are written by
:func:`bmcore.imaging.write_nifti`: no extensions, free-text fields empty. ``dicom_source.json`` holds
UIDs, series numbers and descriptions only; no patient attribute (name, id, birth date, accession
number, …) is written anywhere: the study is named by the caller's pseudonym. Everything is checked and
decoded before the first file is written, the folder is staged under a temporary name and renamed into
place, and on any failure nothing is left behind (nor the archive's temporary folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bmcore.config import get_settings
from bmcore.dicom.archive import ArchiveLimits, source_files
from bmcore.dicom.errors import DicomError
from bmcore.dicom.identify import Identification, Rules, identify, load_rules
from bmcore.dicom.placement import Placement, place_series
from bmcore.dicom.resample import resample_onto, same_grid
from bmcore.dicom.series import Series, StackGeometry, read_series, stack_geometry
from bmcore.dicom.volume import check_decodable, read_volume
from bmcore.imaging import MODALITIES, UCSF_SUFFIX, write_nifti

SOURCE_RECORD = "dicom_source.json"
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
REFERENCE = "t1ce"
INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class SeriesInfo:
    """One series as listed: number, description, file count, the modality the rules give (or None) and
    why, and its UIDs."""

    number: int | None
    description: str
    files: int
    modality: str | None
    why: str
    series_instance_uid: str
    sop_class: str

    @property
    def label(self) -> str:
        number = "-" if self.number is None else str(self.number)
        return f'series {number} "{self.description}"' if self.description else f"series {number}"


@dataclass(frozen=True)
class ImportedStudy:
    """An imported study: its folder, the series used per modality, those resampled onto the T1ce grid,
    and the series not placed (``why`` says why)."""

    folder: Path
    study_name: str
    series: dict[str, SeriesInfo]
    resampled: tuple[str, ...]
    unplaced: list[SeriesInfo]


def _info(series: Series, identification: Identification, why: str | None = None) -> SeriesInfo:
    return SeriesInfo(
        number=series.number,
        description=series.description,
        files=series.files,
        modality=identification.modality,
        why=why or identification.why,
        series_instance_uid=series.uid,
        sop_class=series.sop_class_name,
    )


def _scan(source: Path, files, rules: Rules) -> tuple[list[Series], dict[str, Identification]]:
    series, _ = read_series(files)
    if not series:
        raise DicomError(f"{Path(source).name}: no DICOM image series found")
    return series, {s.uid: identify(s, rules) for s in series}


def list_series(
    source: Path, limits: ArchiveLimits | None = None, rules: Rules | None = None
) -> list[SeriesInfo]:
    """Every series in ``source`` (a folder or a .zip) and how the rules identify it."""
    rules = rules or load_rules()
    with source_files(Path(source), limits) as files:
        series, found = _scan(source, files, rules)
    return [_info(s, found[s.uid]) for s in series]


def check_study_name(name: str) -> str:
    """A study name usable as a folder and file stem: letters, digits, ``_ . -``, at most 80."""
    if not STUDY_NAME.match(name or "") or ".." in name:
        raise DicomError(
            f"study name {name[:40]!r}: use 1-80 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit"
        )
    return name


def _refuse_without_mr(source: Path, series: list[Series]) -> None:
    if any(s.is_mr_image for s in series):
        return
    kinds: dict[str, int] = {}
    for s in series:
        kinds[s.sop_class_name] = kinds.get(s.sop_class_name, 0) + 1
    found = ", ".join(f"{n} {kind} series" for kind, n in sorted(kinds.items()))
    raise DicomError(f"{Path(source).name}: no MR series (found {found}); MR Image Storage is needed")


def _check_one_session(chosen: dict[str, Series]) -> tuple[str, str]:
    """The StudyInstanceUID and FrameOfReferenceUID the chosen series share."""
    for s in chosen.values():
        if not s.frame_of_reference_uid:
            raise DicomError(f"{s.label}: no FrameOfReferenceUID; cannot relate it to the other series")
    frames = {s.frame_of_reference_uid for s in chosen.values()}
    if len(frames) > 1:
        groups = [
            " and ".join(s.label for s in chosen.values() if s.frame_of_reference_uid == f)
            for f in sorted(frames)
        ]
        raise DicomError(
            f"the chosen series do not share a frame of reference ({'; '.join(groups)}); "
            "series of one session share one and no registration is done"
        )
    studies = {s.study_uid for s in chosen.values()}
    if len(studies) > 1:
        raise DicomError("the chosen series come from different studies (StudyInstanceUID)")
    return studies.pop(), frames.pop()


def _stored(data: np.ndarray) -> np.ndarray:
    """int16 where the values are whole numbers in its range (as scanners store them), else float32."""
    if (
        data.size
        and INT16.min <= data.min()
        and data.max() <= INT16.max
        and np.array_equal(data, np.round(data))
    ):
        return data.astype(np.int16)
    return data.astype(np.float32)


def _volumes(placement: Placement) -> tuple[dict[str, np.ndarray], dict[str, StackGeometry], np.ndarray]:
    """Every chosen series decoded and on the T1ce grid, their geometries, and the T1ce affine."""
    geometries = {m: stack_geometry(s) for m, s in placement.chosen.items()}
    for modality, series in placement.chosen.items():
        check_decodable(series, geometries[modality])
    max_voxels = get_settings().max_voxels
    reference = geometries[REFERENCE]
    volumes = {}
    for modality, series in placement.chosen.items():
        data = read_volume(series, geometries[modality], max_voxels)
        volumes[modality] = resample_onto(
            data, geometries[modality].affine, reference.affine, reference.shape, series.label
        )
    return volumes, geometries, reference.affine


def _record(study_uid: str, frame_uid: str, placement: Placement, geometries, resampled) -> dict:
    return {
        "study_instance_uid": study_uid,
        "frame_of_reference_uid": frame_uid,
        "series": {
            modality: {
                "series_instance_uid": series.uid,
                "series_number": series.number,
                "series_description": series.description,
                "modality": "MR",
                "sop_class_uid": series.sop_class_uid,
                "sop_instance_uids": [s.sop_instance_uid for s in geometries[modality].slices],
                "resampled_onto_t1ce": modality in resampled,
            }
            for modality, series in placement.chosen.items()
        },
    }


def _write_study(target: Path, name: str, volumes: dict[str, np.ndarray], affine: np.ndarray, record: dict):
    """Stage the folder under a temporary name, then rename it into place; nothing is left on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".tmp-{uuid.uuid4().hex}"
    try:
        staging.mkdir()
        for modality in MODALITIES:
            path = staging / f"{name}_{UCSF_SUFFIX[modality]}.nii.gz"
            write_nifti(_stored(volumes[modality]), affine, path, spatial_unit="mm")
        (staging / SOURCE_RECORD).write_text(json.dumps(record, indent=1) + "\n")
        if target.exists():
            raise DicomError(f"{target}: already exists")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def import_dicom(
    source: Path,
    out_dir: Path,
    study_name: str | None,
    mapping: dict[int, str] | None = None,
    limits: ArchiveLimits | None = None,
    rules: Rules | None = None,
) -> ImportedStudy:
    """Import a DICOM MR study (folder or .zip) into ``out_dir/<study_name>/`` (see the module docstring).

    ``mapping`` (series number → t1 / t1ce / t2 / flair) overrides the rules; ``study_name`` None names
    the study ``dicom-<10 hex digits of the SHA-256 of its StudyInstanceUID>``. Raises
    :class:`DicomError` (one line) for every refusal, leaving nothing behind."""
    if study_name is not None:
        check_study_name(study_name)
        if (Path(out_dir) / study_name).exists():
            raise DicomError(f"{Path(out_dir) / study_name}: already exists")
    rules = rules or load_rules()
    with source_files(Path(source), limits) as files:
        series, found = _scan(source, files, rules)
        _refuse_without_mr(source, series)
        placement = place_series(series, found, mapping)
        study_uid, frame_uid = _check_one_session(placement.chosen)
        volumes, geometries, affine = _volumes(placement)
    reference = geometries[REFERENCE]
    resampled = tuple(
        m
        for m in MODALITIES
        if not same_grid(geometries[m].affine, geometries[m].shape, affine, reference.shape)
    )
    name = study_name or f"dicom-{hashlib.sha256(study_uid.encode()).hexdigest()[:10]}"
    target = Path(out_dir) / name
    _write_study(
        target, name, volumes, affine, _record(study_uid, frame_uid, placement, geometries, resampled)
    )
    return ImportedStudy(
        folder=target,
        study_name=name,
        series={m: _info(s, found[s.uid], placement.why[m]) for m, s in placement.chosen.items()},
        resampled=resampled,
        unplaced=[_info(s, found[s.uid], why) for s, why in placement.unplaced],
    )
