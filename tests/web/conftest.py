"""Fixtures for the web tests: settings in tmp_path (real SQLite), a real Redis (db 14), users and tokens,
small NIfTI studies written with nibabel, and a finished segmentation job without a worker.

    web_settings   BMSEG_DATA_DIR in tmp_path, BMSEG_REDIS_URL = db 14; settings cache cleared
    web_redis      the Redis client of db 14, flushed before and after (skips when Redis is down)
    app, client    create_app({"TESTING": True}) and its test client
    users          alice, bob (plain users) and root (admin), each with a bearer token
    api            bearer headers per user: api["alice"]
    signed_in      a test client signed in as alice through the form; .csrf holds the form token
    study_files    a function writing a 32x32x16 study (four modalities + label) into a folder
    upload         a function posting files to /api/v1/studies
    fake_segment   a function recording a succeeded segment job (mask + lesion CSV) for a study
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from bmcore.metrics import LESION_COLUMNS

WEB_REDIS_URL = os.environ.get("BMSEG_TEST_WEB_REDIS_URL", "redis://127.0.0.1:6379/14")
PASSWORD = "correct-horse-battery"
SHAPE = (32, 32, 16)
SPACING = (1.5, 1.5, 3.0)
FIELD_SUFFIX = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}


@pytest.fixture
def web_redis() -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(WEB_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"Redis unreachable at {WEB_REDIS_URL} ({exc}); set BMSEG_TEST_WEB_REDIS_URL")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def web_settings(tmp_path, monkeypatch, web_redis):
    from bmcore.config import get_settings
    from bmcore.db import dispose_engines
    from services.web import slices

    for name in (
        "BMSEG_DATABASE_URL",
        "BMSEG_MLFLOW_TRACKING_URI",
        "BMSEG_MLFLOW_ARTIFACT_ROOT",
        "BMSEG_MAX_UPLOAD_BYTES",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BMSEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BMSEG_REDIS_URL", WEB_REDIS_URL)
    monkeypatch.setenv("BMSEG_ENV", "test")
    get_settings.cache_clear()
    slices.volume_cache.clear()
    slices.mask_cache.clear()
    yield get_settings()
    get_settings.cache_clear()
    slices.volume_cache.clear()
    slices.mask_cache.clear()
    dispose_engines()


@pytest.fixture
def make_app(web_settings) -> Callable:
    from services.web import create_app

    def make(**overrides):
        return create_app({"TESTING": True, **overrides})

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db_session(app):
    from bmcore.db import session_factory

    with session_factory(app.config["DATABASE_URL"])() as session:
        yield session


@pytest.fixture
def users(app, db_session) -> SimpleNamespace:
    from bmcore.accounts import create_token, create_user

    people = {}
    for name, admin in (("alice", False), ("bob", False), ("root", True)):
        user = create_user(db_session, f"{name}@example.org", PASSWORD, is_admin=admin)
        token = create_token(db_session, user.email, "tests")
        people[name] = SimpleNamespace(id=user.id, email=user.email, token=token)
    return SimpleNamespace(**people)


@pytest.fixture
def api(users) -> dict[str, dict[str, str]]:
    return {
        name: {"Authorization": f"Bearer {getattr(users, name).token}"} for name in ("alice", "bob", "root")
    }


def form_csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


def sign_in(client, email: str, password: str = PASSWORD):
    page = client.get("/sign-in")
    response = client.post(
        "/sign-in", data={"email": email, "password": password, "csrf_token": form_csrf(page.text)}
    )
    client.csrf = form_csrf(client.get("/studies").text) if response.status_code == 303 else None
    return response


@pytest.fixture
def signed_in(app, users):
    client = app.test_client()
    response = sign_in(client, users.alice.email)
    assert response.status_code == 303
    return client


# ----------------------------------------------------------------------------------------- NIfTI files


def affine_for(spacing=SPACING) -> np.ndarray:
    return np.diag([*spacing, 1.0])


def nifti_bytes(
    data: np.ndarray, affine: np.ndarray | None = None, descrip: str = "", gz: bool = True
) -> bytes:
    image = nib.Nifti1Image(np.asarray(data), affine if affine is not None else affine_for())
    image.header.set_xyzt_units("mm", "sec")
    if descrip:
        image.header["descrip"] = descrip.encode()
    raw = image.to_bytes()
    return gzip.compress(raw) if gz else raw


def synthetic_study(shape=SHAPE, seed: int = 0) -> dict[str, np.ndarray]:
    """Four modalities with a bright ellipsoid 'brain' and two lesions, plus a 0..3 label."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    brain = (x**2 + y**2 + z**2) < 0.8
    label = np.zeros(shape, dtype=np.uint8)
    for cx, cy, cz, r in ((0.3, 0.2, 0.0, 0.25), (-0.35, -0.3, 0.1, 0.18)):
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
        label[(d < r * 1.6) & brain] = 2
        label[(d < r) & brain] = 3
        label[(d < r * 0.5) & brain] = 1
    data = {}
    for index, field in enumerate(("t1", "t1ce", "t2", "flair")):
        volume = np.where(brain, 100.0 + 10 * index, 0.0) + np.where(label > 0, 40.0 * (index + 1), 0.0)
        volume += rng.normal(0, 3, shape) * brain
        data[field] = volume.astype(np.float32)
    data["seg"] = label
    return data


@pytest.fixture
def study_files(tmp_path) -> Callable[..., dict[str, Path]]:
    """``study_files(name, with_label=True, descrip="", seed=0)`` → field → .nii.gz path."""

    def write(
        name: str = "client", with_label: bool = True, descrip: str = "", seed: int = 0
    ) -> dict[str, Path]:
        folder = tmp_path / "client-files" / name
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for field, data in synthetic_study(seed=seed).items():
            if field == "seg" and not with_label:
                continue
            path = folder / f"{field}.nii.gz"
            path.write_bytes(nifti_bytes(data, descrip=descrip))
            paths[field] = path
        return paths

    return write


def multipart(files: dict[str, Path | bytes | tuple], **fields) -> dict:
    """Form data for the Flask test client: a path, raw bytes, or (bytes, filename[, content type])."""
    data: dict = dict(fields)
    for field, value in files.items():
        if isinstance(value, Path):
            data[field] = (io.BytesIO(value.read_bytes()), value.name, "application/gzip")
        elif isinstance(value, bytes):
            data[field] = (io.BytesIO(value), f"{field}.nii.gz", "application/gzip")
        else:
            content, filename, *content_type = value
            data[field] = (io.BytesIO(content), filename, *(content_type or ["application/octet-stream"]))
    return data


@pytest.fixture
def upload(client, api) -> Callable:
    """``upload(files, patient_id="P001", study_uid=None, user="alice")`` → the response."""

    def post(files, patient_id: str = "P001", study_uid: str | None = None, user: str = "alice", **fields):
        extra = {"patient_id": patient_id, **fields}
        if study_uid is not None:
            extra["study_uid"] = study_uid
        return client.post(
            "/api/v1/studies",
            data=multipart(files, **extra),
            headers=api[user],
            content_type="multipart/form-data",
        )

    return post


@pytest.fixture
def fake_segment(app, db_session) -> Callable:
    """``fake_segment(study_id, owner_id, model_warnings=())`` → job id of a succeeded segment job with mask
    and lesion table (and the model's warnings, as a segment job records them)."""
    from bmcore.db import Job, Result, Study, utcnow

    def record(study_id: int, owner_id: int, model_warnings: Sequence[str] = ()) -> str:
        study = db_session.get(Study, study_id)
        t1 = nib.load(study.files["t1"])
        label = synthetic_study(shape=t1.shape)["seg"]
        job = Job(
            type="segment",
            params={"model": "/models/test.pt"},
            status="queued",
            owner_id=owner_id,
            study_id=study_id,
            message="queued",
        )
        db_session.add(job)
        db_session.commit()
        out = Path(app.config["RESULTS_DIR"]) / "jobs" / job.id
        out.mkdir(parents=True, exist_ok=True)
        mask_path = out / f"{study.study_uid}_seg.nii.gz"
        nib.save(nib.Nifti1Image(label, t1.affine), mask_path)
        lesions_path = out / f"{study.study_uid}_lesions.csv"
        with lesions_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LESION_COLUMNS)
            writer.writeheader()
            writer.writerow(
                dict(zip(LESION_COLUMNS, (1, 400, 0.9, 12.0, 10.0, 5.0, 2.0, "1;3"), strict=True))
            )
            writer.writerow(dict(zip(LESION_COLUMNS, (2, 120, 0.27, 8.0, -9.0, -7.0, 3.0, "3"), strict=True)))
        job.status, job.progress, job.message = "succeeded", 1.0, "succeeded"
        job.started_at = job.finished_at = utcnow()
        db_session.add(
            Result(
                job_id=job.id,
                metrics={
                    "lesion_count": 2,
                    "model": "/models/test.pt",
                    "model_warnings": list(model_warnings),
                    "studies": {study.study_uid: {"lesions": [{"lesion_id": 1}, {"lesion_id": 2}]}},
                },
                artifacts={
                    f"{study.study_uid}_seg": str(mask_path),
                    f"{study.study_uid}_lesions": str(lesions_path),
                },
            )
        )
        db_session.commit()
        return job.id

    return record


@pytest.fixture
def stored_study(upload, study_files) -> dict:
    """A study uploaded by alice (with label); its API dict."""
    response = upload(study_files(), study_uid="S001")
    assert response.status_code == 201, response.json
    return response.json
