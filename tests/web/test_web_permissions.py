"""Ownership between users (issue #16, item 1 and the 403-vs-404 part of item 10): pseudonyms are scoped
per group, groups share patients and their studies, jobs stay private, and whatever a user may not see
answers 404 exactly as an unknown id does, on the API and the dashboard. Real app, SQLite and Redis.

alice and bob are researchers in no group (each uploads into a personal group), root is an admin.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bmcore.db import Group, Patient, Study, User

from .conftest import multipart, sign_in

NOTE = {"note": "seen in clinic, prior WBRT"}


def patients_of(client, headers) -> list[dict]:
    response = client.get("/api/v1/patients", headers=headers)
    assert response.status_code == 200
    return response.json["patients"]


def make_group(db_session, name: str, *members: int) -> None:
    group = Group(name=name)
    group.members.extend(db_session.get(User, user_id) for user_id in members)
    db_session.add(group)
    db_session.commit()


def study_count(db_session) -> int:
    db_session.expire_all()
    return db_session.scalar(select(func.count()).select_from(Study))


# ----------------------------------------------------------------------------------------- item 1


def test_another_users_upload_under_the_same_pseudonym_is_a_separate_patient(
    client, api, users, upload, study_files
):
    """The reproduction: A's pat-a with a clinical note; B uploads pat-a and gets a patient of their own."""
    first = upload(study_files("a"), patient_id="pat-a", study_uid="A001")
    assert first.status_code == 201 and first.json["group"] == f"user-{users.alice.id}"
    (alices,) = patients_of(client, api["alice"])
    noted = client.patch(f"/api/v1/patients/{alices['id']}", json={"clinical": NOTE}, headers=api["alice"])
    assert noted.status_code == 200

    second = upload(study_files("b", seed=3), patient_id="pat-a", study_uid="B001", user="bob")
    assert second.status_code == 201
    assert second.json["patient_id"] == "pat-a" and second.json["group"] == f"user-{users.bob.id}"
    (bobs,) = patients_of(client, api["bob"])
    assert bobs["id"] != alices["id"] and bobs["clinical"] == {} and bobs["studies"] == 1

    # Bob cannot read alice's patient: the answer is the one an unknown id gets.
    hidden = client.get(f"/api/v1/patients/{alices['id']}", headers=api["bob"])
    unknown = client.get("/api/v1/patients/99999", headers=api["bob"])
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json == {"error": f"unknown patient id: {alices['id']}"}
    assert unknown.json == {"error": "unknown patient id: 99999"}
    patched = client.patch(
        f"/api/v1/patients/{alices['id']}", json={"clinical": {"x": 1}}, headers=api["bob"]
    )
    assert patched.status_code == 404 and patched.json == {"error": f"unknown patient id: {alices['id']}"}

    # Nor is it in bob's lists or cohort.
    assert "seen in clinic" not in client.get("/api/v1/patients", headers=api["bob"]).text
    assert [s["study_uid"] for s in client.get("/api/v1/studies", headers=api["bob"]).json["studies"]] == [
        "B001"
    ]
    cohort = client.get("/api/v1/cohort", headers=api["bob"]).json
    assert [s["study_id"] for s in cohort["studies"]] == ["B001"] and cohort["counts"]["patients"] == 1
    assert "A001" not in json.dumps(cohort)

    # Alice's own edit still works; her patient has her study only, and her note.
    again = client.patch(
        f"/api/v1/patients/{alices['id']}", json={"primary_cancer": "lung"}, headers=api["alice"]
    )
    assert again.status_code == 200 and again.json["clinical"] == NOTE
    assert [s["study_uid"] for s in again.json["studies"]] == ["A001"] and again.json["can_edit"] is True
    # The admin sees both patients called pat-a, each in its group.
    listed = {(p["pseudonym"], p["group"]) for p in patients_of(client, api["root"])}
    assert listed == {("pat-a", f"user-{users.alice.id}"), ("pat-a", f"user-{users.bob.id}")}


def test_an_imported_patient_belongs_to_the_group_named_at_import(
    client, api, users, upload, study_files, db_session, tmp_path
):
    """A patient an admin imports into group G: a non-member's upload under its pseudonym does not attach
    to it, nor lets them read or edit it; a member's upload does attach, and the member may edit it."""
    from bmcore.patients import import_metadata

    make_group(db_session, "clinic-g", users.alice.id)
    csv = tmp_path / "subjects.csv"
    csv.write_text("patient_id,primary,histology\nimp-1,breast,adenocarcinoma\n")
    import_metadata(db_session, csv, create_missing=True, group="clinic-g")
    imported = db_session.scalars(select(Patient).where(Patient.pseudonym == "imp-1")).one()
    assert imported.group.name == "clinic-g"

    outsider = upload(study_files("b"), patient_id="imp-1", study_uid="B001", user="bob")
    assert outsider.status_code == 201 and outsider.json["group"] == f"user-{users.bob.id}"
    url = f"/api/v1/patients/{imported.id}"
    assert client.get(url, headers=api["bob"]).status_code == 404
    refused = client.patch(url, json={"primary_cancer": "lung"}, headers=api["bob"])
    assert refused.status_code == 404 and refused.json == {"error": f"unknown patient id: {imported.id}"}
    db_session.expire_all()
    assert imported.primary_cancer == "breast" and imported.studies == []

    member = upload(study_files("a", seed=2), patient_id="imp-1", study_uid="A001")
    assert member.status_code == 201 and member.json["group"] == "clinic-g"  # her only group
    detail = client.get(url, headers=api["alice"]).json
    assert [s["study_uid"] for s in detail["studies"]] == ["A001"] and detail["clinical"] == {
        "histology": "adenocarcinoma"
    }
    edited = client.patch(url, json={"clinical": {"kps": 80}}, headers=api["alice"])
    assert (
        edited.status_code == 200
        and edited.json["clinical"]["kps"] == 80
        and edited.json["group"] == "clinic-g"
    )


# ----------------------------------------------------------------------------------------- groups


def test_uploads_go_into_a_group_of_the_uploader(client, api, users, upload, study_files, db_session, app):
    make_group(db_session, "lab-1", users.alice.id)
    make_group(db_session, "lab-2", users.alice.id)
    files = study_files()
    several = upload(files, study_uid="S1")
    assert several.status_code == 400
    assert several.json == {
        "error": "you belong to several groups; name one in the group field: lab-1, lab-2"
    }
    for name in ("lab-1", "no-such-group", f"user-{users.alice.id}", "bad name!"):
        refused = upload(files, study_uid="S1", user="bob", group=name)
        assert refused.status_code == 400 and refused.json == {"error": f"not a group of yours: {name}"}, name
    assert study_count(db_session) == 0 and not (Path(app.config["UPLOADS_DIR"]) / "S1").exists()

    chosen = upload(files, study_uid="S1", group="lab-2")
    assert chosen.status_code == 201 and chosen.json["group"] == "lab-2"
    personal = upload(files, study_uid="S2", user="bob")
    assert personal.status_code == 201 and personal.json["group"] == f"user-{users.bob.id}"
    by_admin = upload(files, study_uid="S3", user="root", group="lab-1")
    assert by_admin.status_code == 201 and by_admin.json["group"] == "lab-1"
    missing = upload(files, study_uid="S4", user="root", group="nope")
    assert missing.status_code == 400 and missing.json == {"error": "no group nope"}
    # Alice sees lab-1's patient the admin uploaded, and her lab-2 one; not bob's.
    assert {(p["pseudonym"], p["group"]) for p in patients_of(client, api["alice"])} == {
        ("P001", "lab-1"),
        ("P001", "lab-2"),
    }


def test_group_members_share_patients_and_studies_but_not_jobs(
    app, client, api, users, upload, study_files, db_session, fake_segment
):
    make_group(db_session, "lab", users.alice.id, users.bob.id)
    stored = upload(study_files(), patient_id="L001", study_uid="S001").json
    assert stored["group"] == "lab"
    (patient,) = patients_of(client, api["bob"])
    assert patient["pseudonym"] == "L001" and patient["studies"] == 1
    assert client.get(f"/api/v1/studies/{stored['id']}", headers=api["bob"]).status_code == 200
    edited = client.patch(f"/api/v1/patients/{patient['id']}", json={"clinical": NOTE}, headers=api["bob"])
    assert edited.status_code == 200 and edited.json["can_edit"] is True

    # Alice's segmentation of the shared study is hers: bob sees neither the job nor its mask.
    job_id = fake_segment(stored["id"], users.alice.id)
    hidden = client.get(f"/api/v1/jobs/{job_id}", headers=api["bob"])
    assert hidden.status_code == 404 and hidden.json == {"error": f"unknown job id: {job_id}"}
    assert client.get(f"/api/v1/jobs/{job_id}/artifacts/S001_seg", headers=api["bob"]).status_code == 404
    alice_cohort = client.get("/api/v1/cohort", headers=api["alice"]).json
    bob_cohort = client.get("/api/v1/cohort", headers=api["bob"]).json
    assert alice_cohort["counts"]["predicted_studies"] == 1 and bob_cohort["counts"]["predicted_studies"] == 0
    assert bob_cohort["counts"]["studies"] == 1

    bob = app.test_client()
    sign_in(bob, users.bob.email)
    page = bob.get(f"/studies/{stored['id']}")
    assert page.status_code == 200 and job_id not in page.text and 'id="mask-download"' not in page.text
    patient_page = bob.get(f"/patients/{patient['id']}")
    assert patient_page.status_code == 200 and 'id="patient-form"' in patient_page.text
    assert 'id="patient-group">lab<' in patient_page.text and job_id not in patient_page.text


# ----------------------------------------------------------------------------------------- dashboard


def test_the_dashboard_answers_404_for_what_a_user_may_not_see(
    app, client, api, users, upload, study_files, fake_segment
):
    stored = upload(study_files(), patient_id="P001", study_uid="S001").json
    (patient,) = patients_of(client, api["alice"])
    job_id = fake_segment(stored["id"], users.alice.id)
    bob = app.test_client()
    sign_in(bob, users.bob.email)
    for path, message in (
        (f"/patients/{patient['id']}", f"unknown patient id: {patient['id']}"),
        ("/patients/99999", "unknown patient id: 99999"),
        (f"/studies/{stored['id']}", f"unknown study id: {stored['id']}"),
        ("/studies/99999", "unknown study id: 99999"),
        (f"/jobs/{job_id}", f"unknown job id: {job_id}"),
        ("/jobs/0123456789abcdef", "unknown job id: 0123456789abcdef"),
    ):
        page = bob.get(path)
        assert page.status_code == 404 and message in page.text, path
    assert bob.get(f"/jobs/{job_id}.json").json == {"error": f"unknown job id: {job_id}"}
    assert bob.get(f"/jobs/{job_id}/artifacts/S001_seg").status_code == 404
    assert bob.get(f"/studies/{stored['id']}/slice.png").status_code == 404
    assert bob.get(f"/patients/{patient['id']}/volumes.png").status_code == 404
    posted = bob.post(f"/patients/{patient['id']}", data={"csrf_token": bob.csrf, "primary_cancer": "lung"})
    assert posted.status_code == 404
    assert (
        client.get(f"/api/v1/patients/{patient['id']}", headers=api["alice"]).json["primary_cancer"] is None
    )
    cohort = bob.get("/cohort")
    assert cohort.status_code == 200 and "P001" not in cohort.text and 'id="cohort-empty"' in cohort.text


def test_the_dashboard_upload_form_names_a_group(app, users, db_session, study_files):
    make_group(db_session, "lab-1", users.alice.id)
    make_group(db_session, "lab-2", users.alice.id)
    alice = app.test_client()
    sign_in(alice, users.alice.email)
    page = alice.get("/studies").text
    assert re.search(r'<select id="group" name="group" required>', page)
    assert '<option value="">choose a group</option>' in page and '<option value="lab-2"' in page

    def post(**fields):
        data = multipart(study_files(), patient_id="P001", csrf_token=alice.csrf, **fields)
        return alice.post("/studies", data=data, content_type="multipart/form-data")

    refused = post(study_uid="S1")
    assert refused.status_code == 400 and "name one in the group field: lab-1, lab-2" in refused.text
    assert 'value="P001"' in refused.text  # the form keeps what was typed
    stored = post(study_uid="S1", group="lab-2")
    assert stored.status_code == 303
    study = alice.get(stored.headers["Location"])
    assert 'id="study-group">lab-2<' in study.text
    assert study_count(db_session) == 1


def test_a_user_without_a_group_is_told_where_uploads_go(signed_in):
    page = signed_in.get("/studies").text
    assert "Your personal group" in page and '<select id="group"' not in page


# ----------------------------------------------------------------------------------------- docs


def test_the_permissions_doc_lists_what_each_role_may_do():
    """docs/permissions.md has the role × action table of ROLE_ACTIONS, mark for mark."""
    from services.web.access import ACTIONS, ROLE_ACTIONS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "permissions.md").read_text()
    header = re.search(r"^\| Action \|(.+)\|$", doc, re.MULTILINE)
    assert header, "no '| Action | ... |' table in docs/permissions.md"
    roles = [cell.strip() for cell in header.group(1).split("|")][1:]  # the second column describes it
    assert sorted(roles) == sorted(ROLE_ACTIONS)
    for action in ACTIONS:
        row = re.search(rf"^\| `{action}` \|(.+)\|$", doc, re.MULTILINE)
        assert row, f"docs/permissions.md has no row for {action}"
        marks = [cell.strip() for cell in row.group(1).split("|")][1:]
        expected = ["yes" if action in ROLE_ACTIONS[role] else "no" for role in roles]
        assert marks == expected, action


@pytest.mark.parametrize("path", ["/api/v1/studies/0", "/api/v1/patients/0", "/api/v1/jobs/" + "x" * 65])
def test_odd_ids_are_unknown_ids(client, api, path):
    response = client.get(path, headers=api["alice"])
    assert response.status_code == 404 and response.json["error"].startswith("unknown ")
