"""The exceptions of the job service: refused parameters, unknown ids, a broker that refused a task.

The bottom of the jobs package: every other module of it may raise these; this one imports none of them.
"""

from __future__ import annotations

from bmcore.db import Job


class JobParamsError(ValueError):
    """A job type or parameter was refused before anything was written."""


class JobNotFound(LookupError):
    """No job has this id."""


class QueueUnavailable(RuntimeError):
    """The broker refused the task; the job row was kept and marked failed."""

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job
