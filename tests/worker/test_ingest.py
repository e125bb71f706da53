"""A DICOM archive through the real queue: the web's API (create_app, in this process) answers 202 with an
ingest job, a real ``bmseg worker`` consuming only the cpu queue (its job process) imports the archive, and
the study appears in the uploader's group under the pseudonym, with no PHI in its files; a bad archive
fails its job with one line and leaves no row and no file.

One module-scoped stack: Redis (``BMSEG_TEST_WORKER_REDIS_URL``), SQLite in tmp, users alice (group
``neuro``) and bob (no group), the web app, and the worker subprocess.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from bmcore.config import get_settings
from bmcore.db import Group, Patient, Study, dispose_engines, init_db, session_scope
from bmcore.jobs.search import get_job, job_to_dict
from tests.web.conftest import synthetic_study
from tests.web.dicom_zips import mr_study_zip, phi_found, traversal_zip

REDIS_URL = os.environ.get("BMSEG_TEST_WORKER_REDIS_URL", "redis://127.0.0.1:6379/11")
REPO = Path(__file__).resolve().parents[2]
FINISHED = ("succeeded", "failed", "cancelled")
FOREIGN_SETTINGS = ("BMSEG_DATABASE_URL", "BMSEG_MLFLOW_TRACKING_URI", "BMSEG_MLFLOW_ARTIFACT_ROOT")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]


def wait_for(job_id: str, log: Path, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as session:
            job = job_to_dict(get_job(session, job_id))
        if job["status"] in FINISHED:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}: {log.read_text()[-3000:]}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from bmcore.accounts import create_token, create_user
    from services.web import create_app

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis unreachable at {REDIS_URL} ({exc}); set BMSEG_TEST_WORKER_REDIS_URL")
    root = tmp_path_factory.mktemp("ingest")
    env = {"BMSEG_DATA_DIR": str(root / "data"), "BMSEG_REDIS_URL": REDIS_URL, "BMSEG_ENV": "test"}
    saved = {k: os.environ.get(k) for k in (*env, *FOREIGN_SETTINGS)}
    for name in FOREIGN_SETTINGS:
        os.environ.pop(name, None)
    os.environ.update(env)
    get_settings.cache_clear()
    dispose_engines()
    client.flushdb()
    init_db()
    tokens = {}
    with session_scope() as session:
        alice = create_user(session, "alice@example.org", "correct-horse-battery")
        create_user(session, "bob@example.org", "correct-horse-battery")
        group = Group(name="neuro")
        group.members.append(alice)
        session.add(group)
        session.commit()
        for name in ("alice", "bob"):
            tokens[name] = {"Authorization": f"Bearer {create_token(session, f'{name}@example.org', 't')}"}
    app = create_app({"TESTING": True})
    log_path = root / "worker.log"
    log = log_path.open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "bmcore.cli", "worker", "--queues", "cpu", "--loglevel", "INFO"],
        cwd=REPO,
        env=os.environ | env | {"OMP_NUM_THREADS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield {"client": app.test_client(), "app": app, "api": tokens, "log": log_path, "worker": worker}
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(timeout=10)
    log.close()
    client.flushdb()
    client.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    dispose_engines()


def post(stack, archive: bytes, **fields):
    data = {
        "patient_id": "PSEUDO-W1",
        **fields,
        "dicom": (io.BytesIO(archive), "export.zip", "application/zip"),
    }
    return stack["client"].post(
        "/api/v1/studies", data=data, headers=stack["api"]["alice"], content_type="multipart/form-data"
    )


def uploads_content(stack) -> list[str]:
    uploads = Path(stack["app"].config["UPLOADS_DIR"])
    return sorted(p.relative_to(uploads).as_posix() for p in uploads.rglob("*"))


def test_an_archive_posted_to_the_api_is_imported_by_the_cpu_worker(stack):
    response = post(
        stack, mr_study_zip(synthetic_study(shape=(32, 32, 16))), study_uid="WRK001", group="neuro"
    )
    assert response.status_code == 202, response.json

    job = wait_for(response.json["id"], stack["log"])
    assert job["status"] == "succeeded", (job["error"], stack["log"].read_text()[-3000:])
    client, alice, bob = stack["client"], stack["api"]["alice"], stack["api"]["bob"]
    detail = client.get(response.json["status_url"], headers=alice).json
    study_id = detail["result"]["metrics"]["study_id"]
    listed = client.get("/api/v1/studies", headers=alice).json["studies"]
    assert [(s["id"], s["study_uid"], s["patient_id"], s["group"]) for s in listed] == [
        (study_id, "WRK001", "PSEUDO-W1", "neuro")
    ]
    with session_scope() as session:
        folder = Path(session.get(Study, study_id).directory)
    assert phi_found(folder) == []
    assert all(p.startswith("WRK001") for p in uploads_content(stack))  # the archive is gone

    assert client.get(f"/api/v1/studies/{study_id}", headers=bob).status_code == 404
    assert client.get(response.json["status_url"], headers=bob).status_code == 404
    assert stack["worker"].poll() is None


def test_a_bad_archive_fails_its_job_in_the_worker_and_leaves_nothing(stack):
    before = uploads_content(stack)
    with session_scope() as session:
        rows = (
            session.scalar(select(func.count()).select_from(Study)),
            session.scalar(select(func.count()).select_from(Patient)),
        )
    archive = traversal_zip(mr_study_zip(synthetic_study(shape=(32, 32, 8))))
    response = post(stack, archive, study_uid="WRK002", group="neuro", patient_id="PSEUDO-W2")
    assert response.status_code == 202, response.json

    job = wait_for(response.json["id"], stack["log"])
    assert job["status"] == "failed" and "path traversal" in job["error"] and "\n" not in job["error"]
    assert uploads_content(stack) == before
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Study)) == rows[0]
        assert session.scalar(select(func.count()).select_from(Patient)) == rows[1]
    assert stack["worker"].poll() is None
