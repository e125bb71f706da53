"""The cohort page of the studies a user can see (their own and their groups' patients'): summary tables,
plots, and its JSON."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, render_template, request, send_file

from bmcore.patients import PRIMARY_CANCER_TYPES
from bmcore.reports import cohort as cohort_report
from bmcore.reports.cohort.database import patient_label, shared_pseudonyms
from services.web.access import can_see_patient, visible_studies
from services.web.common import WebError, db, privately_cached
from services.web.reports import MAX_COHORT_STUDIES, cohort_summary, seed_argument


def cohort():
    seed = seed_argument()
    summary, folder = cohort_summary(g.user, seed)
    records = {r["study_id"]: r for r in summary["studies"]}
    studies = visible_studies(db(), g.user, limit=MAX_COHORT_STUDIES)
    study_ids = {s.study_uid: s.id for s in studies}
    # Links to the patients of the studies shown: pseudonyms are unique per group only, so they come from
    # the visible studies themselves, never from a lookup by pseudonym across groups.
    shared = shared_pseudonyms(studies)
    patient_ids = {
        patient_label(s, s.patient.pseudonym in shared): s.patient_id
        for s in studies
        if can_see_patient(g.user, s.patient)
    }
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
