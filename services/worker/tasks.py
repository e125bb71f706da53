"""Thin tasks: a job id in, :func:`bmcore.job_runner.run_job`, the row out. Safe to run twice."""

from __future__ import annotations

from bmcore.job_runner import run_job
from services.worker.app import app


@app.task(name="bmseg.train")
def train(job_id: str) -> str | None:
    return run_job(job_id)


@app.task(name="bmseg.evaluate")
def evaluate(job_id: str) -> str | None:
    return run_job(job_id)


@app.task(name="bmseg.segment")
def segment(job_id: str) -> str | None:
    return run_job(job_id)
