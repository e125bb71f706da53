"""Issue #16 items 2 and 3 through the API and the dashboard: a non-admin's job reads a registered data set,
a registry model or their own checkpoint, never a raw path (and no answer tells whether a path exists);
moving ``champion`` is an admin's privilege, automatic only on a promotable data set, every move shown.

Real SQLite and Redis (the queued jobs' messages), no worker: what is checked is what the server stores.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from bmcore.accounts import create_token, create_user
from bmcore.datasets import add_dataset
from bmcore.db import AliasMove, Job, Result, Study
from bmcore.db.groups import group_named
from services.web import schemas
from services.web.job_inputs import DATA_REFUSED, MODEL_REFUSED, SPLIT_REFUSED, STUDY_DIR_REFUSED

from .conftest import PASSWORD, form_csrf, sign_in

CHAMPION = "models:/bmseg-unet@champion"


@pytest.fixture
def world(app, db_session, users, api, tmp_path, web_redis) -> SimpleNamespace:
    """bob in group lab-b, carol a clinician; data sets shared (promotable), plain, b-only (lab-b)."""
    carol = create_user(db_session, "carol@example.org", PASSWORD, role="clinician")
    api["carol"] = {"Authorization": f"Bearer {create_token(db_session, carol.email, 'tests')}"}
    bob = db_session.get(type(carol), users.bob.id)
    lab = group_named(db_session, "lab-b")
    lab.members.append(bob)
    db_session.commit()
    folders = {}
    for name, group, promotable in (
        ("shared", None, True),
        ("plain", None, False),
        ("b-only", "lab-b", False),
    ):
        folders[name] = tmp_path / "datasets" / name
        folders[name].mkdir(parents=True)
        add_dataset(db_session, name, folders[name], group=group, promotable=promotable)
    return SimpleNamespace(folders=folders, carol_id=carol.id)


def post_job(client, headers, job_type: str, params: dict, study_id: int | None = None):
    body = {"type": job_type, "params": params} | ({"study_id": study_id} if study_id else {})
    return client.post("/api/v1/jobs", json=body, headers=headers)


def stored(db_session, job_id: str) -> dict:
    db_session.expire_all()
    return db_session.get(Job, job_id).params


def job_count(db_session) -> int:
    db_session.expire_all()
    return db_session.scalar(select(func.count()).select_from(Job))


def train_job(db_session, app, owner_id: int, status: str = "succeeded") -> tuple[str, Path]:
    """A train job of ``owner_id`` with a checkpoint file under the results folder."""
    job = Job(type="train", params={"data": "/d"}, status=status, owner_id=owner_id, message=status)
    db_session.add(job)
    db_session.commit()
    checkpoint = Path(app.config["RESULTS_DIR"]) / "jobs" / job.id / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    db_session.add(Result(job_id=job.id, metrics={}, artifacts={"checkpoint": str(checkpoint)}))
    db_session.commit()
    return job.id, checkpoint


# ------------------------------------------------------------------------------------------ item 2


def test_a_researcher_cannot_segment_another_folder_or_an_admins_checkpoint(
    client, api, db_session, app, users, world, stored_study, upload, study_files
):
    own = upload(study_files("bob"), patient_id="P002", study_uid="B001", user="bob").json["id"]
    alices_folder = db_session.get(Study, stored_study["id"]).directory
    refused = post_job(client, api["bob"], "segment", {"study_dir": alices_folder})
    assert refused.status_code == 400 and refused.json["error"] == STUDY_DIR_REFUSED
    root_job, best = train_job(db_session, app, users.root.id)
    for model in (str(best), f"job:{root_job}", "job:0123456789abcdef", "/etc/passwd"):
        answer = post_job(client, api["bob"], "segment", {"model": model}, study_id=own)
        assert answer.status_code == 400 and answer.json["error"] == MODEL_REFUSED, model
    assert job_count(db_session) == 1  # root's train job only


def test_evaluate_answers_the_same_whatever_the_path_is(
    client, api, db_session, web_settings, tmp_path, world
):
    empty = tmp_path / "no-studies"
    empty.mkdir()
    database = web_settings.database_url.removeprefix("sqlite:///")
    assert Path(database).is_file()
    answers = set()
    for data in (str(tmp_path / "missing"), str(empty), "/etc/passwd", database):
        response = post_job(client, api["alice"], "evaluate", {"data": data, "model": CHAMPION})
        assert response.status_code == 400
        answers.add(response.json["error"])
    assert answers == {DATA_REFUSED}
    assert job_count(db_session) == 0


def test_a_data_set_name_is_replaced_by_its_path_and_recorded(client, api, db_session, world):
    response = post_job(client, api["alice"], "evaluate", {"data": "shared", "model": CHAMPION})
    assert response.status_code == 202, response.json
    params = stored(db_session, response.json["id"])
    assert params["data"] == str(world.folders["shared"]) and params["dataset"] == "shared"
    mine = post_job(client, api["bob"], "evaluate", {"data": "b-only", "model": CHAMPION})
    assert mine.status_code == 202 and stored(db_session, mine.json["id"])["dataset"] == "b-only"


def test_another_groups_data_set_is_refused_as_an_unknown_name(client, api, db_session, world):
    other = post_job(client, api["alice"], "train", {"data": "b-only", "epochs": 1})
    unknown = post_job(client, api["alice"], "train", {"data": "no-such-set", "epochs": 1})
    assert other.status_code == unknown.status_code == 400
    assert other.json["error"] == unknown.json["error"] == DATA_REFUSED
    assert job_count(db_session) == 0


def test_own_checkpoints_and_object_splits(client, api, db_session, app, users, world):
    job_id, best = train_job(db_session, app, users.alice.id)
    response = post_job(client, api["alice"], "evaluate", {"data": "plain", "model": f"job:{job_id}"})
    assert response.status_code == 202, response.json
    assert stored(db_session, response.json["id"])["model"] == str(best)
    failed_id, _ = train_job(db_session, app, users.alice.id, status="failed")
    failed = post_job(client, api["alice"], "evaluate", {"data": "plain", "model": f"job:{failed_id}"})
    assert failed.status_code == 400 and failed.json["error"] == MODEL_REFUSED
    path_split = post_job(client, api["alice"], "train", {"data": "plain", "split": "/results/split.json"})
    assert path_split.status_code == 400 and path_split.json["error"] == SPLIT_REFUSED
    split = {"studies": {"train": ["a", "b"], "val": ["c"], "test": []}}
    as_object = post_job(client, api["alice"], "train", {"data": "plain", "epochs": 1, "split": split})
    assert as_object.status_code == 202, as_object.json


def test_clinicians_segment_with_approved_models_only(client, api, db_session, world, upload, study_files):
    study = upload(study_files("carol"), patient_id="P003", study_uid="C001", user="carol").json["id"]
    approved = post_job(client, api["carol"], "segment", {"model": CHAMPION}, study_id=study)
    assert approved.status_code == 202, approved.json
    for model in ("models:/bmseg-unet/3", "models:/bmseg-unet@staging", "job:abc", "/models/x.pt"):
        refused = post_job(client, api["carol"], "segment", {"model": model}, study_id=study)
        assert refused.status_code == 400 and "approved model" in refused.json["error"], model
    assert post_job(client, api["carol"], "train", {"data": "shared"}).status_code == 403
    assert post_job(client, api["carol"], "evaluate", {"data": "shared"}).status_code == 403


def test_the_approval_aliases_are_a_setting(client, api, world, upload, study_files, monkeypatch):
    from bmcore.config import get_settings

    study = upload(study_files("carol"), patient_id="P003", study_uid="C001", user="carol").json["id"]
    monkeypatch.setenv("BMSEG_APPROVAL_ALIASES", '["approved"]')
    get_settings.cache_clear()
    default = post_job(client, api["carol"], "segment", {}, study_id=study)  # the default is champion
    assert default.status_code == 400 and "alias one of approved" in default.json["error"]
    assert post_job(client, api["carol"], "segment", {"model": CHAMPION}, study_id=study).status_code == 400
    approved = post_job(
        client, api["carol"], "segment", {"model": "models:/bmseg-cnn@approved"}, study_id=study
    )
    assert approved.status_code == 202, approved.json


def test_admins_keep_raw_paths_and_may_name_data_sets(client, api, db_session, world, tmp_path):
    raw = post_job(client, api["root"], "evaluate", {"data": str(tmp_path), "model": "/models/x.pt"})
    assert raw.status_code == 202, raw.json
    params = stored(db_session, raw.json["id"])
    assert params["data"] == str(tmp_path) and params["model"] == "/models/x.pt" and "dataset" not in params
    named = post_job(client, api["root"], "train", {"data": "b-only", "epochs": 1})
    assert named.status_code == 202 and stored(db_session, named.json["id"])["dataset"] == "b-only"


# ------------------------------------------------------------------------------------------ item 3


def test_only_admins_promote_a_sweeps_best(client, api, db_session, world):
    sweep = {"data": "shared", "grid": {"lr": [0.001, 0.0003]}, "base": {"epochs": 1}}
    refused = post_job(client, api["alice"], "sweep", sweep | {"promote_best": True})
    assert refused.status_code == 403 and "promote" in refused.json["error"]
    assert job_count(db_session) == 0
    assert post_job(client, api["alice"], "sweep", sweep).status_code == 202
    assert post_job(client, api["root"], "sweep", sweep | {"promote_best": True}).status_code == 202


def test_champion_eligible_only_on_a_promotable_data_set(client, api, db_session, world, tmp_path):
    cases = (
        ("alice", "plain", False),
        ("alice", "shared", True),
        ("root", str(tmp_path), False),  # a raw path never auto-promotes, an admin's neither
        ("root", "shared", True),
    )
    for user, data, eligible in cases:
        response = post_job(client, api[user], "train", {"data": data, "epochs": 1})
        assert response.status_code == 202, response.json
        assert stored(db_session, response.json["id"])["champion_eligible"] is eligible, (user, data)
    sweep = {"grid": {"lr": [0.001, 0.0003]}, "base": {"epochs": 1}}
    for data, eligible in (("plain", False), ("shared", True)):  # a sweep's children inherit it
        response = post_job(client, api["alice"], "sweep", sweep | {"data": data})
        assert response.status_code == 202, response.json
        assert stored(db_session, response.json["id"])["champion_eligible"] is eligible
    crossval = post_job(client, api["alice"], "crossval", {"data": "plain", "folds": 2})
    assert stored(db_session, crossval.json["id"])["champion_eligible"] is False
    forged = post_job(client, api["alice"], "train", {"data": "plain", "champion_eligible": True})
    assert forged.status_code == 400 and "champion_eligible" in forged.json["error"]


# ------------------------------------------------------------------------------- listing, dashboard


def test_datasets_lists_what_each_user_may_use(client, api, world):
    def names(user):
        response = client.get("/api/v1/datasets", headers=api[user])
        assert response.status_code == 200, response.json
        schemas.DatasetList.model_validate(response.json)
        return response.json["datasets"]

    assert names("alice") == [
        {"name": "plain", "group": None, "promotable": False},
        {"name": "shared", "group": None, "promotable": True},
    ]
    assert [d["name"] for d in names("bob")] == ["b-only", "plain", "shared"]
    assert names("root")[0] == {
        "name": "b-only",
        "group": "lab-b",
        "promotable": False,
        "path": str(world.folders["b-only"]),
    }
    assert names("carol") == []


def test_the_job_form_offers_data_sets_not_paths(app, db_session, users, world):
    client = app.test_client()
    assert sign_in(client, users.alice.email).status_code == 303
    page = client.get("/jobs/new?type=train").text
    assert '<select id="dataset" name="dataset">' in page and 'value="shared"' in page
    assert 'value="b-only"' not in page and 'id="data"' not in page and 'name="promote_best"' not in page
    form = {"type": "train", "dataset": "plain", "arch": "unet", "epochs": "1", "csrf_token": form_csrf(page)}
    done = client.post("/jobs", data=form)
    assert done.status_code == 303
    job = db_session.scalars(select(Job).order_by(Job.created_at.desc())).first()
    assert job.params["dataset"] == "plain" and job.params["champion_eligible"] is False
    forged = client.post("/jobs", data=form | {"type": "evaluate", "dataset": "", "data": "/etc/passwd"})
    assert forged.status_code == 400 and "must name a data set you may use" in forged.text
    admin = app.test_client()
    assert sign_in(admin, users.root.email).status_code == 303
    assert 'id="data"' in admin.get("/jobs/new?type=train").text  # admins may still give a path


def test_the_alias_history_is_shown_in_the_api_and_on_the_models_page(client, api, db_session, signed_in):
    db_session.add_all(
        [
            AliasMove(
                model_name="bmseg-unet", alias="champion", from_version=None, to_version=1, moved_by="job x"
            ),
            AliasMove(
                model_name="bmseg-unet",
                alias="champion",
                from_version=1,
                to_version=2,
                moved_by="root@example.org",
                reason="val_lesion_dice 0.41 > 0.33 of v1",
            ),
        ]
    )
    db_session.commit()
    response = client.get("/api/v1/models", headers=api["alice"])
    assert response.status_code == 200
    schemas.ModelList.model_validate(response.json)
    unet = response.json["models"][0]
    assert [(m["from_version"], m["to_version"], m["moved_by"]) for m in unet["history"]] == [
        (1, 2, "root@example.org"),
        (None, 1, "job x"),
    ]
    assert response.json["models"][1]["history"] == []
    page = signed_in.get("/models").text
    assert 'id="history-bmseg-unet"' in page and "root@example.org" in page
    assert "val_lesion_dice 0.41 &gt; 0.33 of v1" in page
