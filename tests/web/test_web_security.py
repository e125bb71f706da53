"""Security beyond the route enumeration of test_web_auth.py: secrets never stored in clear (read from the
database file's bytes), sign-in rate limiting, and one user's jobs and studies closed to another on every
route that takes their id (API and dashboard alike), admins excepted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from bmcore.db import Job, Study
from services.web.throttle import sign_in_key

from .conftest import PASSWORD, form_csrf, sign_in

OWNED_ARGUMENTS = ("job_id", "study_id")


def _database_bytes(app) -> bytes:
    """The SQLite database as stored: main file, write-ahead log and shared memory.

    Our connections are closed first (the last one checkpoints the log into the file): closing any
    descriptor of a file drops every POSIX lock this process holds on it, which SQLite relies on."""
    from bmcore.db import dispose_engines

    dispose_engines()
    path = Path(app.config["DATABASE_URL"].removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def test_passwords_and_tokens_never_reach_the_database_file(app, users, api):
    client = app.test_client()
    assert sign_in(client, users.alice.email).status_code == 303
    for name in ("alice", "bob", "root"):
        assert app.test_client().get("/api/v1/me", headers=api[name]).status_code == 200

    stored = _database_bytes(app)
    assert users.alice.email.encode() in stored  # the bytes are readable: the check below is meaningful
    assert PASSWORD.encode() not in stored
    for name in ("alice", "bob", "root"):
        token = getattr(users, name).token
        assert token.encode() not in stored
        assert token.removeprefix("bms_").encode() not in stored


# ----------------------------------------------------------------------------------------- rate limit


def _attempt(client, email: str, password: str):
    page = client.get("/sign-in")
    return client.post(
        "/sign-in", data={"email": email, "password": password, "csrf_token": form_csrf(page.text)}
    )


def _client(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_sign_in_is_locked_after_ten_failures_per_email_and_address(app, users, web_redis):
    attacker = _client(app, "203.0.113.7")
    for _ in range(10):
        assert _attempt(attacker, users.alice.email, "wrong-password").status_code == 401

    locked = _attempt(attacker, users.alice.email, PASSWORD)  # even the right password now
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts" in locked.text and "try again in 5 minutes" in locked.text
    assert 0 < int(locked.headers["Retry-After"]) <= 300
    assert attacker.get("/jobs").status_code == 302  # not signed in

    # Another address, or another e-mail from the same address, is not locked out.
    assert _attempt(_client(app, "198.51.100.2"), users.alice.email, PASSWORD).status_code == 303
    assert _attempt(_client(app, "203.0.113.7"), users.bob.email, PASSWORD).status_code == 303
    # The counter is keyed by a hash: the e-mail is not stored in Redis in clear.
    keys = [key.decode() for key in web_redis.keys("bmseg:sign-in-failures:*")]
    assert keys == [sign_in_key(users.alice.email, "203.0.113.7")]
    assert all(users.alice.email not in key for key in keys)


def test_unknown_emails_count_too_and_the_lock_ends_with_the_window(make_app, users):
    app = make_app(SIGN_IN_MAX_FAILURES=3, SIGN_IN_WINDOW_SECONDS=1)
    client = _client(app, "192.0.2.1")
    for _ in range(3):
        assert _attempt(client, "nobody@example.org", PASSWORD).status_code == 401
    assert _attempt(client, "NOBODY@example.org ", PASSWORD).status_code == 429  # same normalised e-mail
    for _ in range(3):
        assert _attempt(client, users.alice.email, "wrong-password").status_code == 401
    assert _attempt(client, users.alice.email, PASSWORD).status_code == 429
    import time

    time.sleep(2.1)
    assert _attempt(client, users.alice.email, PASSWORD).status_code == 303


def test_a_successful_sign_in_clears_the_failures(make_app, users):
    app = make_app(SIGN_IN_MAX_FAILURES=3)
    for _ in range(2):
        client = _client(app, "192.0.2.9")
        assert _attempt(client, users.alice.email, "wrong-password").status_code == 401
        assert _attempt(client, users.alice.email, "wrong-password").status_code == 401
        assert _attempt(client, users.alice.email, PASSWORD).status_code == 303


def test_sign_in_still_works_when_redis_is_down(make_app, users):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    client = app.test_client()
    assert _attempt(client, users.alice.email, "wrong-password").status_code == 401
    assert _attempt(client, users.alice.email, PASSWORD).status_code == 303


# ----------------------------------------------------------------------------------------- ownership


def _owned_routes(app):
    for rule in app.url_map.iter_rules():
        if rule.arguments & set(OWNED_ARGUMENTS) and not rule.arguments - {*OWNED_ARGUMENTS, "name"}:
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield rule, method


def _path(rule, job_id: str, study_id: int) -> str:
    values = {"job_id": job_id, "study_id": str(study_id), "name": "curves"}
    return re.sub(r"<(?:[a-z]+:)?(\w+)>", lambda m: values[m.group(1)], rule.rule)


@pytest.fixture
def alices_rows(app, db_session, users, stored_study):
    job = Job(type="train", params={"data": "/d"}, status="queued", owner_id=users.alice.id, message="queued")
    db_session.add(job)
    db_session.commit()
    return job.id, stored_study["id"]


def test_no_route_shows_or_changes_another_users_job_or_study(app, users, api, alices_rows, db_session):
    job_id, study_id = alices_rows
    bob = app.test_client()
    assert sign_in(bob, users.bob.email).status_code == 303
    root = app.test_client()
    assert sign_in(root, users.root.email).status_code == 303

    checked = 0
    for rule, method in _owned_routes(app):
        path = _path(rule, job_id, study_id)
        api_route = path.startswith("/api/")
        data = None if api_route or method == "GET" else {"csrf_token": bob.csrf}
        headers = api["bob"] if api_route else {}
        refused = bob.open(path, method=method, headers=headers, data=data)
        # 404 with the message an unknown id gets: nothing tells bob the row exists.
        assert refused.status_code == 404, (method, path, refused.status_code)
        assert f"unknown job id: {job_id}" in refused.text or f"unknown study id: {study_id}" in refused.text
        admin_headers = api["root"] if api_route else {}
        if method == "GET":
            allowed = root.open(path, method=method, headers=admin_headers)
            assert allowed.status_code != 403, (method, path)
        checked += 1
    assert checked >= 8

    db_session.expire_all()
    job = db_session.get(Job, job_id)
    assert job.status == "queued" and not job.cancel_requested
    assert db_session.scalars(select(Study.id)).all() == [study_id]
    # Lists never include them either.
    assert bob.get("/jobs.json").json.get("jobs", []) == []
    assert client_list(app, api["bob"]) == ([], [])
    assert client_list(app, api["root"]) == ([job_id], [study_id])


def client_list(app, headers) -> tuple[list, list]:
    client = app.test_client()
    jobs = [j["id"] for j in client.get("/api/v1/jobs", headers=headers).json["jobs"]]
    studies = [s["id"] for s in client.get("/api/v1/studies", headers=headers).json["studies"]]
    return jobs, studies


def test_a_job_cannot_reach_another_users_study_by_its_path(app, users, api, stored_study, db_session):
    """A non-admin's job never takes a path (issue #16 item 2): a study is named by ``study_id``, data by a
    registered data set; the answer is the same whatever the path (tests/web/test_web_datasets.py)."""
    from bmcore.config import get_settings
    from services.web.job_inputs import DATA_REFUSED, STUDY_DIR_REFUSED

    study_dir = get_settings().uploads_dir / stored_study["study_uid"]
    assert study_dir.is_dir()
    sneaky = str(get_settings().uploads_dir / "elsewhere" / ".." / stored_study["study_uid"])
    for user in ("bob", "alice"):  # alice owns it, and names it by study_id all the same
        for params in ({"study_dir": str(study_dir)}, {"study_dir": sneaky}):
            refused = app.test_client().post(
                "/api/v1/jobs", json={"type": "segment", "params": params}, headers=api[user]
            )
            assert refused.status_code == 400 and refused.json["error"] == STUDY_DIR_REFUSED
    refused = app.test_client().post(
        "/api/v1/jobs", json={"type": "evaluate", "params": {"data": str(study_dir)}}, headers=api["bob"]
    )
    assert refused.status_code == 400 and refused.json["error"] == DATA_REFUSED
    assert db_session.scalars(select(Job.id)).all() == []
    owner = app.test_client().post(
        "/api/v1/jobs",
        json={"type": "segment", "params": {}, "study_id": stored_study["id"]},
        headers=api["alice"],
    )
    assert owner.status_code == 202, owner.json


# ----------------------------------------------------------------------------------------- safe defaults


def test_pages_and_api_responses_are_never_stored_by_caches(
    app, signed_in, api, stored_study, fake_segment, users
):
    study_id = stored_study["id"]
    job_id = fake_segment(study_id, users.alice.id)
    pages = [
        "/studies",
        f"/studies/{study_id}",
        "/jobs",
        f"/jobs/{job_id}",
        f"/jobs/{job_id}.json",
        "/cohort",
    ]
    pages += [f"/jobs/{job_id}/artifacts/S001_lesions", f"/jobs/{job_id}/artifacts/S001_lesions?download=1"]
    for path in pages:
        response = signed_in.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store", path
    for path in ("/api/v1/me", "/api/v1/studies", f"/api/v1/studies/{study_id}", f"/api/v1/jobs/{job_id}"):
        response = app.test_client().get(path, headers=api["alice"])
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store", path
    assert app.test_client().get("/sign-in").headers["Cache-Control"] == "no-store"
    # Rendered slices (pixels only, no identifiers) stay cacheable by the browser alone, briefly.
    image = signed_in.get(f"/studies/{study_id}/slice.png?z=3")
    assert image.status_code == 200 and image.headers["Cache-Control"] == "private, max-age=60"
    assert "Strict-Transport-Security" not in image.headers  # not in development


def test_production_sends_hsts(web_settings, monkeypatch):
    import secrets

    from bmcore.config import get_settings
    from services.web import create_app

    monkeypatch.setenv("BMSEG_ENV", "production")
    monkeypatch.setenv("BMSEG_SECRET_KEY", secrets.token_urlsafe(48))
    get_settings.cache_clear()
    client = create_app({"TESTING": True}).test_client()
    for path in ("/sign-in", "/healthz", "/api/v1/me"):
        assert client.get(path).headers["Strict-Transport-Security"].startswith("max-age="), path


def test_odd_ids_and_nul_characters_answer_4xx(app, signed_in, api):
    client = app.test_client()
    huge = "1234567890123456789012345"
    for path in (f"/api/v1/studies/{huge}", f"/api/v1/patients/{huge}", f"/api/v1/studies/{2**31}"):
        response = client.get(path, headers=api["alice"])
        assert response.status_code == 404 and "error" in response.json, path
    assert client.patch(f"/api/v1/patients/{huge}", json={}, headers=api["alice"]).status_code == 404
    assert signed_in.get(f"/studies/{huge}").status_code == 404
    assert signed_in.get(f"/patients/{huge}").status_code == 404
    for path in ("/api/v1/jobs/abc%00def", "/api/v1/jobs?status=%00", "/api/v1/studies/%00"):
        response = client.get(path, headers=api["alice"])
        assert response.status_code == 400 and "NUL" in response.json["error"], path
    assert signed_in.get("/jobs/%00").status_code == 400
    assert signed_in.get("/static/%00style.css").status_code == 400


def _post_json(client, path: str, body: str, headers: dict, method: str = "POST"):
    return client.open(path, method=method, data=body, content_type="application/json", headers=headers)


def test_json_bodies_are_capped_and_malformed_ones_refused(app, api, stored_study, db_session):
    from bmcore.db import Patient

    client = app.test_client()
    limit = app.config["MAX_JSON_BYTES"]
    assert limit == 64 * 1024

    deep = _post_json(client, "/api/v1/jobs", "[" * 100_000, api["alice"])
    assert deep.status_code == 413 and "64 KB" in deep.json["error"]
    nested = _post_json(client, "/api/v1/jobs", "[" * 60_000, api["alice"])  # under the cap
    assert nested.status_code == 400 and "nested too deeply" in nested.json["error"]
    digits = _post_json(client, "/api/v1/jobs", "1" * 10_000, api["alice"])
    assert digits.status_code == 400 and "malformed JSON" in digits.json["error"]

    big = "x" * (10 * 1024 * 1024)
    job = client.post("/api/v1/jobs", json={"type": "train", "params": {"data": big}}, headers=api["alice"])
    assert job.status_code == 413 and big[:1000] not in job.text
    patient_id = db_session.scalars(select(Patient.id)).one()
    update = client.patch(
        f"/api/v1/patients/{patient_id}", json={"clinical": {"note": big}}, headers=api["alice"]
    )
    assert update.status_code == 413 and "larger than the server accepts" in update.json["error"]
    db_session.expire_all()
    assert db_session.scalars(select(Job.id)).all() == []
    assert not (db_session.get(Patient, patient_id).clinical or {})


TRACEBACK = 'Traceback (most recent call last):\n  File "/srv/bmseg/worker-only-path.py", line 7\nKeyError: x'


@pytest.fixture
def failed_job(db_session, users) -> str:
    """A job of alice's that failed with a traceback in a debug event, as the runner records it."""
    from bmcore.jobs.lifecycle import finish_job, log_event

    job = Job(
        type="train", params={"data": "/d"}, status="running", owner_id=users.alice.id, message="running"
    )
    db_session.add(job)
    db_session.commit()
    log_event(db_session, job.id, "epoch 1 of 3")
    log_event(db_session, job.id, TRACEBACK, level="debug")
    finish_job(db_session, job.id, "failed", "KeyError: x")
    db_session.commit()
    return job.id


def test_tracebacks_reach_admins_only(app, users, api, failed_job):
    alice, root = app.test_client(), app.test_client()
    assert sign_in(alice, users.alice.email).status_code == 303
    assert sign_in(root, users.root.email).status_code == 303

    for client, headers, admin in ((alice, api["alice"], False), (root, api["root"], True)):
        detail = client.get(f"/api/v1/jobs/{failed_job}", headers=headers).json
        levels = [event["level"] for event in detail["events"]]
        assert ("debug" in levels) is admin
        assert "epoch 1 of 3" in [event["message"] for event in detail["events"]]
        for path in (f"/jobs/{failed_job}", f"/jobs/{failed_job}.json"):
            page = client.get(path)
            assert page.status_code == 200
            assert ("worker-only-path" in page.text) is admin, (path, admin)
        assert detail["error"] == "KeyError: x"  # the one-line reason is everyone's


def test_text_the_database_refuses_is_a_400(web_settings, migrated_db_url):
    """PostgreSQL refuses NUL in text (SQLite stores it): a 400 with one line, not a 500."""
    if not migrated_db_url.startswith("postgresql"):
        pytest.skip("SQLite stores NUL characters in text")
    from services.web import create_app

    client = create_app({"TESTING": True}).test_client()
    page = client.get("/sign-in")
    response = client.post(
        "/sign-in", data={"email": "a\x00@example.org", "password": "x", "csrf_token": form_csrf(page.text)}
    )
    assert response.status_code == 400 and "not valid text" in response.text
