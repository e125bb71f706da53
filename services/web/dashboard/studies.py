"""Studies: the list with the upload form, a study's page (viewer, lesions, jobs) and its slices as PNG."""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, Response, current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from bmcore.db import Group, Job, Study
from bmcore.imaging import MODALITIES, StudyError
from bmcore.metrics import LABELS
from services.web import slices
from services.web.access import artifact_file, jobs_of_studies, visible_job, visible_studies, visible_study
from services.web.common import WebError, db, privately_cached
from services.web.dicom_intake import is_dicom_upload, queue_dicom_upload
from services.web.job_inputs import DEFAULT_MODEL
from services.web.reports import has_lesion_table, newest_segmentation, segmentation_lesions
from services.web.result_view import model_warnings_of
from services.web.study_intake import store_study_upload
from services.web.uploads import UploadError

OVERLAYS = ("prediction", "label", "none")
# A segmentation's DICOM outputs (bmcore.jobs.runner.run_segment with params.dicom): artifact name suffixes.
DICOM_ARTIFACTS = {"rtstruct": "_rtstruct", "seg": "_dicom_seg", "mr_series": "_t1ce_dicom"}
DICOM_JOBS_SEARCHED = 50
STUDY_JOBS_SHOWN = 10


def upload_groups() -> tuple[list[str], str | None]:
    """The groups the upload form offers (the user's; an admin: every group), by name, and the label of
    the empty choice (None: there is none; an admin's stands for their default group)."""
    if g.user.is_admin:
        return list(db().scalars(select(Group.name).order_by(Group.name))), "your default group"
    names = sorted(group.name for group in g.user.groups)
    return names, "choose a group" if len(names) > 1 else None


def _studies_page(status: int = 200, error: str | None = None, form: dict[str, str] | None = None):
    session = db()
    studies = visible_studies(session, g.user)
    groups, group_blank = upload_groups()
    return (
        render_template(
            "studies.html",
            studies=studies,
            groups=groups,
            group_blank=group_blank,
            modalities=MODALITIES,
            error=error,
            form=form or {},
            max_upload_mb=current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024),
        ),
        status,
    )


def studies():
    return _studies_page()


def upload_study():
    form = {name: request.form.get(name, "") for name in ("patient_id", "study_uid", "group", "map")}
    config = current_app.config
    if is_dicom_upload(request.files):
        return _upload_dicom(form)
    try:
        study = store_study_upload(
            db(),
            request.files,
            form["patient_id"],
            form["study_uid"],
            g.user,
            config["UPLOADS_DIR"],
            config["MAX_UPLOAD_VOXELS"],
            group=form["group"],
        )
    except UploadError as exc:
        return _studies_page(exc.status, f"Upload refused: {exc.message}", form)
    flash(f"Study {study.study_uid} stored and checked.", "success")
    return redirect(url_for("dashboard.study", study_id=study.id), 303)


def _upload_dicom(form: dict[str, str]):
    """A DICOM archive from the upload form: queued as an ingest job, whose page follows the import."""
    config = current_app.config
    try:
        job = queue_dicom_upload(
            db(), request.files, form, g.user, config["UPLOADS_DIR"], config["MAX_CONTENT_LENGTH"]
        )
    except UploadError as exc:
        return _studies_page(exc.status, f"Upload refused: {exc.message}", form | {"dicom": "1"})
    flash(
        "DICOM archive received: the import runs in this job; the study is listed once it succeeded.",
        "success",
    )
    return redirect(url_for("dashboard.job", job_id=job.id), 303)


def _viewer(record: Study, segmentation: Job | None) -> dict[str, Any]:
    """The viewer's planes (slice count, first slice, orientation letters), the lesions' slices, or the
    reason the study cannot be shown."""
    config = current_app.config
    state: dict[str, Any] = {"depth": 1, "best_slice": 0, "lesion_z": {}, "lesion_centres": {}, "error": None}
    state["planes"] = {p: {"count": 1, "start": 0, "orient": o} for p, o in slices.PLANE_ORIENTATION.items()}
    try:
        volume = slices.display_volume(record.directory, config["MAX_VOXELS"])
        mask = None
        if segmentation is not None:
            mask_path = artifact_file(segmentation, f"{record.study_uid}_seg", config["RESULTS_DIR"])
            mask = slices.display_mask(record.directory, str(mask_path), config["MAX_VOXELS"])
            state["lesion_centres"] = slices.lesion_centres(mask, volume.spacing)
            state["lesion_z"] = {lesion: centre[2] for lesion, centre in state["lesion_centres"].items()}
        starts = slices.best_slices(mask if mask is not None else volume.label, volume.shape)
        for plane, view in state["planes"].items():
            view |= {"count": slices.slice_count(volume.shape, plane), "start": starts[plane]}
        state["depth"], state["best_slice"] = state["planes"]["axial"]["count"], starts["axial"]
    except (StudyError, OSError, WebError) as exc:
        state["error"] = f"Cannot display this study: {getattr(exc, 'message', exc)}"
    return state


def dicom_downloads(session: Session, record: Study) -> tuple[Job | None, dict[str, str]]:
    """The newest succeeded segmentation of ``record`` the user can see that wrote DICOM outputs, with the
    artifact names of those it wrote (``rtstruct``, ``seg``, ``mr_series``)."""
    query = (
        select(Job)
        .where(Job.study_id == record.id, Job.type == "segment", Job.status == "succeeded")
        .order_by(Job.finished_at.desc(), Job.created_at.desc())
        .limit(DICOM_JOBS_SEARCHED)
    )
    if not g.user.is_admin:
        query = query.where(Job.owner_id == g.user.id)
    for job in session.scalars(query):
        artifacts = job.result.artifacts if job.result is not None else {}
        names = {key: f"{record.study_uid}{suffix}" for key, suffix in DICOM_ARTIFACTS.items()}
        present = {key: name for key, name in names.items() if name in artifacts}
        if "rtstruct" in present or "seg" in present:
            return job, present
    return None, {}


def study(study_id: int):
    session = db()
    record = visible_study(session, g.user, study_id)
    segmentation = newest_segmentation(session, record, g.user)
    lesions: list[dict[str, str]] | None = None
    if has_lesion_table(segmentation, record):
        try:
            lesions = segmentation_lesions(segmentation, record)
        except (WebError, OSError, UnicodeDecodeError):
            lesions = None
    dicom_job, dicom_names = dicom_downloads(session, record)
    return render_template(
        "study.html",
        study=record,
        segmentation=segmentation,
        model_warnings=model_warnings_of(segmentation.result.metrics or {})
        if segmentation and segmentation.result
        else [],
        dicom_job=dicom_job,
        dicom_names=dicom_names,
        segment_defaults={"model": DEFAULT_MODEL},
        mask_name=f"{record.study_uid}_seg" if segmentation else None,
        lesions=lesions,
        has_label=record.label_path is not None,
        modalities=sorted(record.files, key=MODALITIES.index),
        label_names=LABELS,
        colours=slices.LABEL_COLOURS,
        jobs=jobs_of_studies(session, g.user, [record.id], STUDY_JOBS_SHOWN),
        **_viewer(record, segmentation),
    )


def _slice_arguments(record: Study) -> tuple[str, str, str, int, float]:
    """The slice request's modality, overlay kind, plane, slice index (``index``, or ``z`` as older links
    name it) and opacity, or 400."""
    modality = request.args.get("modality", MODALITIES[0])
    overlay_kind = request.args.get("overlay", "prediction")
    plane = request.args.get("plane", "axial")
    if modality not in record.files or overlay_kind not in OVERLAYS or plane not in slices.PLANES:
        raise WebError(
            400,
            f"modality must be one of {', '.join(record.files)}; overlay one of {', '.join(OVERLAYS)}; "
            f"plane one of {', '.join(slices.PLANES)}",
        )
    try:
        index = int(request.args.get("index", request.args.get("z", "0")))
        opacity = float(request.args.get("opacity", "0.45"))
    except ValueError:
        raise WebError(400, "index must be an integer and opacity a number") from None
    if not math.isfinite(opacity):
        raise WebError(400, "opacity must be a number from 0 to 1")
    return modality, overlay_kind, plane, index, opacity


def _prediction_overlay(record: Study):
    """The mask of the segmentation asked for (``?job=``) or the newest one, or None."""
    session, config = db(), current_app.config
    job_id = request.args.get("job")
    if job_id:
        segmentation = visible_job(session, g.user, job_id)
    else:
        segmentation = newest_segmentation(session, record, g.user)
    if segmentation is None:
        return None
    if segmentation.study_id != record.id:
        raise WebError(400, f"job {segmentation.id} did not segment this study")
    path = artifact_file(segmentation, f"{record.study_uid}_seg", config["RESULTS_DIR"])
    return slices.display_mask(record.directory, str(path), config["MAX_VOXELS"])


def study_slice(study_id: int):
    record = visible_study(db(), g.user, study_id)
    modality, overlay_kind, plane, index, opacity = _slice_arguments(record)
    try:
        volume = slices.display_volume(record.directory, current_app.config["MAX_VOXELS"])
        count = slices.slice_count(volume.shape, plane)
        if not 0 <= index < count:
            raise WebError(400, f"{plane} slice index must be from 0 to {count - 1}, got {index}")
        overlay = None
        if overlay_kind == "label":
            overlay = volume.label
        elif overlay_kind == "prediction":
            overlay = _prediction_overlay(record)
        png = slices.render_slice(volume, modality, index, overlay, opacity, plane)
    except StudyError as exc:
        raise WebError(422, f"cannot display this study: {exc}") from None
    return privately_cached(Response(png, mimetype="image/png"))


def register(bp: Blueprint) -> None:
    bp.get("/studies")(studies)
    bp.post("/studies")(upload_study)
    bp.get("/studies/<int:study_id>")(study)
    bp.get("/studies/<int:study_id>/slice.png")(study_slice)
