"""Sweeps and cross-validation: parent jobs fanned out into child train jobs (bmcore.jobs.parents).

Fast tests check validation, cancel propagation and the parent's steps on SQLite with a recording
broker (search expansion, hashing, ranking and fold splits: tests/bmcore/jobs). The slow ones train: one
in this process, draining the queue as a single solo worker on both queues would (no deadlock), and the
rest through Redis (db 9, flushed) and TWO real worker processes on a tiny cohort, in order: a 4-child
sweep two at a time → the same sweep again through the CLI, reused → a failing child → cancel → a 3-fold
cross-validation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from bmcore import imaging, tracking
from bmcore.config import get_settings
from bmcore.data.synth import synth_cohort
from bmcore.db import Job, Result, dispose_engines, init_db, session_scope
from bmcore.jobs.errors import JobParamsError
from bmcore.jobs.lifecycle import cancel_job, claim_job, finish_job, record_result, submit_job
from bmcore.jobs.parent_params import sweep_children
from bmcore.jobs.parents.steps import advance, notify_parent
from bmcore.jobs.queue import celery_client
from bmcore.jobs.runner import run_job, run_parent
from bmcore.jobs.search import get_job, job_to_dict
from bmcore.jobs.train_params import split_internal
from bmcore.tracking import experiment_name_for

REDIS_URL = os.environ.get("BMSEG_TEST_SWEEP_REDIS_URL", "redis://127.0.0.1:6379/9")
REPO = Path(__file__).resolve().parents[2]
COHORT_SEED = 8  # 6 studies of 5 patients, one of them with two visits
FINISHED = ("succeeded", "failed", "cancelled")


# ------------------------------------------------------------------------------------------ helpers


class RecordingBroker:
    """Stands in for ``celery_client()``: keeps every message sent."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

    def send_task(self, name, args=None, kwargs=None, queue=None, countdown=None, **_options):
        self.messages.append(
            {
                "task": name,
                "args": list(args or []),
                "kwargs": dict(kwargs or {}),
                "queue": queue,
                "countdown": countdown,
            }
        )


@pytest.fixture
def tiny(tiny_train) -> dict:
    """The tiny training settings (tests/conftest.py), one epoch."""
    return tiny_train | {"epochs": 1}


@pytest.fixture
def local_db(tmp_path, monkeypatch):
    """A fresh data dir (SQLite job database, MLflow store) and a recording broker."""

    monkeypatch.setenv("BMSEG_DATA_DIR", str(tmp_path / "data"))
    for name in ("BMSEG_DATABASE_URL", "BMSEG_MLFLOW_TRACKING_URI", "BMSEG_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    dispose_engines()
    init_db()
    broker = RecordingBroker()
    monkeypatch.setattr("bmcore.jobs.queue.celery_client", lambda: broker)
    yield broker
    dispose_engines()
    get_settings.cache_clear()


def submit(job_type: str, params: dict, **kwargs) -> str:
    with session_scope() as session:
        return submit_job(session, job_type, params, **kwargs).id


def job_of(job_id: str) -> dict:
    with session_scope() as session:
        return job_to_dict(get_job(session, job_id))


def children_of(job_id: str) -> list[dict]:
    with session_scope() as session:
        rows = session.query(Job).filter_by(parent_id=job_id).order_by(Job.created_at, Job.id).all()
        return [job_to_dict(row) for row in rows]


def result_of(job_id: str) -> tuple[dict, dict]:
    with session_scope() as session:
        result = session.query(Result).filter_by(job_id=job_id).one()
        return result.metrics, result.artifacts


def wait_for(job_id: str, statuses=FINISHED, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job_of(job_id)
        if job["status"] in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job['message']}")


def most_at_once(jobs: list[dict]) -> int:
    """The largest number of jobs whose [started_at, finished_at] intervals overlap at one moment."""
    edges = []
    for job in jobs:
        edges += [(job["started_at"], 1), (job["finished_at"], -1)]
    running = peak = 0
    for _moment, change in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        running += change
        peak = max(peak, running)
    return peak


# ------------------------------------------------------------------------------------------ fast


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"data": "/d", "grid": {"lr": [1e-3]}, "budget": 0}, "budget must be an integer of at least 1"),
        ({"data": "/d", "random": {"lr": [1e-4, 1e-2]}, "budget": -2}, "budget must be an integer"),
        ({"data": "/d", "random": {"lr": [1e-4, 1e-2]}}, "needs params.budget"),
        (
            {"data": "/d", "grid": {"learning_rate": [1e-3]}},
            "cannot sweep unknown parameter(s): learning_rate",
        ),
        (
            {"data": "/d", "grid": {"size": [64, 100]}},
            "sweep child 2 (size=100): invalid training parameters",
        ),
        ({"data": "/d", "grid": {"arch": ["unet", "resnet"]}}, "sweep child 2 (arch=resnet): unknown arch"),
        ({"data": "/d", "grid": {"lr": [1e-3, 1e-3]}}, "lists 0.001 twice"),
        (
            {"data": "/d", "grid": {"lr": ["fast"]}},
            "sweep child 1 (lr=fast): lr must be a number, got 'fast'",
        ),
        ({"data": "/d", "grid": {"augment": [1]}}, "augment must be true or false"),
        ({"data": "/d", "grid": {"lr": [1e-3]}, "random": {"lr": [1e-4, 1e-3]}}, "exactly one of"),
        ({"data": "/d", "grid": {"lr": []}}, "grid.lr must be a non-empty list"),
        ({"data": "/d", "random": {"lr": [0, 1e-2]}, "budget": 2}, "log-uniform"),
        ({"grid": {"lr": [1e-3]}}, "needs params.data"),
        ({"data": "/d", "grid": {"lr": [1e-3]}, "base": {"optimizer": "sgd"}}, "unknown training parameter"),
        ({"data": "/d", "grid": {"lr": [1e-3]}, "colour": 1}, "unknown sweep parameter(s): colour"),
    ],
)
def test_refused_sweeps_write_nothing(local_db, params, message):
    with pytest.raises(JobParamsError) as caught:
        submit("sweep", params)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    with session_scope() as session:
        assert session.query(Job).count() == 0
    assert local_db.messages == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"data": "/d", "folds": 1}, "folds must be an integer from 2 to 10"),
        ({"data": "/d", "folds": 11}, "folds must be an integer from 2 to 10"),
        ({"data": "/d", "folds": "3"}, "folds must be an integer"),
        ({"data": "/d", "folds": 3, "base": {"lr": -1}}, "learning rate must be positive"),
        ({"folds": 3}, "needs params.data"),
    ],
)
def test_refused_crossvals(local_db, params, message):
    with pytest.raises(JobParamsError) as caught:
        submit("crossval", params)
    assert message in str(caught.value)


def test_parents_are_queued_on_the_cpu_queue(local_db, tiny):
    sweep_id = submit("sweep", {"data": "/d", "grid": {"lr": [1e-3, 3e-4]}, "base": tiny})
    crossval_id = submit("crossval", {"data": "/d", "folds": 3})
    assert local_db.messages == [
        {"task": "bmseg.sweep", "args": [sweep_id], "kwargs": {}, "queue": "cpu", "countdown": None},
        {"task": "bmseg.crossval", "args": [crossval_id], "kwargs": {}, "queue": "cpu", "countdown": None},
    ]


def test_cancelling_a_parent_cancels_its_children(local_db, tiny):
    params = {"data": "/d", "grid": {"lr": [1e-3, 3e-4]}, "base": tiny}
    parent = submit("sweep", params)
    running, queued = (
        submit("train", {"data": "/d", **tiny}, parent_id=parent, send=False) for _ in range(2)
    )
    with session_scope() as session:
        claim_job(session, parent, "test")
        claim_job(session, running, "test")
    local_db.messages.clear()
    with session_scope() as session:
        assert cancel_job(session, parent).cancel_requested
    assert (
        job_of(queued)["status"] == "cancelled" and job_of(queued)["message"] == "cancelled with its parent"
    )
    assert job_of(running)["status"] == "running" and job_of(running)["cancel_requested"]
    assert local_db.messages == []  # a child still runs: its end will report to the parent

    with session_scope() as session:
        finish_job(session, running, "cancelled")
        cancel_job(session, parent)  # asked again, nothing runs any more: the parent's check step is sent
    assert [(m["task"], m["kwargs"]) for m in local_db.messages] == [("bmseg.sweep", {"step": "check"})]


def test_parent_steps_reuse_a_finished_identical_child_and_rank(migrated_db_url, tmp_path, monkeypatch, tiny):
    """The state machine without training, on SQLite and PostgreSQL: start fans out (one child reused,
    one queued), the child's end sends the parent's check, the check ranks both."""

    monkeypatch.setenv("BMSEG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    broker = RecordingBroker()
    monkeypatch.setattr("bmcore.jobs.queue.celery_client", lambda: broker)
    monkeypatch.setattr("bmcore.jobs.parents.steps.start_parent_run", lambda *_args: "parent-run")

    params = {"data": "/d", "grid": {"lr": [1e-3, 3e-4]}, "base": tiny}
    (_, first), (_, second) = sweep_children(params)
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    client, internal = split_internal(first)
    earlier = submit("train", client, internal=internal, send=False)
    with session_scope() as session:
        claim_job(session, earlier, "test")
        record_result(
            session, earlier, {"val_lesion_dice": 0.2, "val_loss": 1.0}, {"checkpoint": str(checkpoint)}
        )
        finish_job(session, earlier, "succeeded")

    parent = submit("sweep", params)
    assert advance(parent, "start", "test") == "running"
    children = {child["params"]["config_hash"]: child for child in children_of(parent)}
    reused, trained = children[first["config_hash"]], children[second["config_hash"]]
    assert (reused["status"], reused["attempts"], trained["status"]) == ("succeeded", 0, "queued")
    assert result_of(reused["id"])[0]["reused_from"] == earlier
    assert trained["params"]["mlflow_parent_run_id"] == "parent-run"
    assert [(m["task"], m["args"], m["kwargs"], m["countdown"]) for m in broker.messages] == [
        ("bmseg.sweep", [parent], {}, None),
        ("bmseg.train", [trained["id"]], {}, None),
        ("bmseg.sweep", [parent], {"step": "recheck"}, 60),
    ]
    assert advance(parent, "start", "test") == "running"  # a redelivered start writes and sends nothing new
    assert len(children_of(parent)) == 2 and len(broker.messages) == 4

    with session_scope() as session:
        claim_job(session, trained["id"], "test")
        record_result(session, trained["id"], {"val_lesion_dice": 0.6, "val_loss": 1.3}, {})
        finish_job(session, trained["id"], "succeeded")
    notify_parent(trained["id"])
    assert broker.messages[-1]["kwargs"] == {"step": "check"}
    assert advance(parent, "check", "test") == "succeeded"
    assert advance(parent, "check", "test") is None  # a second check finds it ended
    metrics, artifacts = result_of(parent)
    assert [(r["job_id"], r["rank"], r["reused"]) for r in metrics["ranking"]] == [
        (trained["id"], 1, False),
        (reused["id"], 2, True),
    ]
    assert job_of(parent)["progress"] == 1.0 and Path(artifacts["ranking_md"]).is_file()


# ------------------------------------------------------------------------------------------ slow: one worker


@pytest.mark.slow
def test_one_worker_on_both_queues_runs_a_sweep_without_deadlock(local_db, tmp_path, tiny):
    """A single solo worker takes the queue's messages in turn: the parent's start step fans out and
    returns, the children train, the last one sends the parent's check, which ranks them."""

    cohort = tmp_path / "cohort"
    synth_cohort(cohort, 4, seed=3, layout="brats", shape=(64, 64, 32), spacing=(3.5, 3.5, 5.0), workers=1)
    parent = submit("sweep", {"data": str(cohort), "grid": {"arch": ["unet", "cnn"]}, "base": tiny})
    ran = []
    while any(m["countdown"] is None for m in local_db.messages):
        message = next(m for m in local_db.messages if m["countdown"] is None)  # rechecks are a backstop
        local_db.messages.remove(message)
        step = message["kwargs"].get("step", "start")
        ran.append((message["task"], step if message["task"] == "bmseg.sweep" else message["args"][0]))
        if message["task"] == "bmseg.train":
            assert run_job(message["args"][0]) == "succeeded"
        else:
            run_parent(message["args"][0], step)
        assert len(ran) < 10
    children = [child["id"] for child in children_of(parent)]
    assert ran == [
        ("bmseg.sweep", "start"),
        *[("bmseg.train", c) for c in children],
        ("bmseg.sweep", "check"),
    ]
    assert [m["kwargs"] for m in local_db.messages] == [{"step": "recheck"}]  # the backstop chain, pending
    assert job_of(parent)["status"] == "succeeded"
    metrics, artifacts = result_of(parent)
    assert [row["rank"] for row in metrics["ranking"]] == [1, 2]
    assert Path(artifacts["ranking"]).is_file() and Path(artifacts["ranking_md"]).is_file()


# ------------------------------------------------------------------------------------------ slow: two workers


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Redis db 9 (flushed), a SQLite job database, a tiny cohort and TWO worker processes on gpu,cpu."""

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis unreachable at {REDIS_URL} ({exc})")
    root = tmp_path_factory.mktemp("sweeps")
    env = {"BMSEG_DATA_DIR": str(root / "data"), "BMSEG_REDIS_URL": REDIS_URL}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    dispose_engines()
    client.flushdb()
    init_db()
    cohort = root / "cohort"
    synth_cohort(cohort, 6, COHORT_SEED, "brats", shape=(64, 64, 32), spacing=(3.5, 3.5, 5.0), workers=1)
    logs, workers = [], []
    for index in range(2):
        log = open(root / f"worker-{index}.log", "w")  # noqa: SIM115
        command = [
            sys.executable,
            "-m",
            "bmcore.cli",
            "worker",
            "--queues",
            "gpu,cpu",
            "--loglevel",
            "WARNING",
        ]
        command += ["--name", f"sweep-test-{index}@%h"]
        workers.append(
            subprocess.Popen(command, cwd=REPO, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT)
        )
        logs.append(log)
    wait_for_workers(2)
    yield {"root": root, "cohort": cohort, "logs": [root / f"worker-{i}.log" for i in range(2)]}
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
    for log in logs:
        log.close()
    client.flushdb()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    dispose_engines()


def wait_for_workers(count: int, timeout: float = 90) -> None:
    """Until ``count`` workers answer a ping (so the first sweep finds both ready)."""

    deadline = time.monotonic() + timeout
    while len(celery_client().control.ping(timeout=1.0)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} workers answered within {timeout} s"


def worker_logs(pool) -> str:
    return "\n".join(path.read_text()[-2000:] for path in pool["logs"])


def sweep_params(pool, tiny: dict) -> dict:
    return {
        "data": str(pool["cohort"]),
        "grid": {"lr": [1e-3, 3e-4], "arch": ["unet", "cnn"]},
        "base": tiny | {"epochs": 2},
        "promote_best": True,
    }


def mlflow_client():
    from mlflow import MlflowClient  # lazy: MLflow, only for the slow tests that read the store

    tracking.configure()
    return MlflowClient()


def experiment_runs(pool) -> list:
    client = mlflow_client()
    experiment = client.get_experiment_by_name(experiment_name_for(pool["cohort"]))
    return client.search_runs([experiment.experiment_id], max_results=1000)


def registered_versions() -> int:
    client = mlflow_client()
    return sum(len(client.search_model_versions(f"name='bmseg-{arch}'")) for arch in ("unet", "cnn", "fcn"))


@pytest.mark.slow
def test_a_sweep_runs_two_children_at_a_time_and_ranks_them(pool, tiny):
    parent_id = submit("sweep", sweep_params(pool, tiny))
    parent = wait_for(parent_id)
    assert parent["status"] == "succeeded", (parent, worker_logs(pool))
    children = children_of(parent_id)
    assert len(children) == 4 and all(child["type"] == "train" for child in children)
    assert all(child["status"] == "succeeded" and child["attempts"] == 1 for child in children)
    assert most_at_once(children) == 2, children  # two workers: two children at a time, never more

    metrics, artifacts = result_of(parent_id)
    ranking = metrics["ranking"]
    assert [row["rank"] for row in ranking] == [1, 2, 3, 4]
    assert {row["job_id"] for row in ranking} == {child["id"] for child in children}
    assert {(row["params"]["lr"], row["params"]["arch"]) for row in ranking} == {
        (lr, arch) for lr in (1e-3, 3e-4) for arch in ("unet", "cnn")
    }
    scores = [(row["val_lesion_dice"], -row["val_loss"]) for row in ranking]
    assert scores == sorted(scores, reverse=True)
    assert metrics["best_job_id"] == ranking[0]["job_id"] and metrics["reused"] == 0
    assert json.loads(Path(artifacts["ranking"]).read_text())["rows"] == ranking
    assert Path(artifacts["ranking_md"]).read_text().count("\n| ") == 4

    # MLflow: one parent run, each child's run nested under it; the best child is the champion.
    client = mlflow_client()
    parent_run = client.get_run(parent["mlflow_run_id"])
    assert parent_run.info.status == "FINISHED" and parent_run.data.tags["bmseg.job_type"] == "sweep"
    for child in children:
        assert (
            client.get_run(child["mlflow_run_id"]).data.tags["mlflow.parentRunId"] == parent["mlflow_run_id"]
        )
    best = ranking[0]["registered"]
    assert metrics["promoted"] == {
        "name": best["name"],
        "version": best["version"],
        "job_id": ranking[0]["job_id"],
    }
    assert str(client.get_model_version_by_alias(best["name"], "champion").version) == str(best["version"])


@pytest.mark.slow
def test_the_same_sweep_again_reuses_its_finished_children(pool, tiny):
    runs_before, versions_before = len(experiment_runs(pool)), registered_versions()
    command = [sys.executable, "-m", "bmcore.cli", "submit", "sweep", "--data", str(pool["cohort"])]
    command += ["--grid", "lr=1e-3,3e-4;arch=unet,cnn", "--promote-best", "--wait"]
    command += ["--base", ",".join(f"{k}={v}" for k, v in (tiny | {"epochs": 2}).items())]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env=os.environ.copy(), timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    parent_id = done.stdout.split("queued sweep job ")[1].split()[0]
    table = re.sub(r" *\| *", "|", done.stdout)  # tabulate pads the cells
    assert "|rank|job|status|reused|" in table and table.count("|yes|") == 4

    children = children_of(parent_id)
    assert len(children) == 4 and all(c["status"] == "succeeded" and c["attempts"] == 0 for c in children)
    metrics, _ = result_of(parent_id)
    assert metrics["reused"] == 4 and all(row["reused"] and row["reused_from"] for row in metrics["ranking"])
    assert len(experiment_runs(pool)) == runs_before + 1  # the new parent run only: nothing retrained
    assert registered_versions() == versions_before


@pytest.mark.slow
def test_a_failing_child_is_reported_and_does_not_fail_the_sweep(pool, tiny):
    # At 96² slices (a valid size), depth 6 passes validation but needs inputs divisible by 2**6 = 64:
    # that child fails at its first batch.
    params = {
        "data": str(pool["cohort"]),
        "grid": {"depth": [2, 6]},
        "base": tiny | {"loss": "dice_ce", "size": 96, "crop": 0},  # whole slices: 64² crops would fit
    }
    parent_id = submit("sweep", params)
    parent = wait_for(parent_id)
    assert parent["status"] == "succeeded", (parent, worker_logs(pool))
    metrics, artifacts = result_of(parent_id)
    assert (metrics["succeeded"], metrics["failed"]) == (1, 1)
    good, bad = metrics["ranking"]
    assert (good["rank"], good["params"], good["status"]) == (1, {"depth": 2}, "succeeded")
    assert (bad["rank"], bad["params"], bad["status"]) == (None, {"depth": 6}, "failed")
    assert "divisible by 64" in bad["error"]
    assert "divisible by 64" in Path(artifacts["ranking_md"]).read_text()


@pytest.mark.slow
def test_cancelling_a_sweep_stops_its_children(pool, tiny):
    params = {
        "data": str(pool["cohort"]),
        "grid": {"lr": [1e-3, 2e-3, 4e-3, 8e-3]},
        "base": tiny | {"epochs": 300},
    }
    parent_id = submit("sweep", params)
    deadline = time.monotonic() + 90
    while sum(c["status"] == "running" for c in children_of(parent_id)) < 2:
        assert time.monotonic() < deadline, (children_of(parent_id), worker_logs(pool))
        time.sleep(0.5)
    with session_scope() as session:
        cancel_job(session, parent_id)
    asked = time.monotonic()
    parent = wait_for(parent_id, timeout=60)
    assert parent["status"] == "cancelled", (parent, worker_logs(pool))
    assert time.monotonic() - asked < 40
    children = children_of(parent_id)
    assert [c["status"] for c in children] == ["cancelled"] * 4
    assert sorted(c["attempts"] for c in children) == [0, 0, 1, 1]  # two stopped mid-run, two never ran
    metrics, _ = result_of(parent_id)
    assert metrics["cancelled"] == 4 and metrics["best_job_id"] is None
    assert mlflow_client().get_run(parent["mlflow_run_id"]).info.status == "KILLED"


@pytest.mark.slow
def test_three_fold_crossvalidation_tests_every_patient_once(pool, tiny):
    params = {"data": str(pool["cohort"]), "folds": 3, "base": tiny, "seed": 5}
    parent_id = submit("crossval", params)
    parent = wait_for(parent_id, timeout=240)
    assert parent["status"] == "succeeded", (parent, worker_logs(pool))
    metrics, artifacts = result_of(parent_id)

    patient_of = {ref.study_id: ref.patient_id for ref in imaging.find_studies(pool["cohort"])}
    folds = metrics["folds"]
    assert [f["fold"] for f in folds] == [0, 1, 2] and all(f["status"] == "succeeded" for f in folds)
    tested_patients = [p for f in folds for p in f["test_patients"]]
    assert sorted(tested_patients) == sorted(set(patient_of.values()))  # no patient in two test folds
    tested_studies = [s for f in folds for s in f["test_studies"]]
    assert sorted(tested_studies) == sorted(patient_of)  # every study (all visits) tested exactly once
    for fold in folds:
        assert {patient_of[s] for s in fold["test_studies"]} == set(fold["test_patients"])
    for child in children_of(parent_id):
        split = child["params"]["split"]["patients"]
        train, val, test = (set(split[side]) for side in ("train", "val", "test"))
        assert train and val and test and not (train & val or train & test or val & test)

    for key in ("val_loss", "val_lesion_dice", "test_lesion_dice_TC", "test_dice_WT"):
        values = [f["figures"][key] for f in folds]
        assert metrics["mean"][key] == pytest.approx(sum(values) / 3)
        assert metrics["std"][key] >= 0
    assert metrics["oof"]["n_studies"] == 6 and metrics["oof_studies"] == 6
    assert metrics["every_study_tested_once"] is True
    assert metrics["oof_lesion_dice_TC"] == metrics["oof"]["lesion_dice_TC"]
    table = Path(artifacts["crossval_md"]).read_text()
    assert "mean ± std" in table and "Out-of-fold" in table
    client = mlflow_client()
    assert client.get_run(parent["mlflow_run_id"]).info.status == "FINISHED"
    for child in children_of(parent_id):
        assert (
            client.get_run(child["mlflow_run_id"]).data.tags["mlflow.parentRunId"] == parent["mlflow_run_id"]
        )
        registered = result_of(child["id"])[0]["registered"]  # a fold model never takes champion
        assert registered["champion"] is False
        version = client.get_model_version(registered["name"], str(registered["version"]))
        assert version.tags["champion_eligible"] == "false" and "champion" not in version.aliases
