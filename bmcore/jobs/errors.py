"""The exceptions of the job service: refused parameters, a full per-user queue, unknown ids, a broker that
refused a task.

The bottom of the jobs package: every other module of it may raise these; this one imports none of them.
"""

from __future__ import annotations

from bmcore.db import Job


class JobParamsError(ValueError):
    """A job type or parameter was refused before anything was written."""


class JobQuotaExceeded(RuntimeError):
    """The owner already has ``limit`` queued or running jobs (``settings.max_active_jobs_per_user``);
    nothing was written. ``retry_after_s`` is a hint for an HTTP ``Retry-After`` header."""

    def __init__(self, message: str, limit: int, retry_after_s: int = 60) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = retry_after_s


class JobNotFound(LookupError):
    """No job has this id."""


class QueueUnavailable(RuntimeError):
    """The broker refused the task; the job row was kept and marked failed."""

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job
