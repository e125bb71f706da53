"""A sweep reuses a finished child only from its own owner (issue #16, item 4), and children get their
internal params from the server: the parent's run, their hash, the parent's data set and eligibility (never
for a cross-validation fold).

On SQLite and PostgreSQL, with a real Redis (nothing consumes the queue); the parent's MLflow run id is set
on its row beforehand, so the start step opens no MLflow run."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bmcore.accounts import create_user
from bmcore.data.synth import synth_cohort
from bmcore.db import Job, Result, session_scope
from bmcore.jobs.lifecycle import claim_job, finish_job, record_result, submit_job
from bmcore.jobs.parent_params import sweep_children
from bmcore.jobs.parents.steps import advance
from bmcore.jobs.train_params import split_internal

DATA = "/data/cohort"


@pytest.fixture
def owners(migrated_db_url, redis_test_url):
    with session_scope() as session:
        alice = create_user(session, "alice@example.org", "correct-horse-battery")
        bob = create_user(session, "bob@example.org", "correct-horse-battery")
        return alice.id, bob.id


def _finished_train(owner_id: int, child: dict, checkpoint) -> str:
    """A succeeded train job of ``owner_id`` carrying ``child``'s params and hash, with a checkpoint."""
    client, internal = split_internal(child)
    with session_scope() as session:
        job = submit_job(session, "train", client, owner_id=owner_id, internal=internal, send=False)
        claim_job(session, job.id, "test")
        record_result(session, job.id, {"val_lesion_dice": 0.9}, {"checkpoint": str(checkpoint)})
        finish_job(session, job.id, "succeeded")
        return job.id


def test_a_sweep_reuses_only_its_owners_results(owners, tmp_path, tiny_train):
    alice, bob = owners
    params = {"data": DATA, "grid": {"lr": [1e-3, 3e-4]}, "base": tiny_train | {"epochs": 1}}
    (_, first), (_, second) = sweep_children(params)
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    # B's row carries the hash of A's future first child (a forged config_hash from before the server owned
    # it); A's own earlier run has the hash of the second.
    _finished_train(bob, first, checkpoint)
    own = _finished_train(alice, second, checkpoint)

    with session_scope() as session:
        parent = submit_job(
            session,
            "sweep",
            params,
            owner_id=alice,
            internal={"dataset": "cohort", "champion_eligible": True},
        )
        parent.mlflow_run_id = "parent-run"
        session.commit()
    assert advance(parent.id, "start", "test") == "running"

    with session_scope() as session:
        children = session.scalars(select(Job).where(Job.parent_id == parent.id)).all()
        by_hash = {child.params["config_hash"]: child for child in children}
        trained, reused = by_hash[first["config_hash"]], by_hash[second["config_hash"]]
        assert (trained.status, trained.message) == ("queued", "queued")  # B's result was not taken
        assert reused.status == "succeeded"
        assert (
            session.scalars(select(Result.metrics).where(Result.job_id == reused.id)).one()["reused_from"]
            == own
        )
        for child in children:
            assert child.owner_id == alice
            assert {k: child.params[k] for k in ("mlflow_parent_run_id", "dataset", "champion_eligible")} == {
                "mlflow_parent_run_id": "parent-run",
                "dataset": "cohort",
                "champion_eligible": True,
            }
        assert session.scalars(select(Result).where(Result.job_id == trained.id)).all() == []


def test_crossval_folds_are_never_eligible_whatever_their_parent(owners, tmp_path, tiny_train):
    alice, _bob = owners
    cohort = tmp_path / "cohort"
    synth_cohort(cohort, 6, seed=3, shape=(32, 32, 16), spacing=(3.5, 3.5, 5.0), workers=1)
    params = {"data": str(cohort), "folds": 3, "base": tiny_train | {"epochs": 1}}
    with session_scope() as session:
        parent = submit_job(
            session,
            "crossval",
            params,
            owner_id=alice,
            internal={"dataset": "cohort", "champion_eligible": True},
        )
        parent.mlflow_run_id = "parent-run"
        session.commit()
    assert advance(parent.id, "start", "test") == "running"

    with session_scope() as session:
        folds = session.scalars(select(Job).where(Job.parent_id == parent.id)).all()
        assert len(folds) == 3
        for fold in folds:
            assert fold.params["champion_eligible"] is False and fold.params["dataset"] == "cohort"
            assert fold.params["evaluate_test"] is True and set(fold.params["split"]["studies"]) == {
                "train",
                "val",
                "test",
            }
