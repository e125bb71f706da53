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
        assert refused.status_code == 403, (method, path, refused.status_code)
        assert "another user" in refused.text, (method, path)
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
    from bmcore.config import get_settings

    study_dir = get_settings().uploads_dir / stored_study["study_uid"]
    assert study_dir.is_dir()
    sneaky = str(get_settings().uploads_dir / "elsewhere" / ".." / stored_study["study_uid"])
    for params in ({"study_dir": str(study_dir)}, {"study_dir": sneaky}):
        refused = app.test_client().post(
            "/api/v1/jobs", json={"type": "segment", "params": params}, headers=api["bob"]
        )
        assert refused.status_code == 403 and "another user" in refused.json["error"]
    refused = app.test_client().post(
        "/api/v1/jobs", json={"type": "evaluate", "params": {"data": str(study_dir)}}, headers=api["bob"]
    )
    assert refused.status_code == 403
    assert db_session.scalars(select(Job.id)).all() == []
    owner = app.test_client().post(
        "/api/v1/jobs",
        json={"type": "segment", "params": {"study_dir": str(study_dir)}},
        headers=api["alice"],
    )
    assert owner.status_code == 202, owner.json
