"""Benchmark: workers killed with SIGKILL mid-job, again and again; every job must still finish once.

Run: ``.venv/bin/python bench/bench_kill.py`` → ``bench/results/kill.json`` (about 10 minutes on 2 cores).

A private ``redis-server`` (append-only file, on a free port: the shared Redis is never touched), a
fresh SQLite job store and MLflow store in a temporary directory, and a tiny synthetic cohort (6 studies,
64×64×32). Two tiny training jobs (U-Net, 6 epochs) first run undisturbed; the second (warm) gives the
duration T.
Then ``--kills`` times: submit a training job, let a real ``bmseg worker`` (solo pool) run it, kill the
worker with SIGKILL at a random point uniform in [0.05 T, 0.95 T] after the job starts (preparing data,
mid-epoch, validating or registering), and start a new worker. The new worker's reaper
(:mod:`bmcore.jobs.reaper`, heartbeat 0.5 s, stale after 6 s, a pass every second) re-queues the job, which
resumes from its ``last.pt`` and MLflow run.

Reported: kills, jobs finished, duplicates (Result rows beyond one per job, registry versions beyond
one per run, MLflow epochs logged twice), completed epochs trained again after a kill (0 when every
job resumed from its checkpoint; a from-scratch restart would redo every checkpointed epoch), and time
to recovery p50/p95: kill → the job claimed again by the new worker (``recovery_s``, dominated by the
stale threshold) and kill → job finished (``finish_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_info, percentiles, rounded, start_private_redis, write_result

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "size": 64,
    "base_channels": 4,
    "depth": 2,
    "batch_size": 8,
    "num_workers": 0,
    "augment": False,
    "samples_per_epoch": 32,
}
RECOVERY = {
    "BMSEG_HEARTBEAT_SECONDS": "0.5",
    "BMSEG_STALE_AFTER_SECONDS": "6",
    "BMSEG_REAP_INTERVAL_SECONDS": "1",
}


class Workers:
    def __init__(self, root: Path) -> None:
        self.root, self.count, self.process = root, 0, None

    def start(self) -> float:
        """Start a worker; returns the seconds until it was ready."""
        self.count += 1
        log = self.root / f"worker{self.count}.log"
        started = time.monotonic()
        with log.open("w") as handle:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bmcore.cli",
                    "worker",
                    "--name",
                    f"kill{self.count}@%h",
                    "--loglevel",
                    "INFO",
                ],
                cwd=REPO,
                env=os.environ | RECOVERY,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        while " ready." not in log.read_text():
            if self.process.poll() is not None or time.monotonic() - started > 120:
                raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        return time.monotonic() - started

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def job_state(job_id: str) -> dict:
    from bmcore.db import session_scope
    from bmcore.jobs.search import get_job, job_to_dict

    with session_scope() as session:
        return job_to_dict(get_job(session, job_id))


def wait_until(job_id: str, done, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = job_state(job_id)
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} stuck: {job['status']} {job['message']}")
        time.sleep(0.1)


def checkpoint_epoch(path: Path) -> int:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["extra"]["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (logs).")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="bmseg-bench-kill-"))
    (root / "redis").mkdir()
    redis_url, redis_server = start_private_redis(
        root / "redis", "--appendonly", "yes", "--appendfsync", "always"
    )
    for name in ("BMSEG_DATABASE_URL", "BMSEG_MLFLOW_TRACKING_URI", "BMSEG_MLFLOW_ARTIFACT_ROOT"):
        os.environ.pop(name, None)
    os.environ.update(
        {"BMSEG_DATA_DIR": str(root / "data"), "BMSEG_REDIS_URL": redis_url, "OMP_NUM_THREADS": "1"}
    )
    workers = Workers(root)
    try:
        result = run(args, rng, root, workers)
    finally:
        workers.stop()
        redis_server.terminate()
        redis_server.wait(timeout=20)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    path = write_result("kill", rounded(result, 3))
    print(json.dumps({k: v for k, v in result.items() if k != "kills_detail"}, indent=1))
    print(f"wrote {path}")


def run(args, rng: random.Random, root: Path, workers: Workers) -> dict:
    from mlflow import MlflowClient
    from sqlalchemy import func, select

    from bmcore import tracking
    from bmcore.data.synth import synth_cohort
    from bmcore.db import Result, init_db, session_scope
    from bmcore.jobs.lifecycle import submit_job

    machine = machine_info()
    init_db()
    cohort = root / "cohort"
    synth_cohort(cohort, 6, seed=3, layout="brats", shape=(64, 64, 32), spacing=(3.5, 3.5, 5.0), workers=1)
    params = {"data": str(cohort), "arch": "unet", "epochs": args.epochs, **TINY}

    def submit() -> str:
        with session_scope() as session:
            return submit_job(session, "train", params).id

    workers.start()
    for _ in range(2):  # the first one imports torch and MLflow and fills the preprocessing cache
        baseline = submit()
        wait_until(baseline, lambda j: j["status"] == "running")
        started = time.monotonic()
        job = wait_until(baseline, lambda j: j["finished_at"] is not None)
        duration = time.monotonic() - started
        assert job["status"] == "succeeded", job
    print(f"undisturbed job: {duration:.1f} s", flush=True)

    tracking.configure()
    client = MlflowClient()
    records: list[dict] = []
    while sum(r["killed"] for r in records) < args.kills:
        index = sum(r["killed"] for r in records)
        job_id = submit()
        wait_until(job_id, lambda j: j["status"] == "running")
        delay = rng.uniform(0.05, 0.95) * duration
        time.sleep(delay)
        before = job_state(job_id)
        if before["status"] != "running":  # finished before the kill point: not a mid-job kill
            records.append({"job_id": job_id, "killed": False, "status": before["status"]})
            print(f"kill point {delay:.1f} s came after the job ended; another job", flush=True)
            continue
        last = root / "data" / "results" / "jobs" / job_id / "last.pt"
        workers.kill()
        killed_at = time.monotonic()
        killed_wall_ms = time.time() * 1000
        kept = checkpoint_epoch(last)
        phase = (
            "preparing"
            if not last.exists()
            else "training"
            if kept < args.epochs
            else "validating/registering"
        )
        run_at_kill = job_state(job_id)["mlflow_run_id"]
        registered_at_kill = bool(run_at_kill and client.search_model_versions(f"run_id = '{run_at_kill}'"))
        ready_s = workers.start()
        reclaimed = wait_until(job_id, lambda j: j["attempts"] >= 2 or j["finished_at"] is not None)
        recovery = time.monotonic() - killed_at
        final = wait_until(job_id, lambda j: j["finished_at"] is not None)
        finish = time.monotonic() - killed_at
        with session_scope() as session:
            results = session.scalar(select(func.count()).select_from(Result).where(Result.job_id == job_id))
        run_id = final["mlflow_run_id"]
        versions = len(client.search_model_versions(f"run_id = '{run_id}'")) if run_id else 0
        history = client.get_metric_history(run_id, "train_loss") if run_id else []
        steps = [m.step for m in history]
        redone = sum(1 for m in history if m.timestamp > killed_wall_ms and m.step <= kept)
        record = {
            "job_id": job_id,
            "killed": True,
            "kill_after_s": delay,
            "phase": phase,
            "registered_at_kill": registered_at_kill,
            "checkpoint_epoch_at_kill": kept,
            "status": final["status"],
            "attempts": final["attempts"],
            "reclaimed_attempt": reclaimed["attempts"],
            "result_rows": results,
            "registry_versions": versions,
            "epochs_logged": len(steps),
            "epochs_logged_twice": len(steps) - len(set(steps)),
            "completed_epochs_redone": redone,
            "worker_ready_s": ready_s,
            "recovery_s": recovery,
            "finish_s": finish,
        }
        records.append(record)
        print(
            f"kill {index + 1}/{args.kills}: {phase}, epoch {kept} kept, {final['status']} "
            f"(attempt {final['attempts']}), recovered in {recovery:.1f} s, done in {finish:.1f} s",
            flush=True,
        )

    killed = [r for r in records if r["killed"]]
    return {
        "what": "SIGKILL a solo worker mid training job at a random point; a new worker's reaper requeues it",
        "command": "python bench/bench_kill.py" + (f" --kills {args.kills}" if args.kills != 20 else ""),
        "settings": {
            "epochs": args.epochs,
            "model": {k: v for k, v in params.items() if k != "data"},
            "heartbeat_s": float(RECOVERY["BMSEG_HEARTBEAT_SECONDS"]),
            "stale_after_s": float(RECOVERY["BMSEG_STALE_AFTER_SECONDS"]),
            "reap_interval_s": float(RECOVERY["BMSEG_REAP_INTERVAL_SECONDS"]),
            "seed": args.seed,
        },
        "undisturbed_job_s": duration,
        "kills": len(killed),
        "kill_points_skipped": len(records) - len(killed),
        "kill_phases": {
            p: sum(r["phase"] == p for r in killed) for p in sorted({r["phase"] for r in killed})
        },
        "kills_after_registration": sum(r["registered_at_kill"] for r in killed),
        "jobs_finished": sum(r["status"] == "succeeded" for r in killed),
        "jobs_failed": sum(r["status"] != "succeeded" for r in killed),
        "duplicates": {
            "result_rows": sum(max(0, r["result_rows"] - 1) for r in killed),
            "registry_versions": sum(max(0, r["registry_versions"] - 1) for r in killed),
            "epochs_logged_twice": sum(r["epochs_logged_twice"] for r in killed),
        },
        "missing": {
            "result_rows": sum(r["result_rows"] == 0 for r in killed),
            "registry_versions": sum(r["registry_versions"] == 0 for r in killed),
        },
        "completed_epochs_redone": sum(r["completed_epochs_redone"] for r in killed),
        "checkpointed_epochs_at_kills": sum(r["checkpoint_epoch_at_kill"] for r in killed),
        "recovery_s": percentiles([r["recovery_s"] for r in killed]),
        "finish_s": percentiles([r["finish_s"] for r in killed]),
        "worker_ready_s": percentiles([r["worker_ready_s"] for r in killed]),
        "machine": machine,
        "kills_detail": records,
    }


if __name__ == "__main__":
    main()
