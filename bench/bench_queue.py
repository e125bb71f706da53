"""Benchmark: queue overhead, submit → running, through Redis and a real worker process.

Run: ``.venv/bin/python bench/bench_queue.py`` → ``bench/results/queue.json``.

A real ``bmseg worker`` subprocess (Celery, solo pool) consumes a dedicated Redis database
(``BMSEG_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/9``, flushed before and after; when it is
unreachable a private ``redis-server`` is started on a free port) with a fresh SQLite job store in a
temporary directory. Each job is a ``segment`` job whose ``study_dir`` does not exist, so the runner
fails at once: the job is as empty as the worker allows (bmseg has no no-op task, and the worker code
is not changed for a benchmark). Jobs go one at a time, the worker idle in between.

Reported, p50 / p95 / max over ``--jobs`` jobs (after ``--warmup`` jobs that let the worker import
its task code):

- ``submit_s``: the :func:`bmcore.jobs.lifecycle.submit_job` call the API and CLI make: validate, insert and
  commit the job row (SQLite), publish the task to Redis;
- ``submit_to_running_s``: from just before that call to the ``started_at`` the worker writes into the
  row when :func:`bmcore.jobs.lifecycle.claim_job` claims it: the submit call, Redis delivery, Celery's
  dispatch, and the worker re-reading the row (its commit not included);
- ``submit_to_finished_s`` for reference (includes the runner failing and recording the failure).

Not included: the HTTP layer of the web API (Flask routing, auth) in front of ``submit_job``.
Target (issue 8): queue overhead ≤ 10 ms p50.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from common import machine_info, percentiles, rounded, start_private_redis, write_result

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REDIS = os.environ.get("BMSEG_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
TARGET_P50_S = 0.010


def wait_finished(job_id: str, timeout: float = 60.0) -> dict:
    from bmcore.db import session_scope
    from bmcore.jobs.search import get_job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            job = get_job(session, job_id)
            if job.finished_at is not None:
                return {"started_at": job.started_at, "finished_at": job.finished_at, "status": job.status}
        time.sleep(0.02)  # a gentle poll: this machine's cores are the worker's too
    raise TimeoutError(f"job {job_id} did not finish in {timeout} s (is the worker running?)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    args = parser.parse_args()

    from bmcore.local.stack import redis_reachable

    result = {"machine": machine_info()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = None
        url = args.redis_url
        if not redis_reachable(url):
            url, server = start_private_redis(tmp)
        result["redis"] = "private redis-server" if server else url
        env = {"BMSEG_DATA_DIR": str(tmp / "data"), "BMSEG_REDIS_URL": url}
        os.environ.update(env)
        from bmcore.config import get_settings
        from bmcore.db import init_db, session_scope
        from bmcore.jobs.lifecycle import submit_job

        get_settings.cache_clear()
        redis.Redis.from_url(url).flushdb()
        init_db()
        log_path = tmp / "worker.log"
        with open(log_path, "w") as log:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bmcore.cli",
                    "worker",
                    "--queues",
                    "gpu,cpu",
                    "--loglevel",
                    "WARNING",
                ],
                cwd=REPO,
                env=os.environ | env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            params = {"study_dir": str(tmp / "no-such-studies")}
            submit, to_running, to_finished, statuses = [], [], [], set()
            for index in range(args.warmup + args.jobs):
                with session_scope() as session:
                    started = time.time()
                    job = submit_job(session, "segment", params)
                    submitted = time.time()
                    job_id = job.id
                row = wait_finished(job_id, timeout=120 if index == 0 else 30)
                statuses.add(row["status"])
                if index < args.warmup:
                    continue
                submit.append(submitted - started)
                to_running.append(row["started_at"].timestamp() - started)
                to_finished.append(row["finished_at"].timestamp() - started)
                time.sleep(0.05)  # the worker idle again, as a queue usually finds it
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
            redis.Redis.from_url(url).flushdb()
            if server is not None:
                server.terminate()
                server.wait(timeout=10)

    result.update(
        {
            "job": "segment with a missing study_dir (fails at once in the runner)",
            "final_statuses": sorted(statuses),
            "submit_s": percentiles(submit),
            "submit_to_running_s": percentiles(to_running),
            "submit_to_finished_s": percentiles(to_finished),
            "target_p50_s": TARGET_P50_S,
            "meets_target": percentiles(to_running)["p50"] <= TARGET_P50_S,
        }
    )
    path = write_result("queue", rounded(result, 5))
    print(
        f"{path}: submit p50 {1000 * result['submit_s']['p50']:.1f} ms, submit→running "
        f"p50 {1000 * result['submit_to_running_s']['p50']:.1f} ms "
        f"p95 {1000 * result['submit_to_running_s']['p95']:.1f} ms"
    )


if __name__ == "__main__":
    main()
