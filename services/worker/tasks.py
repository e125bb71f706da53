"""Thin tasks: a job id in, :func:`bmcore.jobs.runner.run_job`, the row out. Safe to run twice.

Train, evaluate, segment and ingest jobs run ``isolated``: in the job process
(:mod:`bmcore.jobs.supervisor`), which holds the hard time limit ``BMSEG_MAX_JOB_SECONDS`` the solo pool
cannot; the task returns normally either way, so its message is acknowledged and never delivered again.

Parent jobs (sweep, cross-validation) take a ``step`` as well (``start``, ``check``, ``recheck``): each is
short and never waits for the children (:mod:`bmcore.jobs.parents`).
"""

from __future__ import annotations

from bmcore.jobs.runner import run_job, run_parent
from services.worker.app import app


@app.task(name="bmseg.train")
def train(job_id: str) -> str | None:
    return run_job(job_id, isolated=True)


@app.task(name="bmseg.evaluate")
def evaluate(job_id: str) -> str | None:
    return run_job(job_id, isolated=True)


@app.task(name="bmseg.segment")
def segment(job_id: str) -> str | None:
    return run_job(job_id, isolated=True)


@app.task(name="bmseg.ingest")
def ingest(job_id: str) -> str | None:
    """A DICOM archive uploaded through the web becomes a study (cpu queue; in the job process, whose
    time limit holds and whose crash in a decoder leaves the worker alive)."""
    return run_job(job_id, isolated=True)


@app.task(name="bmseg.sweep")
def sweep(job_id: str, step: str = "start") -> str | None:
    return run_parent(job_id, step)


@app.task(name="bmseg.crossval")
def crossval(job_id: str, step: str = "start") -> str | None:
    return run_parent(job_id, step)
