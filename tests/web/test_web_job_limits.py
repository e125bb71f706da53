"""Bounded jobs through the API and the dashboard (issue #16, items 4 and 7): typed, bounded params (400
naming the field), unknown and server-owned params refused, and the per-user limit of queued and running
jobs (429 with Retry-After). A real Redis (nothing consumes it) and SQLite; jobs name a registered data
set."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bmcore.config import get_settings
from bmcore.datasets import add_dataset
from bmcore.db import Job
from bmcore.jobs.parent_params import sweep_children

DATASET = "cohort"

# Item 7: each was a 202; now a 400 whose message names the field.
REFUSED_TRAIN = {
    "epochs 1e9": ({"epochs": 1e9}, "epochs"),
    "batch_size 1e9": ({"batch_size": 1e9}, "batch_size"),
    "size 1e6": ({"size": 1e6}, "size"),
    "base_channels 1e6": ({"base_channels": 1e6}, "base_channels"),
    "depth 1000": ({"depth": 1000}, "depth must be from 1 to 6"),
    "num_workers 10000": ({"num_workers": 10000}, "num_workers must be from 0 to 16"),
    "samples_per_epoch 1e12": ({"samples_per_epoch": 1e12}, "samples_per_epoch"),
    "samples_per_epoch -5": ({"samples_per_epoch": -5}, "samples_per_epoch must be from 0"),
    "early_stopping_patience -1": ({"early_stopping_patience": -1}, "early_stopping_patience must be from 1"),
    "device cuda:99": ({"device": "cuda:99"}, "device must be auto, cpu, cuda or cuda:N"),
    "device meta": ({"device": "meta"}, "device must be auto, cpu, cuda or cuda:N"),
    "2.0 for an integer": ({"batch_size": 2.0}, "batch_size must be a positive integer, got 2.0"),
    "epochs 10**9": ({"epochs": 10**9}, "epochs must be from 1 to 1000 (BMSEG_MAX_EPOCHS)"),
    "an optimizer": ({"optimizer": "sgd"}, "unknown training parameter(s): optimizer"),
}


@pytest.fixture
def cohort(db_session, tmp_path) -> str:
    """A data set every researcher may name; its path."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    return add_dataset(db_session, DATASET, folder).path


def _count(db_session) -> int:
    db_session.expire_all()
    return db_session.scalar(select(func.count()).select_from(Job))


def _post(client, headers, job_type: str, params: dict, **body):
    return client.post("/api/v1/jobs", json={"type": job_type, "params": params, **body}, headers=headers)


def _refused(response, fragment: str, db_session, web_redis) -> None:
    assert response.status_code == 400, response.json
    assert fragment in response.json["error"] and "\n" not in response.json["error"]
    assert _count(db_session) == 0 and web_redis.llen("gpu") == 0


@pytest.mark.parametrize("case", list(REFUSED_TRAIN), ids=list(REFUSED_TRAIN))
def test_unbounded_or_mistyped_train_params_are_400_naming_the_field(
    case, client, api, cohort, db_session, web_redis
):
    params, fragment = REFUSED_TRAIN[case]
    response = _post(client, api["alice"], "train", {"data": DATASET, **params})
    _refused(response, fragment, db_session, web_redis)


def test_admins_are_bounded_too_and_a_sweep_names_its_child(client, api, cohort, db_session, web_redis):
    _refused(
        _post(client, api["root"], "train", {"data": "/d", "depth": 1000}), "depth", db_session, web_redis
    )
    sweep = {"data": DATASET, "grid": {"batch_size": [8, 10**9]}}
    fragment = "sweep child 2 (batch_size=1000000000): batch_size must be from 1 to 256"
    _refused(_post(client, api["alice"], "sweep", sweep), fragment, db_session, web_redis)
    crossval = {"data": DATASET, "folds": 3, "base": {"device": "meta"}}
    _refused(
        _post(client, api["alice"], "crossval", crossval), "crossval base: device", db_session, web_redis
    )


def test_unknown_segment_and_evaluate_params_are_400_naming_them(client, api, cohort, db_session, web_redis):
    segment = _post(client, api["root"], "segment", {"study_dir": "/d/s1", "epochs": 3, "colour": "red"})
    _refused(
        segment,
        "unknown segment parameter(s): colour, epochs; expected study_dir, model, tta",
        db_session,
        web_redis,
    )
    evaluate = _post(client, api["alice"], "evaluate", {"data": DATASET, "batch_size": 8})
    _refused(
        evaluate, "unknown evaluate parameter(s): batch_size; expected data, study_dir", db_session, web_redis
    )
    accepted = _post(client, api["alice"], "evaluate", {"data": DATASET, "tta": True})
    assert accepted.status_code == 202, accepted.json


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("config_hash", "0123abcd"),
        ("mlflow_parent_run_id", "abc"),
        ("champion_eligible", True),
        ("dataset", "x"),
    ],
)
def test_server_owned_params_from_a_client_are_400(name, value, client, api, cohort, db_session, web_redis):
    response = _post(client, api["alice"], "train", {"data": DATASET, name: value})
    _refused(response, f"params.{name} is set by the server; do not send it", db_session, web_redis)


def test_a_forged_hash_of_another_users_future_sweep_child_is_refused(
    client, api, cohort, db_session, web_redis
):
    """Item 4: B plants a train job under the config_hash of A's next sweep's first child."""
    plan = {"data": cohort, "grid": {"lr": [1e-3, 3e-4]}, "base": {"epochs": 1}}
    (_values, child), *_ = sweep_children(plan)
    forged = {k: v for k, v in child.items() if k != "data"} | {"data": DATASET}
    _refused(
        _post(client, api["bob"], "train", forged),
        "params.config_hash is set by the server",
        db_session,
        web_redis,
    )
    nested = {"data": DATASET, "mlflow_parent_run_id": "someone-elses-run"}
    _refused(_post(client, api["bob"], "train", nested), "params.mlflow_parent_run_id", db_session, web_redis)

    sweep = _post(client, api["alice"], "sweep", {**plan, "data": DATASET})
    assert sweep.status_code == 202, sweep.json
    stored = db_session.get(Job, sweep.json["id"]).params
    assert stored["data"] == cohort and stored["dataset"] == DATASET and "config_hash" not in stored


@pytest.fixture
def three_per_user(monkeypatch, web_settings):
    monkeypatch.setenv("BMSEG_MAX_ACTIVE_JOBS_PER_USER", "3")
    get_settings.cache_clear()
    yield 3
    get_settings.cache_clear()


def test_the_fourth_active_job_of_a_user_is_429_until_one_ends(
    three_per_user, client, api, cohort, db_session, web_redis
):
    train = {"data": DATASET, "epochs": 1}
    ids = []
    for _ in range(3):
        response = _post(client, api["alice"], "train", train)
        assert response.status_code == 202, response.json
        ids.append(response.json["id"])

    refused = _post(client, api["alice"], "train", train)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json["error"] == (
        "you already have 3 queued or running jobs, the most allowed per user (3); "
        "wait for one to finish or cancel one, then submit again"
    )
    assert _count(db_session) == 3 and web_redis.llen("gpu") == 3

    assert _post(client, api["bob"], "train", train).status_code == 202  # another user: a limit of their own
    for _ in range(4):  # admins are not limited
        assert _post(client, api["root"], "train", train).status_code == 202

    assert client.post(f"/api/v1/jobs/{ids[0]}/cancel", headers=api["alice"]).status_code == 200
    again = _post(client, api["alice"], "train", train)
    assert again.status_code == 202, again.json
    assert _post(client, api["alice"], "train", train).status_code == 429


def test_the_dashboard_form_shows_the_limit_with_429(
    three_per_user, signed_in, client, api, cohort, db_session
):
    for _ in range(3):
        assert _post(client, api["alice"], "train", {"data": DATASET}).status_code == 202
    form = {"csrf_token": signed_in.csrf, "type": "train", "arch": "unet", "epochs": "2", "dataset": DATASET}
    page = signed_in.post("/jobs", data=form)
    assert page.status_code == 429 and int(page.headers["Retry-After"]) > 0
    assert "You already have 3 queued or running jobs, the most allowed per user (3)" in page.text
    assert _count(db_session) == 3
