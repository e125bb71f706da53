"""RTSTRUCT and DICOM-SEG of a segmented study: ``bmseg segment --dicom`` and a segment job's ``dicom``.

:func:`write_dicom_outputs` writes ``<study>_rtstruct.dcm`` and ``<study>_seg.dcm`` next to the mask and
the lesion table. Both point at the T1 post-contrast series: the source series of a study imported from
DICOM (its ``dicom_source.json``), else an MR series bmseg writes from the T1 post-contrast volume into
``<study>_t1ce_dicom/``, so that the three load together in a planning system or viewer. Everything is
written into a hidden staging folder first and moved into place at the end: a refusal leaves no file.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
import zipfile
from pathlib import Path

from bmcore import imaging
from bmcore.dicom.errors import DicomError
from bmcore.dicom.instance import check_pseudonym, replace_path, save_atomic
from bmcore.dicom.mr_series import write_mr_series
from bmcore.dicom.reference import from_source_record, from_written_series, read_source_record, t1ce_geometry
from bmcore.dicom.rtstruct import build_rtstruct
from bmcore.dicom.seg import build_seg
from bmcore.dicom.structures import read_mask, structures

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _t1ce_path(study_dir: Path) -> Path:
    try:
        return imaging.study_from_dir(study_dir).images["t1ce"]
    except imaging.StudyError as exc:
        raise DicomError(str(exc)) from None


def write_dicom_outputs(
    study_dir: Path,
    mask_path: Path,
    lesions: list[dict],
    out_dir: Path,
    study_name: str,
    pseudonym: str,
    t1ce_path: Path | None = None,
) -> dict[str, Path]:
    """Write the RTSTRUCT and DICOM-SEG of a segmented study; returns their paths by kind.

    ``mask_path`` is the segment output (labels 1..3 on the study's grid), ``lesions`` its lesion table
    (rows of :data:`bmcore.metrics.LESION_COLUMNS`). ``t1ce_path`` defaults to the T1 post-contrast file
    of the study folder's layout (pass it for a manifest's study). Keys ``"rtstruct"``, ``"seg"`` and, for
    a study not imported from DICOM, ``"mr_series"`` (the folder). Identifies the patient by
    ``pseudonym`` alone. Raises :class:`DicomError` (one line) and then leaves nothing behind.
    """
    study_dir, out_dir = Path(study_dir), Path(out_dir)
    if not STUDY_NAME.match(study_name):
        raise DicomError(f"study name {study_name!r} is not a plain file name")
    pseudonym = check_pseudonym(pseudonym)
    t1ce = Path(t1ce_path) if t1ce_path is not None else _t1ce_path(study_dir)
    record = read_source_record(study_dir)
    geometry = t1ce_geometry(t1ce)
    items = structures(read_mask(mask_path, geometry), geometry, lesions)
    targets = {"rtstruct": out_dir / f"{study_name}_rtstruct.dcm", "seg": out_dir / f"{study_name}_seg.dcm"}
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".tmp-dicom-{uuid.uuid4().hex}"
    try:
        if record is not None:
            reference = from_source_record(record, t1ce, pseudonym)
        else:
            targets["mr_series"] = out_dir / f"{study_name}_t1ce_dicom"
            files = write_mr_series(t1ce, staging / targets["mr_series"].name, pseudonym)
            reference = from_written_series(files, t1ce, pseudonym)
        save_atomic(build_rtstruct(reference, items), staging / targets["rtstruct"].name)
        save_atomic(build_seg(reference, items), staging / targets["seg"].name)
        for target in targets.values():
            replace_path(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return targets


def zip_series(folder: Path) -> Path:
    """``<folder>.zip`` of a written MR series (a job artifact is one file), its files under ``<folder>/``."""
    folder = Path(folder)
    target = folder.with_name(f"{folder.name}.zip")
    temp = folder.with_name(f".tmp-{uuid.uuid4().hex}.zip")
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.iterdir()):
                archive.write(path, arcname=f"{folder.name}/{path.name}")
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target
