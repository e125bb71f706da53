"""Benchmark: 500 job submissions from 20 concurrent clients against a real web server; none may be lost.

Run: ``.venv/bin/python bench/bench_load.py`` → ``bench/results/load.json`` (under a minute).

The web app runs as in docker-compose.yml (``gunicorn --preload --workers 4 'services.web:create_app()'``)
on a free port, with a fresh SQLite database in a temporary directory and a dedicated Redis database
(``BMSEG_BENCH_LOAD_REDIS_URL``, default ``redis://127.0.0.1:6379/8``; refused when not empty, flushed
at the end; a private ``redis-server`` when none answers). No worker consumes the queue, so every
accepted job must be found twice afterwards: as a ``queued`` row and as a message on the ``gpu`` list.
A researcher's bearer token is made with :mod:`bmcore.accounts`, and an empty folder is registered as the
data set ``bench-cohort`` (a non-admin's job names a data set, never a path). ``--clients`` threads (one
keep-alive HTTP session each) send ``POST /api/v1/jobs`` (a train job on it) until ``--jobs`` were sent.
The per-user limit of queued and running jobs is raised to ``--jobs`` for the run
(``BMSEG_MAX_ACTIVE_JOBS_PER_USER``), so every submission is meant to be accepted, through the same
per-user lock that enforces the limit.

Reported: status codes, accepted (202), rows and queue messages found (and ids missing or extra),
latency p50/p95/max per request (client side), and throughput.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import redis
import requests
from common import free_port, machine_info, percentiles, rounded, start_private_redis, write_result

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REDIS = os.environ.get("BMSEG_BENCH_LOAD_REDIS_URL", "redis://127.0.0.1:6379/8")
DATASET = "bench-cohort"
BODY = {"type": "train", "params": {"data": DATASET, "arch": "unet", "epochs": 5}}
GUNICORN_WORKERS = 4


def redis_for_bench(directory: Path) -> tuple[str, subprocess.Popen | None]:
    from bmcore.local.stack import redis_reachable

    if redis_reachable(DEFAULT_REDIS):
        return DEFAULT_REDIS, None
    return start_private_redis(directory)


def start_web(root: Path, env: dict) -> tuple[str, subprocess.Popen]:
    port = free_port()
    log = (root / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "--workers",
            str(GUNICORN_WORKERS),
            "--timeout",
            "120",
        ]
        + ["--bind", f"127.0.0.1:{port}", "services.web:create_app()"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return base, server
        except requests.RequestException:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not start:\n{(root / 'gunicorn.log').read_text()[-3000:]}")
        time.sleep(0.2)


def hammer(base: str, token: str, jobs: int, clients: int) -> list[dict]:
    """``jobs`` submissions from ``clients`` threads; one record per request."""
    lock = threading.Lock()
    remaining = [jobs]
    records: list[dict] = []
    start = threading.Barrier(clients)

    def client() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        start.wait()
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            began = time.perf_counter()
            try:
                response = session.post(f"{base}/api/v1/jobs", json=BODY, timeout=60)
                status = response.status_code
                job_id = response.json().get("id") if status == 202 else None
                error = None if status == 202 else response.text[:200]
            except requests.RequestException as exc:
                status, job_id, error = None, None, f"{type(exc).__name__}: {exc}"
            record = {"status": status, "id": job_id, "seconds": time.perf_counter() - began, "error": error}
            with lock:
                records.append(record)
        session.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records


def queued_ids(client: redis.Redis, queue: str = "gpu") -> list[str]:
    ids = []
    for raw in client.lrange(queue, 0, -1):
        args, _kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
        ids.append(args[0])
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bmseg-bench-load-"))
    redis_url, private_redis = redis_for_bench(root)
    queue = redis.Redis.from_url(redis_url)
    if queue.dbsize():
        sys.exit(f"{redis_url} is not empty; point BMSEG_BENCH_LOAD_REDIS_URL at an unused database")
    env = {k: v for k, v in os.environ.items() if k not in ("BMSEG_DATABASE_URL", "BMSEG_MAX_UPLOAD_BYTES")}
    env |= {"BMSEG_DATA_DIR": str(root / "data"), "BMSEG_REDIS_URL": redis_url, "BMSEG_ENV": "test"}
    env |= {"BMSEG_MAX_ACTIVE_JOBS_PER_USER": str(args.jobs)}  # one user sends them all
    os.environ.update(env)
    os.environ.pop("BMSEG_DATABASE_URL", None)
    server = None
    try:
        from bmcore.accounts import create_token, create_user
        from bmcore.config import get_settings
        from bmcore.datasets import add_dataset
        from bmcore.db import Job, init_db, session_scope

        get_settings.cache_clear()
        init_db()
        with session_scope() as session:
            create_user(session, "load@example.org", "bench-password-123")
            token = create_token(session, "load@example.org", "bench")
            (root / DATASET).mkdir()
            add_dataset(session, DATASET, root / DATASET)
        base, server = start_web(root, env)

        started = time.perf_counter()
        records = hammer(base, token, args.jobs, args.clients)
        wall = time.perf_counter() - started

        accepted = {r["id"] for r in records if r["status"] == 202}
        from sqlalchemy import select

        with session_scope() as session:
            rows = dict(session.execute(select(Job.id, Job.status)).all())
        messages = queued_ids(queue)
        latencies = [r["seconds"] for r in records]
        result = {
            "what": f"{args.jobs} POST /api/v1/jobs from {args.clients} concurrent clients, no worker",
            "command": "python bench/bench_load.py",
            "server": f"gunicorn --preload --workers {GUNICORN_WORKERS} (sync), SQLite (WAL), Redis",
            "requests": len(records),
            "status_codes": {str(k): v for k, v in Counter(r["status"] for r in records).items()},
            "accepted": len(accepted),
            "rows": len(rows),
            "rows_queued": sum(status == "queued" for status in rows.values()),
            "messages": len(messages),
            "duplicate_messages": len(messages) - len(set(messages)),
            "lost": {
                "accepted_without_row": len(accepted - set(rows)),
                "accepted_without_message": len(accepted - set(messages)),
                "rows_not_accepted": len(set(rows) - accepted),
            },
            "latency_s": percentiles(latencies),
            "throughput_per_s": len(records) / wall,
            "wall_s": wall,
            "errors": [r["error"] for r in records if r["error"]][:5],
            "machine": machine_info(),
        }
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        queue.flushdb()
        queue.close()
        if private_redis is not None:
            private_redis.terminate()
            private_redis.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)
    path = write_result("load", rounded(result, 4))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"wrote {path}")
    if result["lost"] != {"accepted_without_row": 0, "accepted_without_message": 0, "rows_not_accepted": 0}:
        sys.exit("jobs were lost")


if __name__ == "__main__":
    main()
