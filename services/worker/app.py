"""The Celery application of the workers, configured from the one settings object.

Start one worker per GPU with ``bmseg worker`` (solo pool: no fork after CUDA is initialised,
DESIGN.md §6); ``CUDA_VISIBLE_DEVICES`` picks the GPU, and the supervisor restarts the process.
"""

from __future__ import annotations

from celery import Celery

from bmcore.config import get_settings
from bmcore.queueing import celery_config

app = Celery("bmseg", include=["services.worker.tasks"])
app.conf.update(celery_config(get_settings()))
