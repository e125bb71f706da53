"""The Celery application of the workers, configured from the one settings object.

Start one worker per GPU with ``bmseg worker`` (solo pool: no fork after CUDA is initialised,
docs/design.md §6); ``CUDA_VISIBLE_DEVICES`` picks the GPU, and the supervisor restarts the process.

Every worker also runs the reaper (:mod:`bmcore.jobs.reaper`) in a daemon thread from ``worker_ready`` on:
a job whose worker vanished mid-run (killed, out of memory) stops heartbeating and is queued again, or
failed with the reason once its attempts are spent. Jobs run in the job process
(:mod:`bmcore.jobs.supervisor`), stopped at ``worker_shutdown``.
"""

from __future__ import annotations

import threading

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from bmcore.config import get_settings
from bmcore.jobs.queue import celery_config
from bmcore.jobs.reaper import start_reaper
from bmcore.jobs.supervisor import shutdown as stop_job_process

app = Celery("bmseg", include=["services.worker.tasks"])
app.conf.update(celery_config(get_settings()))

_reaper_stops: list[threading.Event] = []


@worker_ready.connect
def start_reaping(**_kwargs) -> None:
    _reaper_stops.append(start_reaper())


@worker_shutdown.connect
def stop_reaping(**_kwargs) -> None:
    while _reaper_stops:
        _reaper_stops.pop().set()
    stop_job_process()
