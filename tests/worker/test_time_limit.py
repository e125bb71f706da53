"""The hard time limit per job, and the job process that holds it, through a real Celery worker.

One module-scoped stack: Redis (``BMSEG_TEST_WORKER_REDIS_URL``), SQLite, a local MLflow store, a tiny
synthetic cohort and a ``bmseg worker`` subprocess with ``BMSEG_MAX_JOB_SECONDS=8`` and a fast reaper
(heartbeat 0.5 s, stale after 4 s, a pass every 0.5 s). The tests run in order and share the worker:

* a short job finishes within the limit, in the job process (torch is mapped there, never in the worker);
* a training job that needs minutes fails once at 8 s with the reason, its message acknowledged, and
  nothing runs it again while the reaper has every chance to;
* a job process killed by a signal: the job is re-queued with that reason (attempts as for a lost worker)
  and the next attempt runs in a new job process (cancelling under isolation: tests/worker/test_worker_jobs);
* a killed worker takes its job process with it (no orphan running the job).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from bmcore import tracking
from bmcore.config import get_settings
from bmcore.data.synth import synth_cohort
from bmcore.db import JobEvent, dispose_engines, init_db, session_scope
from bmcore.jobs.lifecycle import submit_job
from bmcore.jobs.search import get_job, job_to_dict
from bmcore.jobs.supervisor import CHILD_COMMAND

REDIS_URL = os.environ.get("BMSEG_TEST_WORKER_REDIS_URL", "redis://127.0.0.1:6379/11")
REPO = Path(__file__).resolve().parents[2]
LIMIT_SECONDS = 8
STALE_AFTER_SECONDS = 4.0
REAP_INTERVAL_SECONDS = 0.5
WORKER_ENV = {
    "BMSEG_MAX_JOB_SECONDS": str(LIMIT_SECONDS),
    "BMSEG_HEARTBEAT_SECONDS": "0.5",
    "BMSEG_STALE_AFTER_SECONDS": str(STALE_AFTER_SECONDS),
    "BMSEG_REAP_INTERVAL_SECONDS": str(REAP_INTERVAL_SECONDS),
    "OMP_NUM_THREADS": "1",
}
FINISHED = ("succeeded", "failed", "cancelled")
FOREIGN_SETTINGS = ("BMSEG_DATABASE_URL", "BMSEG_MLFLOW_TRACKING_URI", "BMSEG_MLFLOW_ARTIFACT_ROOT")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")]


def job_row(job_id: str) -> dict:
    with session_scope() as session:
        return job_to_dict(get_job(session, job_id))


def wait_for(job_id: str, done, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while not done(job := job_row(job_id)):
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}: {job['message']}"
        time.sleep(0.2)
    return job


def events(job_id: str) -> list[tuple[str, str]]:
    with session_scope() as session:
        rows = session.execute(
            select(JobEvent.level, JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        )
        return [tuple(row) for row in rows]


def job_processes(worker_pid: int) -> list[int]:
    """The live job processes (children running :data:`CHILD_COMMAND`) of a worker."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == worker_pid and CHILD_COMMAND in command:
            found.append(int(stat.parent.name))
    return found


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def run_status(run_id: str) -> str:
    return tracking.mlflow_client().get_run(run_id).info.status


def messages_of(client: redis.Redis, job_id: str) -> list[str]:
    """Where a task message for ``job_id`` sits in Redis: a queue, or ``unacked`` (delivered, running)."""
    places = [("unacked", raw) for raw in client.hvals("unacked")]
    places += [(queue, raw) for queue in ("gpu", "cpu") for raw in client.lrange(queue, 0, -1)]
    return [place for place, raw in places if job_id in raw.decode(errors="replace")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("time-limit")
    env = {"BMSEG_DATA_DIR": str(root / "data"), "BMSEG_REDIS_URL": REDIS_URL}
    saved = {key: os.environ.get(key) for key in (*env, *FOREIGN_SETTINGS)}
    for key in FOREIGN_SETTINGS:
        os.environ.pop(key, None)
    os.environ.update(env)
    get_settings.cache_clear()
    dispose_engines()
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    init_db()
    cohort = root / "cohort"
    synth_cohort(cohort, 4, seed=7, layout="brats", shape=(64, 64, 32), spacing=(3.5, 3.5, 5.0), workers=1)
    # The MLflow store and the cohort's experiment exist before any job: a job's seconds are its own.
    tracking.get_or_create_experiment(tracking.experiment_name_for(cohort))
    log = root / "worker.log"
    with log.open("w") as handle:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bmcore.cli", "worker", "--queues", "gpu,cpu", "--loglevel", "INFO"],
            cwd=REPO,
            env=os.environ | WORKER_ENV,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    yield {"root": root, "cohort": cohort, "worker": worker, "log": log, "redis": client}
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    client.flushdb()
    client.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    dispose_engines()


def submit(job_type: str, params: dict) -> str:
    with session_scope() as session:
        return submit_job(session, job_type, params).id


def long_training(stack, tiny_train) -> dict:
    return {"data": str(stack["cohort"]), "arch": "cnn", "epochs": 1000, **tiny_train}


def test_a_short_job_finishes_within_the_limit_in_the_job_process(stack, tmp_path):
    from bmcore.models import build_model, save_checkpoint  # lazy: torch, for a tiny checkpoint only

    checkpoint = tmp_path / "tiny-cnn.pt"
    model = build_model("cnn", in_channels=4, base_channels=4, depth=1)
    save_checkpoint(checkpoint, model, "cnn", extra={"preprocess": {"size": 64}})
    study = next(p for p in sorted(stack["cohort"].iterdir()) if p.is_dir())
    job_id = submit("segment", {"study_dir": str(study), "model": str(checkpoint)})
    job = wait_for(job_id, lambda j: j["status"] in FINISHED, timeout=180)

    assert (job["status"], job["attempts"]) == ("succeeded", 1), (job, stack["log"].read_text()[-3000:])
    [child] = job_processes(stack["worker"].pid)
    assert maps_torch(child) and not maps_torch(stack["worker"].pid)


def test_a_job_past_its_time_limit_fails_once_and_is_never_run_again(stack, tiny_train):
    job_id = submit("train", long_training(stack, tiny_train))
    wait_for(job_id, lambda j: j["mlflow_run_id"] is not None or j["status"] in FINISHED, timeout=120)
    job = wait_for(job_id, lambda j: j["status"] in FINISHED, timeout=60)

    reason = f"exceeded the time limit of {LIMIT_SECONDS} s (BMSEG_MAX_JOB_SECONDS)"
    assert (job["status"], job["error"], job["attempts"]) == ("failed", reason, 1), job
    started, finished = (datetime.fromisoformat(job[key]) for key in ("started_at", "finished_at"))
    ran = (finished - started).total_seconds()
    assert LIMIT_SECONDS <= ran < LIMIT_SECONDS + 5, ran
    assert [e for e in events(job_id) if e[0] == "error"] == [("error", f"failed: {reason}")]
    # The worker then marks the MLflow run KILLED and returns normally: the message is acknowledged, so
    # Redis can never deliver it again.
    deadline = time.monotonic() + 30
    while run_status(job["mlflow_run_id"]) != "KILLED" or messages_of(stack["redis"], job_id):
        assert time.monotonic() < deadline, (
            run_status(job["mlflow_run_id"]),
            messages_of(stack["redis"], job_id),
        )
        time.sleep(0.2)
    # Long enough for the reaper to see a silent row several times over: nothing touches it.
    before, seen = events(job_id), job_row(job_id)
    watch_until = time.monotonic() + STALE_AFTER_SECONDS + 4 * REAP_INTERVAL_SECONDS
    while time.monotonic() < watch_until:
        now = job_row(job_id)
        assert (now["status"], now["attempts"], now["finished_at"]) == ("failed", 1, seen["finished_at"])
        time.sleep(0.25)
    assert events(job_id) == before and messages_of(stack["redis"], job_id) == []


def test_a_killed_job_process_requeues_its_job_as_a_lost_worker_would(stack, tiny_train):
    job_id = submit("train", long_training(stack, tiny_train))
    wait_for(job_id, lambda j: j["status"] == "running", timeout=120)
    [first] = job_processes(stack["worker"].pid)
    os.kill(first, signal.SIGKILL)

    job = wait_for(job_id, lambda j: j["attempts"] == 2 and j["status"] != "queued", timeout=120)
    assert job["status"] == "running", job
    requeued = (
        f"re-queued: job process on {job['worker_host']} died: killed by signal 9 (SIGKILL) (attempt 1 of 3)"
    )
    assert ("warning", requeued) in events(job_id), events(job_id)
    [second] = job_processes(stack["worker"].pid)
    assert second != first and gone(first)
    # The new attempt has the whole limit again, and fails once at it.
    job = wait_for(job_id, lambda j: j["status"] in FINISHED, timeout=60)
    reason = f"exceeded the time limit of {LIMIT_SECONDS} s (BMSEG_MAX_JOB_SECONDS)"
    assert (job["status"], job["error"], job["attempts"]) == ("failed", reason, 2), job
    assert [e for e in events(job_id) if e[0] == "error"] == [("error", f"failed: {reason}")]


def test_a_killed_worker_takes_its_job_process_with_it(stack, tiny_train):
    job_id = submit("train", long_training(stack, tiny_train))
    wait_for(job_id, lambda j: j["status"] == "running", timeout=120)
    [child] = job_processes(stack["worker"].pid)
    stack["worker"].kill()
    stack["worker"].wait(timeout=20)
    deadline = time.monotonic() + 5
    while not gone(child):
        assert time.monotonic() < deadline, f"job process {child} outlived its worker"
        time.sleep(0.1)
    assert job_row(job_id)["status"] == "running"  # left to the next worker's reaper
