"""``bmseg jobs``, ``job``, ``cancel`` and ``worker``: watch and steer the job queue, or serve it."""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import typer
from rich.console import Console
from rich.table import Table

from bmcore.cli.console import progress_bar
from bmcore.db import Result, init_db, session_scope
from bmcore.jobs.lifecycle import cancel_job
from bmcore.jobs.search import get_job, job_to_dict, list_jobs

commands = typer.Typer()


def follow_job(job_id: str, poll_seconds: float = 1.0) -> dict:
    """Show a job's progress until it ends; exit code 1 unless it succeeded."""
    with progress_bar() as bar:
        task = bar.add_task(f"job {job_id[:8]}", total=100)
        while True:
            with session_scope() as session:
                job = job_to_dict(get_job(session, job_id))
            bar.update(
                task,
                completed=round(100 * (job["progress"] or 0)),
                description=f"job {job_id[:8]} {job['status']}: {(job['message'] or '')[:50]}",
            )
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(poll_seconds)
    typer.echo(f"job {job_id} {job['status']}" + (f": {job['error']}" if job.get("error") else ""))
    if job["status"] != "succeeded":
        raise typer.Exit(1)
    return job


@commands.command()
def jobs(
    status: str | None = typer.Option(None, help="Only jobs with this status."),
    job_type: str | None = typer.Option(None, "--type", help="Only jobs of this type."),
    limit: int = typer.Option(30, help="Newest N jobs."),
) -> None:
    """List jobs, newest first."""
    init_db()
    table = Table()
    for column in ("id", "type", "status", "progress", "message", "created"):
        table.add_column(column)
    with session_scope() as session:
        for job in map(job_to_dict, list_jobs(session, status=status, type=job_type, limit=limit)):
            table.add_row(
                job["id"],
                job["type"],
                job["status"],
                f"{100 * (job['progress'] or 0):.0f} %",
                (job["message"] or "")[:60],
                (job["created_at"] or "")[:19],
            )
    Console().print(table)


@commands.command()
def job(
    job_id: str = typer.Argument(..., help="Job id."),
    wait: bool = typer.Option(False, "--wait", help="Follow progress until the job ends."),
) -> None:
    """Show one job as JSON (status, progress, result, log tail)."""
    init_db()
    if wait:
        follow_job(job_id)
    with session_scope() as session:
        record = get_job(session, job_id)
        data = job_to_dict(record)
        result = session.query(Result).filter_by(job_id=job_id).one_or_none()
        data["result"] = {"metrics": result.metrics, "artifacts": result.artifacts} if result else None
    typer.echo(json.dumps(data, indent=1, default=str))


@commands.command()
def cancel(job_id: str = typer.Argument(..., help="Job id.")) -> None:
    """Cancel a job: at once when queued, between steps when running."""
    init_db()
    with session_scope() as session:
        record = cancel_job(session, job_id)
        typer.echo(
            f"job {job_id}: {record.status}" + (" (cancel requested)" if record.status == "running" else "")
        )


@commands.command()
def worker(
    queues: str = typer.Option("gpu,cpu", help="Comma-separated queues to consume."),
    name: str | None = typer.Option(None, help="Worker node name (default bmseg-<pid>@<host>)."),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
) -> None:
    """Start one worker process (solo pool: one process per GPU, safe with CUDA)."""
    init_db()
    node = name or f"bmseg-{os.getpid()}@{socket.gethostname()}"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "services.worker.app",
        "worker",
        "-P",
        "solo",
        "-c",
        "1",
        "-Q",
        queues,
        "-n",
        node,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    os.execv(sys.executable, argv)
