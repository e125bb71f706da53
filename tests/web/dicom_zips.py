"""DICOM archives for the web and worker tests: a four-series MR study (T1, T1 post-contrast, T2, FLAIR)
as a scanner exports it, written by the test-side scanner of tests/bmcore/dicom/scanner.py (plain pydicom,
nothing shared with bmseg's DICOM code: scanner-style attributes and series names, PHI in the headers,
uninformative file names in nested folders, a shuffled order), zipped; and the bad archives the import
must refuse.

    mr_study_zip(volumes, ...)   the zip's bytes; series t1 3, t2 5, flair 7, t1ce 9; ``extra`` adds series
    PHI, PHI_BYTES               the identifying values written into every header (must never be stored)
    phi_found(folder)            the PHI a stored study's files hold (none, or a test fails)
    traversal_zip, bomb_zip, text_zip    archives the import refuses
    record_dicom_segmentation    a succeeded segment job with real RTSTRUCT / DICOM-SEG files (no model)
"""

from __future__ import annotations

import csv
import gzip
import io
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydicom.uid import CTImageStorage

from tests.bmcore.dicom.scanner import (
    PHI,
    PHI_BYTES,
    SeriesSpec,
    axial_affine,
    four_series,
    write_study,
    zip_folder,
)

__all__ = [
    "PHI",
    "PHI_BYTES",
    "SeriesSpec",
    "bomb_zip",
    "mr_study_zip",
    "phi_found",
    "record_dicom_segmentation",
]
SPACING = (1.5, 1.5, 3.0)
T1CE_SERIES = 9


def mr_study_zip(
    volumes: Mapping[str, np.ndarray],
    spacing: tuple[float, float, float] = SPACING,
    extra: tuple[dict, ...] = (),
    ct: bool = False,
    seed: int = 0,
) -> bytes:
    """A zip of one MR study on an axial grid of ``spacing`` (``ct``: the same series as CT images);
    ``extra``: more series, as :class:`SeriesSpec` fields (``volume`` a key of ``volumes``)."""
    shape = next(iter(volumes.values())).shape
    affine = axial_affine(shape, spacing)
    changes = {n: {"sop_class": CTImageStorage, "modality": "CT"} for n in (3, 5, 7, 9)} if ct else None
    specs = four_series(volumes, affine, changes)
    specs += [
        SeriesSpec(**(fields | {"volume": volumes[fields["volume"]], "affine": affine})) for fields in extra
    ]
    with tempfile.TemporaryDirectory(prefix="bmseg-test-dicom-") as folder:
        write_study(Path(folder) / "export", specs, seed=seed)
        return zip_folder(Path(folder) / "export", Path(folder) / "export.zip").read_bytes()


def phi_found(folder: Path) -> list[str]:
    """The PHI of :data:`PHI_BYTES` found in a stored study's files: anywhere in the JSON, in the NIfTI
    headers (with their extensions), and the longer values anywhere in the voxel data too (a short token
    such as ``Doe`` turns up in random float bytes now and then)."""
    import nibabel as nib

    found = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        if path.name.endswith(".nii.gz"):
            header = nib.load(path).header
            head = header.binaryblock + b"".join(bytes(e.get_content()) for e in header.extensions)
            data = gzip.decompress(raw)
            found += [f"{path.name}: {v!r}" for v in PHI_BYTES if v in head or (len(v) >= 8 and v in data)]
        else:
            found += [f"{path.name}: {v!r}" for v in PHI_BYTES if v in raw]
    return found


def traversal_zip(study_zip: bytes) -> bytes:
    """The study's zip with one more entry whose name climbs out of the folder it is extracted into."""
    buffer = io.BytesIO(study_zip)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("../../evil.dcm", b"not really DICOM")
    return buffer.getvalue()


def bomb_zip(megabytes: int = 16) -> bytes:
    """A small zip whose one entry expands to ``megabytes`` MB of zeros (about a thousand times its size)."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("DICOM/IM0001", "w") as entry,
    ):
        for _ in range(megabytes):
            entry.write(bytes(1 << 20))
    return buffer.getvalue()


def text_zip() -> bytes:
    """A zip of files that are not DICOM at all (no MR series)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", "exported by a PACS that forgot the images\n")
        archive.writestr("DICOMDIR.txt", "nothing here\n")
    return buffer.getvalue()


def record_dicom_segmentation(session, results_dir: Path, study_id: int, owner_id: int) -> str:
    """A succeeded segment job of the study with real outputs, as ``run_segment`` with ``dicom`` leaves them:
    the study's label as the mask, its lesion table, and the RTSTRUCT, DICOM-SEG and MR series zip that
    :func:`bmcore.dicom.write_dicom_outputs` writes for it (no model run). Returns the job id."""
    import nibabel as nib

    from bmcore import metrics
    from bmcore.db import Job, Result, Study, utcnow
    from bmcore.dicom import write_dicom_outputs, zip_series

    study = session.get(Study, study_id)
    job = Job(type="segment", params={"model": "models:/bmseg-unet@champion", "dicom": True}, status="queued")
    job.owner_id, job.study_id, job.message = owner_id, study_id, "queued"
    session.add(job)
    session.commit()
    out = Path(results_dir) / "jobs" / job.id
    out.mkdir(parents=True, exist_ok=True)
    label = nib.load(study.label_path)
    mask_path = out / f"{study.study_uid}_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj).astype(np.uint8), label.affine), mask_path)
    affine = label.affine

    def to_world(voxel: np.ndarray) -> np.ndarray:
        return affine[:3, :3] @ voxel + affine[:3, 3]

    spacing = nib.affines.voxel_sizes(affine)
    rows = metrics.lesion_rows(np.asarray(label.dataobj).astype(np.uint8), tuple(spacing), to_world)
    lesions_path = out / f"{study.study_uid}_lesions.csv"
    with lesions_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=metrics.LESION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    written = write_dicom_outputs(
        Path(study.directory), mask_path, rows, out, study.study_uid, study.patient.pseudonym
    )
    artifacts = {
        f"{study.study_uid}_seg": str(mask_path),
        f"{study.study_uid}_lesions": str(lesions_path),
        f"{study.study_uid}_rtstruct": str(written["rtstruct"]),
        f"{study.study_uid}_dicom_seg": str(written["seg"]),
    }
    if "mr_series" in written:
        artifacts[f"{study.study_uid}_t1ce_dicom"] = str(zip_series(written["mr_series"]))
    job.status, job.progress, job.message = "succeeded", 1.0, "succeeded"
    job.started_at = job.finished_at = utcnow()
    session.add(Result(job_id=job.id, metrics={"lesion_count": len(rows)}, artifacts=artifacts))
    session.commit()
    return job.id
