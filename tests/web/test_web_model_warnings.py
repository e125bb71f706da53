"""Honest labels on registered versions (issue #15): the Models page lists each version's training data,
its validation lesions and its warnings (trained on synthetic data; a validation set too small to promote
on); a train job's page repeats the warnings of the version it registered."""

from __future__ import annotations

from bmcore.jobs.lifecycle import finish_job, record_result, submit_job
from bmcore.tracking.registry import SYNTHETIC_WARNING


def _overview() -> list[dict]:
    version = {
        "version": 3,
        "run_id": "run3",
        "aliases": [],
        "created": "2025-01-03T00:00:00+00:00",
        "tags": {
            "training_data": "/data/synthetic-cohort",
            "training_data_synthetic": "true",
            "too_small_to_promote": "true",
            "val_lesions": "3",
            "val_patients": "2",
        },
        "metrics": {"val_lesion_dice": 0.9, "val_lesions": 3.0},
    }
    real = {
        "version": 2,
        "run_id": "run2",
        "aliases": ["champion"],
        "created": "2025-01-02T00:00:00+00:00",
        "tags": {"training_data": "brats-mets", "training_data_synthetic": "false", "val_lesions": "12"},
        "metrics": {"val_lesion_dice": 0.6},
    }
    return [{"name": "bmseg-unet", "champion": 2, "versions": [version, real]}]


def test_models_page_shows_training_data_and_warnings_per_version(signed_in, monkeypatch):
    monkeypatch.setattr("bmcore.tracking.registry_overview", _overview)
    text = signed_in.get("/models").text
    assert "/data/synthetic-cohort" in text and "brats-mets" in text
    assert "3 validation lesions, 2 patients" in text and "12 validation lesions" in text
    assert text.count(SYNTHETIC_WARNING) == 1
    assert text.count("validation set too small to promote on (3 lesions, fewer than 5)") == 1


def test_train_job_page_shows_the_registered_versions_warnings(signed_in, users, db_session):
    job = submit_job(db_session, "train", {"data": "/d"}, owner_id=users.alice.id, send=False)
    too_small = "validation set too small to promote on (3 lesions, fewer than 5): never takes champion"
    registered = {
        "name": "bmseg-unet",
        "version": 3,
        "champion": False,
        "warnings": [SYNTHETIC_WARNING, too_small],
    }
    record_result(db_session, job.id, {"best_epoch": 1, "val_lesion_dice": 0.5, "registered": registered}, {})
    finish_job(db_session, job.id, "succeeded")
    text = signed_in.get(f"/jobs/{job.id}").text
    assert f"Registered version: {SYNTHETIC_WARNING}" in text
    assert f"Registered version: {too_small}" in text
    assert text.index("Registered version:") < text.index('id="result-set-1"')


def test_a_segmentation_by_a_synthetic_trained_model_warns_on_its_job_page(signed_in, users, db_session):
    job = submit_job(db_session, "segment", {"study_dir": "/d/s1"}, owner_id=users.alice.id, send=False)
    metrics = {"model": "models:/bmseg-unet/3", "model_warnings": [SYNTHETIC_WARNING], "studies": {}}
    record_result(db_session, job.id, metrics | {"lesion_count": 0}, {})
    finish_job(db_session, job.id, "succeeded")
    assert f"Model: {SYNTHETIC_WARNING}" in signed_in.get(f"/jobs/{job.id}").text
    clean = submit_job(db_session, "segment", {"study_dir": "/d/s1"}, owner_id=users.alice.id, send=False)
    record_result(db_session, clean.id, {"model": "x.pt", "model_warnings": [], "studies": {}}, {})
    finish_job(db_session, clean.id, "succeeded")
    assert "data-warning" not in signed_in.get(f"/jobs/{clean.id}").text


def test_the_study_page_warns_when_its_segmentation_came_from_a_synthetic_trained_model(
    signed_in, users, upload, study_files, fake_segment
):
    stored = upload(study_files(), patient_id="W001", study_uid="W001").json
    fake_segment(stored["id"], users.alice.id)
    assert "data-warning" not in signed_in.get(f"/studies/{stored['id']}").text
    fake_segment(stored["id"], users.alice.id, model_warnings=[SYNTHETIC_WARNING])
    page = signed_in.get(f"/studies/{stored['id']}").text
    assert page.count(f"Model: {SYNTHETIC_WARNING}") == 1
    assert page.index("Model: ") < page.index('id="mask-download"')
