"""Jobs through the real queue: Redis, a real Celery worker process, SQLite, a local MLflow store.

One module-scoped stack (worker subprocess + tiny synthetic cohort); the tests run in order:
train → segment (registry URI) → evaluate, then cancel, failure and unknown-id paths.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from bmcore import tracking
from bmcore.config import get_settings
from bmcore.data.synth import synth_cohort
from bmcore.db import JobEvent, Result, dispose_engines, init_db, session_scope
from bmcore.jobs.lifecycle import cancel_job, submit_job
from bmcore.jobs.runner import run_job
from bmcore.jobs.search import get_job, job_to_dict

REDIS_URL = os.environ.get("BMSEG_TEST_WORKER_REDIS_URL", "redis://127.0.0.1:6379/11")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def wait_for(job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            job = job_to_dict(get_job(session, job_id))
        if job["status"] in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job['message']}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    env = {"BMSEG_DATA_DIR": str(root / "data"), "BMSEG_REDIS_URL": REDIS_URL}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    dispose_engines()
    redis.Redis.from_url(REDIS_URL).flushdb()
    init_db()
    cohort = root / "cohort"
    # seed 1: its validation patients hold 10 TC lesions, enough (min_val_lesions) to promote on
    synth_cohort(cohort, 6, seed=1, layout="brats", shape=(64, 64, 32), spacing=(3.5, 3.5, 5.0), workers=1)
    log = open(root / "worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "bmcore.cli", "worker", "--queues", "gpu,cpu", "--loglevel", "WARNING"],
        cwd=REPO,
        env=os.environ | env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield {"root": root, "cohort": cohort, "worker": worker}
    worker.terminate()
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
    log.close()
    redis.Redis.from_url(REDIS_URL).flushdb()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    dispose_engines()


def submit(job_type: str, params: dict) -> str:
    with session_scope() as session:
        return submit_job(session, job_type, params).id


def events(job_id: str) -> list[str]:
    with session_scope() as session:
        return [e.message for e in session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id)]


def result_of(job_id: str):
    with session_scope() as session:
        result = session.query(Result).filter_by(job_id=job_id).one()
        return result.metrics, result.artifacts


def test_train_job_runs_through_the_queue_and_registers_a_champion(stack, tiny_train):
    from mlflow.tracking import MlflowClient  # lazy: MLflow, read once the worker has trained

    job_id = submit("train", {"data": str(stack["cohort"]), "arch": "unet", "epochs": 2, **tiny_train})
    job = wait_for(job_id)
    assert job["status"] == "succeeded", (job, (stack["root"] / "worker.log").read_text()[-3000:])
    progress_lines = [m for m in events(job_id) if m.startswith("epoch")]
    assert progress_lines, events(job_id)
    assert job["progress"] == 1.0 and job["attempts"] == 1
    metrics, artifacts = result_of(job_id)
    assert Path(artifacts["checkpoint"]).is_file()
    assert metrics["registered"]["name"] == "bmseg-unet" and metrics["registered"]["champion"] is True
    assert metrics["registered"]["warnings"] == ["trained on synthetic data: not for clinical use"]
    assert metrics["val_lesions"] >= 5 and metrics["val_patients"] >= 1  # recorded with the version
    tracking.configure()
    client = MlflowClient()
    history = client.get_metric_history(job["mlflow_run_id"], "train_loss")
    assert [m.step for m in history] == [1, 2]
    version = client.get_model_version_by_alias("bmseg-unet", "champion")
    assert version.run_id == job["mlflow_run_id"]


def test_segment_job_resolves_the_registry_and_writes_mask_and_lesion_table(stack):
    import nibabel as nib

    study = next(p for p in sorted(stack["cohort"].iterdir()) if p.is_dir())
    job_id = submit("segment", {"study_dir": str(study), "model": "models:/bmseg-unet@champion"})
    job = wait_for(job_id)
    assert job["status"] == "succeeded", job
    metrics, artifacts = result_of(job_id)
    mask = nib.load(artifacts[f"{study.name}_seg"])
    source = nib.load(study / f"{study.name}-t1c.nii.gz")
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}
    with open(artifacts[f"{study.name}_lesions"]) as handle:
        header = next(csv.reader(handle))
    assert header[:4] == ["lesion_id", "voxels", "volume_ml", "diameter_mm"]
    assert metrics["lesion_count"] == len(metrics["studies"][study.name]["lesions"])


def test_evaluate_job_records_every_metric_convention(stack):
    job_id = submit("evaluate", {"data": str(stack["cohort"]), "model": "models:/bmseg-unet@champion"})
    job = wait_for(job_id)
    assert job["status"] == "succeeded", job
    metrics, artifacts = result_of(job_id)
    for key in (
        "paper_accuracy",
        "paper_mean_iou",
        "dice_ET",
        "dice_TC",
        "dice_WT",
        "lesion_dice_TC",
        "hd95_TC",
        "fp_per_study_TC",
        "detection_sensitivity_TC",
    ):
        assert key in metrics, key
    assert metrics["n_studies"] == 6
    assert Path(artifacts["metrics"]).is_file()


def test_cancelling_a_running_job_stops_it_between_steps(stack, tiny_train):
    params = {"data": str(stack["cohort"]), "arch": "cnn", "epochs": 200, **tiny_train}
    job_id = submit("train", params)
    wait_for(job_id, statuses=("running",), timeout=120)
    time.sleep(3)
    with session_scope() as session:
        cancel_job(session, job_id)
    asked = time.monotonic()
    job = wait_for(job_id, timeout=60)
    assert job["status"] == "cancelled", job
    assert time.monotonic() - asked < 30
    assert job["progress"] < 1.0


def test_a_failing_job_records_a_readable_error(stack, tiny_train):
    job_id = submit(
        "train", {"data": str(stack["root"] / "missing"), "arch": "fcn", "epochs": 1, **tiny_train}
    )
    job = wait_for(job_id)
    assert job["status"] == "failed"
    assert "no such file or directory" in job["error"] and "Traceback" not in job["error"]


def test_a_job_delivered_twice_runs_once(stack):
    job_id = submit(
        "segment",
        {"study_dir": str(next(stack["cohort"].glob("BraTS-*"))), "model": "models:/bmseg-unet@champion"},
    )
    job = wait_for(job_id)
    assert job["status"] == "succeeded"
    assert run_job(job_id) is None  # a redelivered message finds the job finished and does nothing
    assert wait_for(job_id)["attempts"] == 1


def test_unknown_job_id_is_a_clear_cli_error(stack):
    done = subprocess.run(
        [sys.executable, "-m", "bmcore.cli", "job", "0" * 32],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: unknown job id: {'0' * 32}"
