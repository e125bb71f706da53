"""Dashboard pages, their JSON/PNG routes and the new-job form (signed in through the form, CSRF included)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from bmcore.db import Job
from bmcore.jobs.lifecycle import claim_job, record_result, update_progress

CHAMPION = "models:/bmseg-unet@champion"


@pytest.fixture(autouse=True)
def data_sets(request, tmp_path) -> dict:
    """Data sets ``d`` and ``brats`` (registered by an admin): a non-admin's jobs name them, not paths."""
    if "db_session" not in request.fixturenames and "signed_in" not in request.fixturenames:
        return {}
    from bmcore.datasets import add_dataset

    folders = {}
    for name in ("d", "brats"):
        folders[name] = tmp_path / "data-sets" / name
        folders[name].mkdir(parents=True)
        add_dataset(request.getfixturevalue("db_session"), name, folders[name])
    return folders


def _png(response) -> np.ndarray:
    assert response.status_code == 200, response.data[:200]
    assert response.mimetype == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.data)).convert("RGB"))


def test_index_goes_to_jobs(signed_in):
    assert signed_in.get("/").headers["Location"] == "/jobs"


def test_pages_render(signed_in, stored_study):
    for path, text in (
        ("/jobs", "Jobs"),
        ("/jobs/new", "Queue job"),
        ("/studies", "S001"),
        (f"/studies/{stored_study['id']}", "Not segmented yet"),
        ("/models", "bmseg-unet"),
    ):
        response = signed_in.get(path)
        assert response.status_code == 200, path
        assert text in response.text, path
        assert 'name="csrf_token"' in response.text  # the sign-out form


def test_new_job_form_queues_a_segmentation(signed_in, stored_study, web_redis, db_session, users):
    page = signed_in.get(f"/jobs/new?type=segment&study_id={stored_study['id']}")
    assert f'<option value="{stored_study["id"]}" selected>' in page.text

    response = signed_in.post(
        "/jobs",
        data={
            "csrf_token": signed_in.csrf,
            "type": "segment",
            "model": CHAMPION,
            "study_id": stored_study["id"],
        },
    )

    assert response.status_code == 303
    job = db_session.scalars(select(Job)).one()
    assert response.headers["Location"] == f"/jobs/{job.id}"
    assert (job.type, job.study_id, job.params, job.owner_id) == (
        "segment",
        stored_study["id"],
        {"model": CHAMPION},
        users.alice.id,
    )
    assert web_redis.llen("gpu") == 1
    assert "Segment job queued" in signed_in.get(f"/jobs/{job.id}").text


def test_new_job_form_queues_training_with_typed_numbers(signed_in, web_redis, db_session, data_sets):
    response = signed_in.post(
        "/jobs",
        data={
            "csrf_token": signed_in.csrf,
            "type": "train",
            "arch": "fcn",
            "recipe": "study",
            "epochs": "4",
            "lr": "0.0005",
            "batch_size": "8",
            "size": "128",
            "dataset": "brats",
        },
    )
    assert response.status_code == 303
    job = db_session.scalars(select(Job)).one()
    assert job.params == {
        "data": str(data_sets["brats"]),
        "dataset": "brats",
        "champion_eligible": False,
        "arch": "fcn",
        "recipe": "study",
        "epochs": 4,
        "lr": 0.0005,
        "batch_size": 8,
        "size": 128,
    }


@pytest.mark.parametrize(
    ("form", "status", "fragment"),
    [
        ({"type": "train", "arch": "unet", "epochs": "-1", "dataset": "d"}, 400, "epochs must be a positive"),
        ({"type": "train", "arch": "vit", "epochs": "3", "dataset": "d"}, 400, "unknown arch"),
        (
            {"type": "train", "arch": "unet", "epochs": "three", "dataset": "d"},
            400,
            "epochs must be a whole number",
        ),
        ({"type": "train", "arch": "unet", "epochs": "3", "dataset": ""}, 400, "needs a data set"),
        ({"type": "segment", "model": CHAMPION, "study_id": "999"}, 404, "unknown study id"),
        ({"type": "segment", "model": CHAMPION}, 400, "study_id or params.study_dir"),
        ({"type": "nap"}, 400, "type must be one of"),
    ],
)
def test_new_job_form_shows_what_is_wrong(signed_in, db_session, form, status, fragment):
    response = signed_in.post("/jobs", data={"csrf_token": signed_in.csrf, **form})
    assert response.status_code == status
    assert fragment in response.text
    assert db_session.scalars(select(Job)).all() == []


def test_jobs_json_and_job_json_follow_progress(signed_in, db_session, users, client, api, app):
    submitted = client.post(
        "/api/v1/jobs", json={"type": "train", "params": {"data": "d"}}, headers=api["alice"]
    )
    client.post("/api/v1/jobs", json={"type": "train", "params": {"data": "d"}}, headers=api["bob"])
    job_id = submitted.json["id"]
    claim_job(db_session, job_id, "worker-1")
    update_progress(db_session, job_id, 0.4, "epoch 2/5")

    listing = signed_in.get("/jobs.json").json["jobs"]
    assert [(j["id"], j["status"], j["progress"], j["message"]) for j in listing] == [
        (job_id, "running", 0.4, "epoch 2/5")
    ]
    assert signed_in.get("/jobs.json?status=queued").json == {"jobs": []}
    assert signed_in.get("/jobs.json?status=bogus").status_code == 400

    detail = signed_in.get(f"/jobs/{job_id}.json").json
    assert detail["progress"] == 0.4 and detail["events"][-1]["message"] == "epoch 2/5"
    assert detail["result"] is None

    page = signed_in.get(f"/jobs/{job_id}")
    assert "epoch 2/5" in page.text and 'id="cancel-form"' in page.text
    assert f'data-json-url="/jobs/{job_id}.json"' in page.text


def test_job_page_shows_metrics_curves_and_mlflow_link(signed_in, db_session, users, client, api, app):
    job_id = client.post(
        "/api/v1/jobs", json={"type": "train", "params": {"data": "d"}}, headers=api["alice"]
    ).json["id"]
    out = app.config["RESULTS_DIR"] / "jobs" / job_id
    out.mkdir(parents=True)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (10, 20, 30)).save(buffer, format="PNG")
    (out / "curves.png").write_bytes(buffer.getvalue())
    job = db_session.get(Job, job_id)
    job.mlflow_run_id = "abc123"
    db_session.commit()
    record_result(db_session, job_id, {"val_lesion_dice": 0.5123456}, {"curves": str(out / "curves.png")})

    page = signed_in.get(f"/jobs/{job_id}").text
    assert "val_lesion_dice" in page and "0.5123" in page
    assert f'src="/jobs/{job_id}/artifacts/curves"' in page
    assert 'href="http://127.0.0.1:5000/#/runs/abc123"' in page
    curves = signed_in.get(f"/jobs/{job_id}/artifacts/curves")
    assert curves.status_code == 200 and curves.mimetype == "image/png"
    assert "attachment" not in curves.headers.get("Content-Disposition", "")
    assert signed_in.get(f"/jobs/{job_id}/artifacts/nothing").status_code == 404


def test_mlflow_ui_url_is_configurable(make_app, users, db_session, monkeypatch):
    monkeypatch.setenv("BMSEG_MLFLOW_UI_URL", "https://mlflow.example.org/")
    app = make_app()
    job = Job(type="train", params={}, status="running", owner_id=users.alice.id, mlflow_run_id="r1")
    db_session.add(job)
    db_session.commit()
    client = app.test_client()
    from .conftest import sign_in

    sign_in(client, users.alice.email)
    assert "https://mlflow.example.org/#/runs/r1" in client.get(f"/jobs/{job.id}").text


def test_cancel_from_the_job_page(signed_in, client, api, db_session):
    job_id = client.post(
        "/api/v1/jobs", json={"type": "train", "params": {"data": "d"}}, headers=api["alice"]
    ).json["id"]
    response = signed_in.post(f"/jobs/{job_id}/cancel", data={"csrf_token": signed_in.csrf})
    assert response.status_code == 303
    db_session.expire_all()
    assert db_session.get(Job, job_id).status == "cancelled"


def test_other_users_pages_are_forbidden(app, signed_in, client, api, stored_study):
    from .conftest import sign_in

    job_id = client.post(
        "/api/v1/jobs", json={"type": "train", "params": {"data": "d"}}, headers=api["alice"]
    ).json["id"]
    bob = app.test_client()
    sign_in(bob, "bob@example.org")
    # Another user's job or study answers 404, exactly as an unknown id does (no 403-vs-404 oracle).
    assert bob.get(f"/jobs/{job_id}").status_code == 404
    assert bob.get(f"/jobs/{job_id}.json").json == {"error": f"unknown job id: {job_id}"}
    assert bob.get(f"/studies/{stored_study['id']}").status_code == 404
    assert f"unknown study id: {stored_study['id']}" in bob.get(f"/studies/{stored_study['id']}").text
    assert bob.get(f"/studies/{stored_study['id']}/slice.png").status_code == 404
    assert bob.get("/jobs/unknown-job").status_code == 404
    assert "Not found" in bob.get("/jobs/unknown-job").text


# ----------------------------------------------------------------------------------------- viewer


def test_viewer_shows_overlay_lesions_and_mask_link(signed_in, stored_study, fake_segment, users):
    job_id = fake_segment(stored_study["id"], users.alice.id)
    page = signed_in.get(f"/studies/{stored_study['id']}")

    assert page.status_code == 200
    text = page.text
    assert f'data-job="{job_id}"' in text
    assert f'href="/jobs/{job_id}/artifacts/S001_seg?download=1"' in text
    assert 'id="lesion-table"' in text and "0.900" in text and "12.0" in text
    assert "NETC" in text and "ET" in text

    base = f"/studies/{stored_study['id']}/slice.png"
    plain = _png(signed_in.get(f"{base}?modality=t1ce&z=8&overlay=none"))
    overlay = _png(signed_in.get(f"{base}?modality=t1ce&z=8&overlay=prediction&job={job_id}&opacity=0.9"))
    truth = _png(signed_in.get(f"{base}?modality=t1ce&z=8&overlay=label&opacity=0.9"))
    assert plain.shape == overlay.shape and plain.shape[2] == 3
    assert max(plain.shape[:2]) == 512
    assert (plain[..., 0] == plain[..., 1]).all()  # grey without overlay
    red = (overlay[..., 0] > 150) & (overlay[..., 1] < 80) & (overlay[..., 2] < 80)
    yellow = (overlay[..., 0] > 150) & (overlay[..., 1] > 150) & (overlay[..., 2] < 80)
    green = (overlay[..., 1] > 120) & (overlay[..., 0] < 100)
    assert red.any() and yellow.any() and green.any()
    assert (truth == overlay).all()  # the fake prediction is the uploaded label

    mask = signed_in.get(f"/jobs/{job_id}/artifacts/S001_seg?download=1")
    assert mask.status_code == 200 and "attachment" in mask.headers["Content-Disposition"]


def test_viewer_slice_validation(signed_in, stored_study):
    base = f"/studies/{stored_study['id']}/slice.png"
    assert signed_in.get(f"{base}?modality=dwi").status_code == 400
    assert signed_in.get(f"{base}?overlay=heat").status_code == 400
    assert signed_in.get(f"{base}?z=abc").status_code == 400
    assert signed_in.get(f"{base}?opacity=nan").status_code == 400
    assert signed_in.get(f"{base}?z=9999&overlay=prediction").status_code == 400  # past the last slice
    assert signed_in.get(f"{base}?plane=oblique").status_code == 400
    assert _png(signed_in.get(f"{base}?plane=coronal&index=31&overlay=prediction")).shape[2] == 3  # none yet
    assert signed_in.get("/studies/999/slice.png").status_code == 404


def test_viewer_uses_the_newest_succeeded_segmentation(
    signed_in, stored_study, fake_segment, users, db_session
):
    fake_segment(stored_study["id"], users.alice.id)
    newer = fake_segment(stored_study["id"], users.alice.id)
    failed = Job(
        type="segment", params={}, status="failed", owner_id=users.alice.id, study_id=stored_study["id"]
    )
    db_session.add(failed)
    db_session.commit()
    assert f'data-job="{newer}"' in signed_in.get(f"/studies/{stored_study['id']}").text


# ----------------------------------------------------------------------------------------- models


def test_models_page_survives_an_unavailable_registry(signed_in, monkeypatch):
    def broken():
        raise RuntimeError("no tracking server")

    monkeypatch.setattr("services.web.reports.registry_models", broken)
    response = signed_in.get("/models")
    assert response.status_code == 200
    assert "Registry unavailable" in response.text and "no tracking server" in response.text


def test_models_page_compares_versions(signed_in, monkeypatch):
    overview = [
        {
            "name": "bmseg-unet",
            "champion": 2,
            "versions": [
                {
                    "version": 2,
                    "run_id": "run2",
                    "aliases": ["champion"],
                    "created": "2025-01-02T00:00:00+00:00",
                    "tags": {},
                    "metrics": {"val_lesion_dice": 0.61, "val_loss": 0.2},
                },
                {
                    "version": 1,
                    "run_id": "run1",
                    "aliases": [],
                    "created": "2025-01-01T00:00:00+00:00",
                    "tags": {},
                    "metrics": {"val_lesion_dice": 0.42},
                },
            ],
        },
        {"name": "bmseg-cnn", "champion": None, "versions": []},
    ]
    monkeypatch.setattr("services.web.reports.registry_models", lambda: overview)
    text = signed_in.get("/models").text
    assert "@champion" in text and "0.6100" in text and "0.4200" in text
    assert "val lesion dice" in text
    assert "#/compare-runs?runs=%5B%22run2%22%2C%22run1%22%5D" in text
    assert 'href="http://127.0.0.1:5000/#/runs/run1"' in text
    assert "No versions yet" in text


def test_update_progress_is_visible_without_reload(signed_in, client, api, db_session):
    """The job page's JSON route is what its script polls: it moves as the worker writes."""
    job_id = client.post(
        "/api/v1/jobs", json={"type": "train", "params": {"data": "d"}}, headers=api["alice"]
    ).json["id"]
    seen = []
    claim_job(db_session, job_id, "w")
    for fraction in (0.25, 0.5, 1.0):
        update_progress(db_session, job_id, fraction, f"at {fraction}")
        seen.append(signed_in.get(f"/jobs/{job_id}.json").json["progress"])
    assert seen == [0.25, 0.5, 1.0]
