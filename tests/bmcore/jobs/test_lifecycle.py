"""The job lifecycle (bmcore.jobs.lifecycle): submission through a real Redis, cancellation, and the
worker-side state changes."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
import redis
from sqlalchemy import func, select

from bmcore.config import get_settings
from bmcore.db import Job, JobEvent, Result, session_factory
from bmcore.jobs.errors import JobNotFound, JobParamsError, QueueUnavailable
from bmcore.jobs.lifecycle import (
    cancel_job,
    claim_job,
    finish_job,
    log_event,
    record_result,
    submit_job,
    update_progress,
)
from bmcore.jobs.queue import QUEUE_FOR_TASK, TASK_NAMES
from bmcore.jobs.search import get_job, is_cancel_requested, list_jobs

DATA = "/data/cohort"
MINIMAL_PARAMS = {"train": {"data": DATA}, "evaluate": {"data": DATA}, "segment": {"study_dir": DATA}}
SPLIT = {"studies": {"train": ["a"], "val": ["b"], "test": []}}


def _queued_messages(client: redis.Redis, queue: str) -> list[dict]:
    """The kombu messages waiting on a Redis list, decoded: task name, id and positional args."""
    messages = []
    for raw in client.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        assert envelope["properties"]["body_encoding"] == "base64"
        args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        messages.append({"task": envelope["headers"]["task"], "args": args, "kwargs": kwargs})
    return messages


def _job_count(session) -> int:
    return session.scalar(select(func.count()).select_from(Job))


# --- submission ---------------------------------------------------------------------------------------


def test_submit_writes_a_queued_row_and_a_message_on_the_gpu_queue(db_session, redis_client):
    job = submit_job(db_session, "train", {"data": DATA, "arch": "unet", "epochs": 2}, owner_id=None)

    assert redis_client.llen("gpu") == 1
    assert _queued_messages(redis_client, "gpu") == [{"task": "bmseg.train", "args": [job.id], "kwargs": {}}]
    with session_factory()() as other:
        stored = get_job(other, job.id)
        assert (stored.status, stored.type, stored.params) == (
            "queued",
            "train",
            {"data": DATA, "arch": "unet", "epochs": 2},
        )


INGEST_PARAMS = {"patient_id": "P1", "study_uid": "S1", "group": "g"}
INGEST_ARCHIVE = ".incoming-dicom-x/archive.zip"


@pytest.mark.parametrize("job_type", sorted(TASK_NAMES))
def test_every_task_type_goes_to_its_queue(db_session, redis_client, job_type):
    if job_type == "ingest":  # a DICOM import: its archive is a server-owned parameter
        job = submit_job(db_session, "ingest", INGEST_PARAMS, internal={"archive": INGEST_ARCHIVE})
    else:
        job = submit_job(db_session, job_type, MINIMAL_PARAMS[job_type])
    queue = QUEUE_FOR_TASK[TASK_NAMES[job_type]]
    assert queue == ("cpu" if job_type == "ingest" else "gpu")
    assert _queued_messages(redis_client, queue) == [
        {"task": TASK_NAMES[job_type], "args": [job.id], "kwargs": {}}
    ]


@pytest.mark.parametrize(
    ("job_type", "params", "message"),
    [
        ("paint", {}, "unknown job type 'paint'"),
        ("train", {"data": DATA, "epochs": 0}, "epochs must be a positive integer"),
        ("train", {"data": DATA, "epochs": -3}, "epochs must be a positive integer"),
        ("train", {"data": DATA, "epochs": "10"}, "epochs must be a positive integer"),
        ("train", {"data": DATA, "epochs": 2.5}, "epochs must be a positive integer"),
        ("train", {"data": DATA, "epochs": True}, "epochs must be a positive integer"),
        ("train", {"data": DATA, "arch": "resnet"}, "unknown arch 'resnet'"),
        ("train", {"data": DATA, "split": {**SPLIT, "note": object()}}, "JSON-serialisable"),
        ("segment", {"study_dir": DATA, "path": "/x"}, r"unknown segment parameter\(s\): path"),
        ("train", {"data": DATA, "epochs": 10**9}, r"epochs must be from 1 to 1000 \(BMSEG_MAX_EPOCHS\)"),
        ("train", {"data": DATA, "config_hash": "ab"}, "params.config_hash is set by the server"),
        ("sweep", {}, "has no worker task"),
        ("train", {"epochs": 2}, "needs params.data"),
        ("train", {"data": DATA, "lr": -1.0}, "learning rate must be positive"),
        ("train", {"data": DATA, "depth_of_field": 3}, "unknown training parameter"),
        ("segment", {}, "needs a study_id or params.study_dir"),
        ("evaluate", {"model": "m.pt"}, "needs a study_id, params.data"),
    ],
)
def test_refused_submissions_write_nothing(db_session, redis_client, job_type, params, message):
    with pytest.raises(JobParamsError, match=message) as caught:
        submit_job(db_session, job_type, params)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)
    assert _job_count(db_session) == 0
    assert redis_client.llen("gpu") == 0


def test_send_false_writes_only_the_row(db_session, redis_client):
    parent = submit_job(db_session, "sweep", {"arch": "unet"}, send=False)
    child = submit_job(db_session, "train", {"data": DATA, "epochs": 1}, parent_id=parent.id, send=False)
    assert redis_client.llen("gpu") == 0
    assert (parent.status, child.status, child.parent_id) == ("queued", "queued", parent.id)


def test_unreachable_redis_marks_the_job_failed(db_session, monkeypatch):
    monkeypatch.setenv("BMSEG_REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()

    with pytest.raises(QueueUnavailable, match="could not be queued") as caught:
        submit_job(db_session, "train", {"data": DATA, "epochs": 1})

    with session_factory()() as other:
        (stored,) = list_jobs(other)
        assert stored.id == caught.value.job.id
        assert stored.status == "failed"
        assert stored.error.startswith("could not queue: ")
        assert stored.finished_at is not None
        assert [event.level for event in stored.events] == ["error"]
    get_settings.cache_clear()


def test_submitting_side_stays_torch_free():
    code = (
        "import sys, bmcore.db, bmcore.jobs.lifecycle, bmcore.jobs.queue, bmcore.jobs.params, "
        "bmcore.jobs.search, bmcore.jobs.parents.parsing; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- cancellation -----------------------------------------------------------------------


def test_cancel_a_queued_job(db_session):
    job = submit_job(db_session, "train", {"data": DATA}, send=False)
    cancelled = cancel_job(db_session, job.id)
    assert (cancelled.status, cancelled.cancel_requested) == ("cancelled", True)
    assert cancelled.finished_at is not None
    assert claim_job(db_session, job.id, "gpu-0") is None  # the message arrives later: nothing runs
    assert get_job(db_session, job.id).attempts == 0


def test_cancel_a_running_job_is_cooperative(db_session, migrated_db_url):
    job = submit_job(db_session, "train", {"data": DATA}, send=False)
    claim_job(db_session, job.id, "gpu-0")
    assert is_cancel_requested(db_session, job.id) is False

    with session_factory(migrated_db_url)() as web:  # the web process asks
        assert cancel_job(web, job.id).status == "running"

    assert is_cancel_requested(db_session, job.id) is True  # read from the database
    assert finish_job(db_session, job.id, "cancelled").status == "cancelled"


def test_cancel_a_finished_job_changes_nothing(db_session):
    job = submit_job(db_session, "train", {"data": DATA}, send=False)
    finish_job(db_session, job.id, "succeeded")
    returned = cancel_job(db_session, job.id)
    assert (returned.status, returned.cancel_requested) == ("succeeded", False)


def test_cancel_unknown_job(db_session):
    with pytest.raises(JobNotFound):
        cancel_job(db_session, "0" * 32)


# --- worker side --------------------------------------------------------------------------------------


def test_claim_starts_the_job(db_session, migrated_db_url):
    job = submit_job(db_session, "train", {"data": DATA}, send=False)
    claimed = claim_job(db_session, job.id, "gpu-host-1")
    assert claimed is not None
    with session_factory(migrated_db_url)() as other:
        stored = get_job(other, job.id)
        assert (stored.status, stored.attempts, stored.worker_host) == ("running", 1, "gpu-host-1")
        assert stored.started_at is not None and stored.heartbeat_at is not None


def test_claim_gives_up_after_max_attempts(db_session):
    job = submit_job(db_session, "train", {"data": DATA}, send=False)
    for attempt in (1, 2, 3):  # e.g. the worker died each time and the message came back
        assert claim_job(db_session, job.id, "gpu-0").attempts == attempt
    assert claim_job(db_session, job.id, "gpu-0") is None
    stored = get_job(db_session, job.id)
    assert stored.status == "failed"
    assert stored.error == "gave up after 3 attempts"
    assert claim_job(db_session, job.id, "gpu-0") is None  # and it stays failed


@pytest.mark.parametrize("status", ["succeeded", "cancelled", "failed"])
def test_claim_on_a_finished_job_does_nothing(db_session, status):
    job = submit_job(db_session, "train", {"data": DATA}, send=False)
    claim_job(db_session, job.id, "gpu-0")
    finish_job(db_session, job.id, status)
    assert claim_job(db_session, job.id, "gpu-1") is None
    stored = get_job(db_session, job.id)
    assert (stored.status, stored.attempts, stored.worker_host) == (status, 1, "gpu-0")


def test_claim_honours_a_pending_cancel(db_session):
    job = submit_job(db_session, "train", {"data": DATA}, send=False)
    claim_job(db_session, job.id, "gpu-0")
    cancel_job(db_session, job.id)  # running: only flagged
    assert claim_job(db_session, job.id, "gpu-1") is None  # a redelivered message must not restart it
    assert get_job(db_session, job.id).status == "cancelled"


def test_update_progress_writes_events(db_session):
    job = submit_job(db_session, "train", {"data": DATA}, send=False)
    claim_job(db_session, job.id, "gpu-0")
    beat = get_job(db_session, job.id).heartbeat_at
    update_progress(db_session, job.id, 0.25, "epoch 1/4")
    update_progress(db_session, job.id, 1.2, "epoch 4/4")  # clamped
    stored = get_job(db_session, job.id)
    assert (stored.progress, stored.message) == (1.0, "epoch 4/4")
    assert stored.heartbeat_at >= beat
    messages = db_session.scalars(select(JobEvent.message).where(JobEvent.job_id == job.id)).all()
    assert messages[-2:] == ["epoch 1/4", "epoch 4/4"]
    with pytest.raises(ValueError, match="NaN"):
        update_progress(db_session, job.id, float("nan"), "?")


def test_log_event_and_finish(db_session):
    job = submit_job(db_session, "segment", {"study_dir": DATA}, send=False)
    log_event(db_session, job.id, "CUDA out of memory, retrying with smaller batches", level="warning")
    with pytest.raises(ValueError, match="unknown event level"):
        log_event(db_session, job.id, "x", level="loud")
    finished = finish_job(db_session, job.id, "failed", error="Traceback ...\nRuntimeError: boom")
    assert (finished.status, finished.message) == ("failed", "failed: Traceback ...")
    assert finished.error.endswith("boom")
    levels = db_session.scalars(select(JobEvent.level).where(JobEvent.job_id == job.id)).all()
    assert levels == ["warning", "error"]
    with pytest.raises(ValueError, match="finishes as one of"):
        finish_job(db_session, job.id, "running")


def test_record_result_twice_keeps_one_row(db_session, migrated_db_url):
    job = submit_job(db_session, "evaluate", {"data": DATA}, send=False)
    record_result(db_session, job.id, {"dice": 0.5}, {"report": "/r/1.json"})
    record_result(db_session, job.id, {"dice": 0.6}, {"report": "/r/2.json"})
    with session_factory(migrated_db_url)() as other:  # the second run of the task, another session
        record_result(other, job.id, {"dice": 0.7}, {"report": "/r/3.json"})
    rows = db_session.execute(select(Result.metrics, Result.artifacts).where(Result.job_id == job.id)).all()
    assert [tuple(row) for row in rows] == [({"dice": 0.7}, {"report": "/r/3.json"})]
    with pytest.raises(JobNotFound):
        record_result(db_session, "missing", {}, {})
