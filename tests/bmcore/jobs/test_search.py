"""Reading jobs (bmcore.jobs.search): by id, filtered lists, the JSON view."""

from __future__ import annotations

import json

import pytest

from bmcore.jobs.errors import JobNotFound
from bmcore.jobs.lifecycle import claim_job, finish_job, submit_job
from bmcore.jobs.search import get_job, job_to_dict, list_jobs

DATA = "/data/cohort"


def test_get_unknown_job(db_session):
    with pytest.raises(JobNotFound, match="unknown job id: nope") as caught:
        get_job(db_session, "nope")
    assert isinstance(caught.value, LookupError)
    assert str(caught.value) == "unknown job id: nope"


def test_list_jobs_filters_newest_first(db_session):
    first = submit_job(db_session, "train", {"data": DATA}, owner_id=None, send=False)
    second = submit_job(db_session, "evaluate", {"data": DATA}, send=False)
    third = submit_job(db_session, "train", {"data": DATA}, send=False)
    finish_job(db_session, third.id, "succeeded")

    assert [job.id for job in list_jobs(db_session)] == [third.id, second.id, first.id]
    assert [job.id for job in list_jobs(db_session, type="train")] == [third.id, first.id]
    assert [job.id for job in list_jobs(db_session, status="queued")] == [second.id, first.id]
    assert [job.id for job in list_jobs(db_session, limit=1)] == [third.id]
    assert list_jobs(db_session, owner_id=42) == []
    with pytest.raises(ValueError, match="unknown job status"):
        list_jobs(db_session, status="done")


def test_job_to_dict_is_json_with_iso_utc_timestamps(db_session):
    job = submit_job(db_session, "train", {"data": DATA, "arch": "cnn", "epochs": 5}, send=False)
    claim_job(db_session, job.id, "gpu-0")
    data = job_to_dict(get_job(db_session, job.id))
    assert json.loads(json.dumps(data)) == data
    assert data["id"] == job.id and data["status"] == "running" and data["params"]["arch"] == "cnn"
    assert data["created_at"].endswith("+00:00") and data["started_at"].endswith("+00:00")
    assert data["finished_at"] is None
