"""Celery configuration shared by the worker and the submitting side (web, CLI). Torch-free.

The submitting side never imports task code: it queues by name (:func:`send_job_task`,
:func:`send_parent_step`, both through ``celery_client().send_task``).
Redis settings follow docs/design.md §6: the visibility timeout sits above the longest job in all three
places, late acks with reject-on-worker-lost, one message prefetched at a time; the attempt counter
on the job row (``bmcore.jobs.lifecycle.claim_job``) stops a poison job from looping forever. The longest
job is ``settings.max_job_seconds``, a hard limit the worker enforces (:mod:`bmcore.jobs.supervisor`), so
a message is acknowledged before its visibility timeout ends.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery

from bmcore.config import Settings, get_settings

log = logging.getLogger(__name__)

GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"

# Job type -> Celery task name, for the job types a worker runs directly.
TASK_NAMES: dict[str, str] = {
    "train": "bmseg.train",
    "evaluate": "bmseg.evaluate",
    "segment": "bmseg.segment",
    "ingest": "bmseg.ingest",  # a DICOM archive uploaded through the web, imported as a study (cpu queue)
}

# Job type -> Celery task name, for parent jobs (bmcore.jobs.parents): their task fans out child train jobs
# and returns; it is re-sent to aggregate when children end. Kept out of TASK_NAMES: a parent is not
# heartbeaten while it waits for its children, so the reaper (which watches TASK_NAMES types) leaves it be.
PARENT_TASK_NAMES: dict[str, str] = {
    "sweep": "bmseg.sweep",
    "crossval": "bmseg.crossval",
}

# Task name -> queue. GPU work goes to one solo worker per GPU (`-P solo -c 1 -Q gpu`).
QUEUE_FOR_TASK: dict[str, str] = {
    "bmseg.train": GPU_QUEUE,
    "bmseg.evaluate": GPU_QUEUE,
    "bmseg.segment": GPU_QUEUE,
    "bmseg.ingest": CPU_QUEUE,
    "bmseg.report": CPU_QUEUE,
    # Parents only coordinate (a few database rows, MLflow calls); they never block a GPU worker.
    "bmseg.sweep": CPU_QUEUE,
    "bmseg.crossval": CPU_QUEUE,
}

# The steps of a parent's task (bmcore.jobs.parents.steps.advance).
PARENT_STEPS = ("start", "check", "recheck")

RESULT_EXPIRES_SECONDS = 7 * 24 * 3600
# Redis re-delivers an unacknowledged message after this long; kept above the hard time limit of a job.
VISIBILITY_MARGIN_SECONDS = 3600
# Fail fast at submit time when Redis is unreachable instead of hanging a web request.
SOCKET_CONNECT_TIMEOUT_SECONDS = 5


def visibility_timeout(settings: Settings) -> int:
    return settings.max_job_seconds + VISIBILITY_MARGIN_SECONDS


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings (lowercase names) for ``settings``; plain JSON-able values only."""
    timeout = visibility_timeout(settings)
    transport_options = {
        "visibility_timeout": timeout,
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT_SECONDS,
    }
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "broker_transport_options": dict(transport_options),
        "result_backend_transport_options": dict(transport_options),
        "visibility_timeout": timeout,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # With late acks the message comes back anyway after a lost broker connection; cancel the
        # running copy (Celery 6 default) and let the attempt counter decide whether it runs again.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": GPU_QUEUE,
        "task_routes": {name: {"queue": queue} for name, queue in QUEUE_FOR_TASK.items()},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_expires": RESULT_EXPIRES_SECONDS,
        "timezone": "UTC",
        "enable_utc": True,
    }


_clients: dict[tuple[str, int], Celery] = {}
_clients_lock = threading.Lock()


def celery_client() -> Celery:
    """A Celery app for sending tasks by name, built from the current settings and cached per broker.

    It registers no tasks and imports no task code; the worker builds its own app from
    ``celery_config``.
    """
    settings = get_settings()
    key = (settings.redis_url, settings.max_job_seconds)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = Celery("bmseg-client", set_as_current=False)
            client.conf.update(celery_config(settings))
            _clients[key] = client
        return client


def send_job_task(task_name: str, job_id: str) -> None:
    """Queue task ``task_name`` for job ``job_id`` on its queue; the broker's error propagates.

    ``ignore_result``: the job row is the result; no result-backend subscription per task.
    """
    celery_client().send_task(task_name, args=[job_id], queue=QUEUE_FOR_TASK[task_name], ignore_result=True)


def send_parent_step(job_id: str, job_type: str, step: str, countdown: float | None = None) -> bool:
    """Queue one step of a parent's task (``start``, ``check``, ``recheck``); False when the broker refused
    (logged: the recheck chain, or the next child to end, sends it again)."""
    if step not in PARENT_STEPS:
        raise ValueError(f"unknown parent step {step!r}; expected one of {', '.join(PARENT_STEPS)}")
    task_name = PARENT_TASK_NAMES[job_type]
    try:
        celery_client().send_task(
            task_name,
            args=[job_id],
            kwargs={"step": step},
            queue=QUEUE_FOR_TASK[task_name],
            countdown=countdown,
            ignore_result=True,
        )
    except Exception as exc:
        log.warning("could not queue the %s step of job %s: %s: %s", step, job_id, type(exc).__name__, exc)
        return False
    return True
