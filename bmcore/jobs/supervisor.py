"""The job process: a worker's jobs run in a supervised child process, so a hard time limit holds.

The solo pool (docs/design.md §6) runs a task in the worker's main thread and cannot enforce Celery's
``time_limit``, and a training job does not stop on its own. So the worker hands each train, segment or
evaluate job to its *job process* and waits at most ``settings.max_job_seconds`` (per attempt, from the
hand-over, which ``claim_job`` follows within milliseconds). Past it the job process is terminated
(SIGTERM to its process group, SIGKILL after :data:`TERM_GRACE_SECONDS`) and the attempt is failed once
with "exceeded the time limit of N s (BMSEG_MAX_JOB_SECONDS)" and an error event. The task then returns
normally, so its message is acknowledged long before Redis' visibility timeout (an hour above the limit)
could deliver it again, ``claim_job`` leaves the finished row alone, and the reaper only looks at
``running`` rows.

A job process that dies without reporting (out of memory, a segfault, a kill) is settled at once like a
lost worker (:func:`bmcore.jobs.reaper.settle_crashed_attempt`): re-queued while attempts remain, failed
with the exit code or signal as the reason once they are spent, cancelled when a cancel was pending.
Everything else (claim, heartbeats, cooperative cancellation, progress, result) happens in the job
process exactly as it did in the worker, through the job row.

**Spawned, not forked.** The worker has threads (the reaper, Celery's) and open database and Redis
connections; a forked child inherits locks held by other threads and shares those sockets, and once
CUDA was initialised a forked child cannot use it. The job process is a fresh interpreter
(``sys.executable -c``, :data:`CHILD_COMMAND`, talking over a ``multiprocessing`` pipe; unlike
multiprocessing's "spawn" it never re-imports the worker's ``__main__``) that imports what it needs
(torch included: the worker itself never imports it). That costs a few seconds, so the job process is
kept between jobs (torch and the CUDA context stay warm; :data:`START_TIMEOUT_SECONDS` bounds its
start-up, which the job's time limit does not count) and replaced only after a kill or a crash, or when
the ``BMSEG_*`` environment changed (tests switching databases).

**It dies with the worker.** The job process asks Linux for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``; elsewhere a thread polls ``os.getppid()``), so a killed worker leaves no orphan
running the job while the reaper re-queues it. Linux sends that signal when the *thread* that started
the process ends: start it from a thread that outlives it (the solo pool's main thread does).

Messages on the pipe: job process → worker ``("ready", pid)``; worker → job process ``(job_id, host)``;
then ``("claimed", attempt)`` and ``("done", status)`` (or ``("error", line)``: the job could not even be
claimed, raised in the worker as before).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from bmcore import tracking
from bmcore.config import get_settings
from bmcore.db import Job, session_scope
from bmcore.jobs.reaper import describe_exit, fail_attempt, settle_crashed_attempt

log = logging.getLogger(__name__)

# SIGTERM to the job process, then SIGKILL if it is still there this much later.
TERM_GRACE_SECONDS = 10.0
# A job process not ready this long after its start (imports hung) is killed and the job failed.
START_TIMEOUT_SECONDS = 600.0
# How often the worker checks that its job process is still there while it waits for a message.
POLL_SECONDS = 0.5
PR_SET_PDEATHSIG = 1
# The job process: a fresh interpreter that imports only bmcore's job code (never the worker's __main__).
CHILD_COMMAND = "from bmcore.jobs.supervisor import main; main()"

JobFunction = Callable[[str, str, Callable[[int], None]], "str | None"]


class JobProcessError(RuntimeError):
    """The job process could not start, or could not claim the job (a line from the job process)."""


def time_limit_reason(seconds: float) -> str:
    return f"exceeded the time limit of {seconds:g} s (BMSEG_MAX_JOB_SECONDS)"


# ------------------------------------------------------------------------------------------ job process side


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="bmseg-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the worker died before the signal was asked for
        os._exit(1)


def serve(connection: Connection, parent_pid: int, job_function: str, warm_up: Sequence[str]) -> None:
    """The job process's main loop: warm up, say ready, then run one job id after another until the
    worker closes the pipe. ``job_function`` (``module:name``) records a job's own failure itself."""
    _die_with_parent(parent_pid)
    os.setpgrp()  # its own process group: a kill reaches its DataLoader workers too
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal: the worker decides
    logging.basicConfig(level=logging.WARNING, format="[job process %(process)d] %(levelname)s %(message)s")
    module, name = job_function.split(":")
    run = getattr(importlib.import_module(module), name)
    for module in warm_up:
        importlib.import_module(module)
    connection.send(("ready", os.getpid()))
    while True:
        try:
            job_id, worker_host = connection.recv()
        except EOFError:
            return
        try:
            status = run(job_id, worker_host, lambda attempt: connection.send(("claimed", attempt)))
        except Exception as exc:
            connection.send(("error", f"{type(exc).__name__}: {exc}".strip().splitlines()[0]))
        else:
            connection.send(("done", status))


def main() -> None:
    """Entry of the job process (:data:`CHILD_COMMAND`); argv: pipe fd, worker pid, job function, warm-up."""
    fd, parent_pid, job_function, *warm_up = sys.argv[1:]
    serve(Connection(int(fd)), int(parent_pid), job_function, warm_up)


# ------------------------------------------------------------------------------------------ worker side


def _settings_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith("BMSEG_")}


class JobProcess:
    """One job process and its pipe; :meth:`run` hands it a job and waits within a limit."""

    def __init__(self, job_function: JobFunction, warm_up: Sequence[str] = ()) -> None:
        self.job_function = f"{job_function.__module__}:{job_function.__qualname__}"
        self.warm_up = tuple(warm_up)
        self.process: subprocess.Popen | None = None
        self.connection: Connection | None = None
        self.environment: dict[str, str] = {}

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        ours, theirs = multiprocessing.Pipe()
        fd = theirs.fileno()
        args = [str(fd), str(os.getpid()), self.job_function, *self.warm_up]
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD_COMMAND, *args], stdin=subprocess.DEVNULL, pass_fds=(fd,)
        )
        theirs.close()
        self.connection, self.environment = ours, _settings_environment()
        message = self._receive(time.monotonic() + START_TIMEOUT_SECONDS)
        if message is None or message[0] != "ready":
            alive = self.alive
            self.stop()
            problem = "not ready in time" if alive else describe_exit(self.process.returncode)
            raise JobProcessError(f"the job process did not start ({problem})")

    def _receive(self, deadline: float) -> tuple | None:
        """The next message; None once the job process ended (or closed its pipe) or the deadline passed.

        Liveness is checked every :data:`POLL_SECONDS`: the pipe alone may stay open in its DataLoader
        workers after it died."""
        while True:
            remaining = deadline - time.monotonic()
            ended = self.process.poll() is not None  # before the poll: all it sent is in the pipe by now
            if self.connection.poll(0 if ended else max(0.0, min(remaining, POLL_SECONDS))):
                try:
                    return self.connection.recv()
                except (EOFError, OSError):
                    return None
            if ended or remaining <= 0:
                return None

    def run(self, job_id: str, worker_host: str, limit_seconds: float) -> tuple[str, int | None, Any]:
        """Hand over one job; ``("done", attempt, status)``, ``("timeout", attempt, None)`` (the job
        process is stopped) or ``("died", attempt, exitcode)``. ``attempt``: None if it never claimed."""
        if self.alive and self.environment != _settings_environment():
            self.stop()
        if not self.alive:
            self.start()
        deadline, attempt = time.monotonic() + limit_seconds, None
        with contextlib.suppress(OSError):  # it died just now: found out below, as a job process that died
            self.connection.send((job_id, worker_host))
        while (message := self._receive(deadline)) is not None:
            kind, value = message
            if kind == "claimed":
                attempt = value
            elif kind == "done":
                return "done", attempt, value
            else:
                raise JobProcessError(value)
        if time.monotonic() >= deadline and self.alive:
            self.stop()
            return "timeout", attempt, None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(TERM_GRACE_SECONDS)
        self.stop()
        return "died", attempt, self.process.returncode

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):  # not its own group yet: the process alone
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def stop(self) -> None:
        """Close the pipe and end the process: SIGTERM, then SIGKILL after the grace period."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if not self.alive:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(TERM_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait()


_job_process: JobProcess | None = None
_lock = threading.Lock()


def _the_job_process(job_function: JobFunction, warm_up: Sequence[str]) -> JobProcess:
    global _job_process
    if _job_process is None:
        _job_process = JobProcess(job_function, warm_up)
        atexit.register(shutdown)
    return _job_process


def shutdown() -> None:
    """Stop the job process (the worker's shutdown; at exit). A running job is left to the reaper."""
    if _job_process is not None:
        _job_process.stop()


def run_in_job_process(
    job_id: str, worker_host: str, job_function: JobFunction, warm_up: Sequence[str] = ()
) -> str | None:
    """Run one job in the job process within ``settings.max_job_seconds``; its final status ("queued"
    when a crashed attempt was queued again; None when there was nothing to run)."""
    limit = get_settings().max_job_seconds
    with _lock:
        process = _the_job_process(job_function, warm_up)
        try:
            outcome, attempt, detail = process.run(job_id, worker_host, limit)
        except JobProcessError as exc:
            if process.alive:  # it could not claim the job: raised as before, the job row untouched
                raise
            return fail_attempt(job_id, None, str(exc))
        except BaseException:  # the worker is going down (hard shutdown): the reaper takes the job over
            process.stop()
            raise
    if outcome == "done":
        return detail
    if outcome == "timeout":
        log.warning("job %s %s", job_id, time_limit_reason(limit))
        status = fail_attempt(job_id, attempt, time_limit_reason(limit))
        if status == "failed":
            _end_mlflow_run(job_id)
        return status
    return settle_crashed_attempt(job_id, attempt, worker_host, detail)


def _end_mlflow_run(job_id: str) -> None:
    """Mark the MLflow run of a job stopped at its time limit KILLED (it would read RUNNING forever)."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        run_id = job.mlflow_run_id if job is not None else None
    if run_id is None:
        return
    try:
        tracking.end_run(run_id, "KILLED")
    except Exception as exc:  # the job's outcome stands; the run stays as it was
        log.warning("could not end MLflow run %s of job %s: %s: %s", run_id, job_id, type(exc).__name__, exc)
