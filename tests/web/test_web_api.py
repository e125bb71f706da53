"""The JSON API: studies, jobs (queued through a real Redis), results, models, OpenAPI, health."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bmcore.db import Job, JobEvent
from bmcore.jobs.lifecycle import claim_job, finish_job, record_result, update_progress

TRAIN = {"data": "brats", "arch": "unet", "epochs": 3, "lr": 0.001}  # a registered data set (below)
CHAMPION = "models:/bmseg-unet@champion"


@pytest.fixture(autouse=True)
def brats(request, tmp_path) -> Path | None:
    """The data set ``brats`` (registered by an admin) that a non-admin's jobs name instead of a path."""
    if "db_session" not in request.fixturenames:
        return None
    from bmcore.datasets import add_dataset

    folder = tmp_path / "brats"
    folder.mkdir()
    add_dataset(request.getfixturevalue("db_session"), "brats", folder)
    return folder


def _queued(redis_client, queue: str = "gpu") -> list[dict]:
    messages = []
    for raw in redis_client.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        messages.append({"task": envelope["headers"]["task"], "args": args})
    return messages


def _job_count(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Job))


# ----------------------------------------------------------------------------------------- studies


def test_list_and_get_studies_respect_ownership(client, api, stored_study):
    """Bob (no group of alice's) neither lists nor gets alice's study: 404 as for an unknown id."""
    mine = client.get("/api/v1/studies", headers=api["alice"]).json["studies"]
    assert [s["study_uid"] for s in mine] == ["S001"]
    assert client.get("/api/v1/studies", headers=api["bob"]).json["studies"] == []
    assert [s["id"] for s in client.get("/api/v1/studies", headers=api["root"]).json["studies"]] == [
        stored_study["id"]
    ]

    url = f"/api/v1/studies/{stored_study['id']}"
    assert client.get(url, headers=api["alice"]).json == stored_study
    hidden = client.get(url, headers=api["bob"])
    assert hidden.status_code == 404 and hidden.json == {"error": f"unknown study id: {stored_study['id']}"}
    assert client.get(url, headers=api["root"]).status_code == 200
    missing = client.get("/api/v1/studies/999", headers=api["alice"])
    assert missing.status_code == 404 and missing.json == {"error": "unknown study id: 999"}
    assert client.get("/api/v1/studies/1234567890123456789012345", headers=api["alice"]).status_code == 404


def test_study_list_limit_is_checked(client, api):
    response = client.get("/api/v1/studies?limit=0", headers=api["alice"])
    assert response.status_code == 400 and "limit" in response.json["error"]


# ----------------------------------------------------------------------------------------- submit


def test_train_job_is_queued_by_name(client, api, web_redis, db_session, users, brats):
    response = client.post("/api/v1/jobs", json={"type": "train", "params": TRAIN}, headers=api["alice"])

    assert response.status_code == 202, response.json
    body = response.json
    assert body["status"] == "queued" and body["type"] == "train" and body["owner_id"] == users.alice.id
    assert body["status_url"] == f"/api/v1/jobs/{body['id']}" == response.headers["Location"]
    assert _queued(web_redis) == [{"task": "bmseg.train", "args": [body["id"]]}]
    stored = TRAIN | {"data": str(brats), "dataset": "brats", "champion_eligible": False}
    assert db_session.get(Job, body["id"]).params == stored


def test_segment_job_for_a_study(client, api, web_redis, stored_study):
    body = {"type": "segment", "params": {"model": CHAMPION}, "study_id": stored_study["id"]}
    response = client.post("/api/v1/jobs", json=body, headers=api["alice"])

    assert response.status_code == 202, response.json
    assert response.json["study_id"] == stored_study["id"]
    assert _queued(web_redis) == [{"task": "bmseg.segment", "args": [response.json["id"]]}]


def test_segment_and_evaluate_jobs_by_path(client, api, web_redis, db_session):
    """An admin may still give paths (a non-admin's are refused: tests/web/test_web_datasets.py)."""
    segment = client.post(
        "/api/v1/jobs", json={"type": "segment", "params": {"study_dir": "/d/s1"}}, headers=api["root"]
    )
    evaluate = client.post(
        "/api/v1/jobs", json={"type": "evaluate", "params": {"data": "/d"}}, headers=api["root"]
    )
    assert segment.status_code == evaluate.status_code == 202
    assert sorted(m["task"] for m in _queued(web_redis)) == ["bmseg.evaluate", "bmseg.segment"]


BAD_JOBS = {
    "negative epochs": (
        {"type": "train", "params": {**TRAIN, "epochs": -2}},
        400,
        "epochs must be a positive",
    ),
    "fractional epochs": ({"type": "train", "params": {**TRAIN, "epochs": 2.5}}, 400, "epochs"),
    "text epochs": (
        {"type": "train", "params": {**TRAIN, "epochs": "ten"}},
        400,
        "epochs must be a positive integer",
    ),
    "unknown arch": ({"type": "train", "params": {**TRAIN, "arch": "resnet"}}, 400, "unknown arch"),
    "unknown parameter": (
        {"type": "train", "params": {**TRAIN, "optimizer": "sgd"}},
        400,
        "unknown training parameter",
    ),
    "train without data": ({"type": "train", "params": {"epochs": 1}}, 400, "params.data"),
    "unknown type": ({"type": "sweep", "params": {}}, 400, "type must be one of"),
    "no type": ({"params": {}}, 400, "type must be one of"),
    "params not an object": ({"type": "train", "params": [1, 2]}, 400, "params must be a JSON object"),
    "segment without a study": (
        {"type": "segment", "params": {"model": CHAMPION}},
        400,
        "study_id or params.study_dir",
    ),
    "evaluate without data": ({"type": "evaluate", "params": {}}, 400, "evaluate job needs"),
    "unknown study id": ({"type": "segment", "params": {}, "study_id": 4242}, 404, "unknown study id"),
    "study id not an integer": (
        {"type": "segment", "params": {}, "study_id": "7"},
        400,
        "study_id must be an integer",
    ),
    "model not a string": (
        {"type": "segment", "params": {"model": 3}},
        400,
        "params.model",
    ),
    "unknown top-level field": ({"type": "train", "params": TRAIN, "priority": 1}, 400, "unknown field"),
    "body not an object": ([1, 2, 3], 400, "JSON object"),
}


@pytest.mark.parametrize("case", list(BAD_JOBS), ids=list(BAD_JOBS))
def test_bad_job_requests_are_refused_before_anything_is_written(case, client, api, web_redis, db_session):
    body, status, fragment = BAD_JOBS[case]
    response = client.post("/api/v1/jobs", json=body, headers=api["alice"])

    assert response.status_code == status, response.json
    assert fragment in response.json["error"]
    assert _job_count(db_session) == 0
    assert _queued(web_redis) == []


def test_malformed_json_and_wrong_content_type(client, api, db_session):
    headers = api["alice"] | {"Content-Type": "application/json"}
    malformed = client.post("/api/v1/jobs", data='{"type": "train", ', headers=headers)
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json["error"]

    form = client.post("/api/v1/jobs", data={"type": "train"}, headers=api["alice"])
    assert form.status_code == 415 and "application/json" in form.json["error"]
    assert _job_count(db_session) == 0


def test_segment_job_on_another_users_study_is_forbidden(client, api, stored_study, db_session):
    body = {"type": "segment", "params": {}, "study_id": stored_study["id"]}
    response = client.post("/api/v1/jobs", json=body, headers=api["bob"])
    assert response.status_code == 404
    assert response.json == {"error": f"unknown study id: {stored_study['id']}"}
    assert _job_count(db_session) == 0


def test_queue_unavailable_is_503_and_the_job_is_recorded_failed(
    make_app, users, api, monkeypatch, db_session
):
    from bmcore.config import get_settings

    monkeypatch.setenv("BMSEG_REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    client = make_app().test_client()
    response = client.post("/api/v1/jobs", json={"type": "train", "params": TRAIN}, headers=api["alice"])

    assert response.status_code == 503
    assert "queue is unavailable" in response.json["error"]
    job = db_session.get(Job, response.json["id"])
    assert job.status == "failed" and job.error.startswith("could not queue")


# ----------------------------------------------------------------------------------------- read jobs


def _submit(client, headers, params=TRAIN) -> str:
    response = client.post("/api/v1/jobs", json={"type": "train", "params": params}, headers=headers)
    assert response.status_code == 202, response.json
    return response.json["id"]


def test_job_lists_are_filtered_and_scoped_to_the_owner(client, api, db_session):
    first = _submit(client, api["alice"])
    second = _submit(client, api["alice"])
    theirs = _submit(client, api["bob"])
    finish_job(db_session, second, "failed", "boom")

    mine = client.get("/api/v1/jobs", headers=api["alice"]).json["jobs"]
    assert {j["id"] for j in mine} == {first, second}
    assert [j["id"] for j in client.get("/api/v1/jobs?status=failed", headers=api["alice"]).json["jobs"]] == [
        second
    ]
    assert client.get("/api/v1/jobs?type=segment", headers=api["alice"]).json["jobs"] == []
    assert {j["id"] for j in client.get("/api/v1/jobs", headers=api["root"]).json["jobs"]} == {
        first,
        second,
        theirs,
    }
    assert client.get("/api/v1/jobs?status=lost", headers=api["alice"]).status_code == 400
    assert client.get("/api/v1/jobs?type=nap", headers=api["alice"]).status_code == 400


def test_job_detail_has_progress_result_and_the_last_50_events(client, api, db_session, app):
    job_id = _submit(client, api["alice"])
    claim_job(db_session, job_id, "gpu-host-1")
    for step in range(60):
        update_progress(db_session, job_id, step / 100, f"epoch {step}")
    curves = Path(app.config["RESULTS_DIR"]) / "jobs" / job_id / "curves.png"
    curves.parent.mkdir(parents=True)
    curves.write_bytes(b"\x89PNG fake")
    record_result(
        db_session,
        job_id,
        {"val_dice": 0.61, "nested": {"a": 1}, "bad": float("nan")},
        {"curves": str(curves)},
    )

    response = client.get(f"/api/v1/jobs/{job_id}", headers=api["alice"])

    assert response.status_code == 200
    body = response.json
    assert (
        body["status"] == "running"
        and body["progress"] == pytest.approx(0.59)
        and body["message"] == "epoch 59"
    )
    assert len(body["events"]) == 50 and body["events"][-1]["message"] == "epoch 59"
    assert body["result"]["metrics"] == {"val_dice": 0.61, "nested": {"a": 1}, "bad": None}
    assert body["result"]["artifacts"] == ["curves"]
    assert ["nested.a", 1] in body["result"]["metrics_table"]
    assert "NaN" not in response.text


def test_other_users_job_is_forbidden_and_unknown_is_404(client, api):
    job_id = _submit(client, api["alice"])
    hidden = client.get(f"/api/v1/jobs/{job_id}", headers=api["bob"])
    assert hidden.status_code == 404 and hidden.json == {"error": f"unknown job id: {job_id}"}
    assert client.get(f"/api/v1/jobs/{job_id}", headers=api["root"]).status_code == 200
    unknown = client.get("/api/v1/jobs/0123456789abcdef", headers=api["alice"])
    assert unknown.status_code == 404 and unknown.json == {"error": "unknown job id: 0123456789abcdef"}
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=api["bob"]).status_code == 404
    assert client.post("/api/v1/jobs/nope/cancel", headers=api["alice"]).status_code == 404


def test_cancel_a_queued_job(client, api, db_session):
    job_id = _submit(client, api["alice"])
    response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=api["alice"])

    assert response.status_code == 200
    assert response.json["status"] == "cancelled" and response.json["cancel_requested"] is True
    events = db_session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    assert "cancelled before it started" in events


# ----------------------------------------------------------------------------------------- artifacts


def test_artifacts_download_only_listed_files_inside_the_results_dir(client, api, app, db_session, tmp_path):
    job_id = _submit(client, api["alice"])
    out = Path(app.config["RESULTS_DIR"]) / "jobs" / job_id
    out.mkdir(parents=True)
    (out / "metrics.json").write_text('{"dice": 0.5}')
    outside = tmp_path / "secret.txt"
    outside.write_text("not for you")
    record_result(
        db_session,
        job_id,
        {},
        {
            "metrics": str(out / "metrics.json"),
            "escape": str(outside),
            "dotdot": str(out / ".." / ".." / ".." / "secret.txt"),
            "gone": str(out / "missing.csv"),
        },
    )
    base = f"/api/v1/jobs/{job_id}/artifacts"

    ok = client.get(f"{base}/metrics", headers=api["alice"])
    assert ok.status_code == 200 and ok.data == b'{"dice": 0.5}'
    assert "attachment" in ok.headers["Content-Disposition"]
    for name in ("escape", "dotdot", "gone", "unlisted", "..%2F..%2Fsecret.txt"):
        response = client.get(f"{base}/{name}", headers=api["alice"])
        assert response.status_code == 404, name
        assert "error" in response.json
    assert client.get(f"{base}/metrics", headers=api["bob"]).status_code == 404


def test_segmentation_artifacts_of_a_study(client, api, stored_study, fake_segment, users):
    job_id = fake_segment(stored_study["id"], users.alice.id)
    detail = client.get(f"/api/v1/jobs/{job_id}", headers=api["alice"]).json
    assert detail["result"]["artifacts"] == ["S001_lesions", "S001_seg"]
    mask = client.get(f"/api/v1/jobs/{job_id}/artifacts/S001_seg", headers=api["alice"])
    assert mask.status_code == 200 and mask.data[:2] == b"\x1f\x8b"


# ----------------------------------------------------------------------------------------- models


def test_models_lists_the_registry(client, api):
    response = client.get("/api/v1/models", headers=api["alice"])
    assert response.status_code == 200
    assert [m["name"] for m in response.json["models"]] == ["bmseg-unet", "bmseg-cnn", "bmseg-fcn"]


def test_models_unavailable_is_503(client, api, monkeypatch):
    def broken():
        raise ConnectionError("mlflow server down")

    monkeypatch.setattr("services.web.reports.registry_models", broken)
    response = client.get("/api/v1/models", headers=api["alice"])
    assert response.status_code == 503
    assert response.json["error"].startswith("registry unavailable")


# ----------------------------------------------------------------------------------------- documents


def _flask_rule_to_openapi(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_openapi_document_matches_the_url_map(app, client, api):
    response = client.get("/api/v1/openapi.json", headers=api["alice"])
    assert response.status_code == 200
    document = response.json
    assert document["openapi"].startswith("3.1")

    routes: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1"):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.add((_flask_rule_to_openapi(rule.rule), method.lower()))
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented
    for path, item in document["paths"].items():
        for operation in item.values():
            assert "401" in operation["responses"], path
            for name in re.findall(r"{(\w+)}", path):
                assert any(p["name"] == name and p["in"] == "path" for p in operation["parameters"]), (
                    path,
                    name,
                )


def test_healthz_is_open_and_reports_database_and_redis(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "redis": "ok"}


def test_healthz_reports_an_unreachable_redis(make_app):
    client = make_app(REDIS_URL="redis://127.0.0.1:1/0").test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["status"] == "unavailable" and response.json["redis"].startswith("error")


def test_api_errors_are_json(client, api):
    missing = client.get("/api/v1/nothing", headers=api["alice"])
    assert missing.status_code == 404 and set(missing.json) == {"error"}
    response = client.delete("/api/v1/jobs", headers=api["alice"])
    assert response.status_code == 405 and "error" in response.json
