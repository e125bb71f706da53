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
