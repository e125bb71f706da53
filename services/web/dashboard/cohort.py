"""The cohort page of the studies a user can see: summary tables, plots, and its JSON."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, render_template, request, send_file
from sqlalchemy import select

from bmcore.db import Patient
from bmcore.patients import PRIMARY_CANCER_TYPES
from bmcore.reports import cohort as cohort_report
from services.web.access import visible_studies
from services.web.common import WebError, db, privately_cached
from services.web.reports import MAX_COHORT_STUDIES, cohort_summary, seed_argument


def cohort():
    seed = seed_argument()
    summary, folder = cohort_summary(g.user, seed)
    pseudonyms = [p["patient_id"] for p in summary["patients"]]
    rows = db().scalars(select(Patient).where(Patient.pseudonym.in_(pseudonyms))) if pseudonyms else []
    patient_ids = {p.pseudonym: p.id for p in rows}
    records = {r["study_id"]: r for r in summary["studies"]}
    study_ids = {s.study_uid: s.id for s in visible_studies(db(), g.user, limit=MAX_COHORT_STUDIES)}
    return render_template(
        "cohort.html",
        summary=summary,
        seed=seed,
        version=folder.name,
        plots=summary.get("plots", {}),
        titles=cohort_report.PLOT_TITLES,
        patient_ids=patient_ids,
        records=records,
        study_ids=study_ids,
        primary_types=PRIMARY_CANCER_TYPES,
        classes=list(cohort_report.CLASSES),
    )


def cohort_json():
    summary, _ = cohort_summary(g.user, seed_argument())
    return jsonify(summary)


def cohort_plot():
    name = request.args.get("name", cohort_report.PLOTS[0])
    if name not in cohort_report.PLOTS:
        raise WebError(400, f"name must be one of {', '.join(cohort_report.PLOTS)}")
    summary, folder = cohort_summary(g.user, seed_argument())
    if name not in summary.get("plots", {}):
        raise WebError(404, f"no {name} plot for this cohort")
    return privately_cached(send_file(folder / summary["plots"][name], mimetype="image/png"))


def register(bp: Blueprint) -> None:
    bp.get("/cohort")(cohort)
    bp.get("/cohort.json")(cohort_json)
    bp.get("/cohort/plot.png")(cohort_plot)
