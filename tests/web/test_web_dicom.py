"""DICOM through the web: a zip of a study's MR series posted to the API (or the dashboard's form) is
answered 202 with an ingest job, which imports it into the uploader's group under the pseudonym given
(no PHI in any stored file); bad archives fail the job with one line (or get a 4xx at once where the web
can tell cheaply) and leave no row and no file; another group's user sees nothing of it. A segmentation's
RTSTRUCT and DICOM-SEG are offered on the study page.

The ingest job runs in this process through :func:`bmcore.jobs.runner.run_job` (the worker's code, without
Celery: tests/worker/test_ingest.py runs it through a real worker).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bmcore.db import Group, Job, Patient, Study, User

from .conftest import synthetic_study
from .dicom_zips import (
    bomb_zip,
    mr_study_zip,
    phi_found,
    record_dicom_segmentation,
    text_zip,
    traversal_zip,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

SHAPE = (32, 32, 16)
# A second post-contrast T1 beside series 9 ("T1 MPRAGE POST GD"): the rules cannot choose between them.
AMBIGUOUS = (
    {
        "number": 10,
        "description": "t1_vibe_tra_post Gd",
        "volume": "t1ce",
        "echo_time": 2.1,
        "repetition_time": 5.0,
        "contrast_agent": "GADOBUTROL",
    },
)


@pytest.fixture
def neuro(db_session, users) -> str:
    """Group ``neuro`` with alice as its only member (bob is in no group)."""
    group = Group(name="neuro")
    group.members.append(db_session.get(User, users.alice.id))
    db_session.add(group)
    db_session.commit()
    return "neuro"


def study_zip(extra=(), ct: bool = False) -> bytes:
    return mr_study_zip(synthetic_study(shape=SHAPE), extra=extra, ct=ct)


def post_dicom(client, api, archive: bytes, user: str = "alice", content_type="application/zip", **fields):
    data = {"patient_id": "PSEUDO-7", **fields, "dicom": (io.BytesIO(archive), "export.zip", content_type)}
    return client.post("/api/v1/studies", data=data, headers=api[user], content_type="multipart/form-data")


def run_ingest(job_id: str) -> str | None:
    from bmcore.jobs.runner import run_job  # lazy: the worker's side, only where a test runs a job

    return run_job(job_id, worker_host="test")


def counts(session) -> tuple[int, int]:
    session.expire_all()
    return (
        session.scalar(select(func.count()).select_from(Study)),
        session.scalar(select(func.count()).select_from(Patient)),
    )


def leftovers(app) -> list[str]:
    uploads = Path(app.config["UPLOADS_DIR"])
    return sorted(p.relative_to(uploads).as_posix() for p in uploads.rglob("*")) if uploads.exists() else []


# ----------------------------------------------------------------------------------------- accepted


def test_a_dicom_zip_is_imported_into_the_uploaders_group_without_phi(
    client, api, app, db_session, neuro, tmp_path
):
    archive_bytes = study_zip()
    zipfile.ZipFile(io.BytesIO(archive_bytes)).extractall(tmp_path / "source")
    assert phi_found(tmp_path / "source")  # the source headers carry PHI (the check below can see it)
    response = post_dicom(client, api, archive_bytes, study_uid="DCM001", group=neuro)

    assert response.status_code == 202, response.json
    queued = response.json
    assert queued["type"] == "ingest" and queued["status"] == "queued"
    assert response.headers["Location"] == queued["status_url"] == f"/api/v1/jobs/{queued['id']}"
    assert {k: v for k, v in queued["params"].items() if k != "archive"} == {
        "patient_id": "PSEUDO-7",
        "study_uid": "DCM001",
        "group": "neuro",
    }
    stored_as = queued["params"]["archive"]  # a server-owned name under the uploads folder, not the client's
    assert stored_as.startswith(".incoming-dicom-") and stored_as.endswith("/archive.zip")
    archive = Path(app.config["UPLOADS_DIR"]) / stored_as
    assert archive.is_file()
    assert counts(db_session) == (0, 0)

    assert run_ingest(queued["id"]) == "succeeded"
    job = client.get(queued["status_url"], headers=api["alice"]).json
    assert job["status"] == "succeeded", job["error"]
    metrics = job["result"]["metrics"]
    assert metrics["study_uid"] == "DCM001" and metrics["group"] == "neuro"
    assert {m: metrics["series"][m] for m in ("t1", "t1ce", "t2", "flair")} == {
        "t1": 3,
        "t2": 5,
        "flair": 7,
        "t1ce": 9,
    }

    listed = client.get("/api/v1/studies", headers=api["alice"]).json["studies"]
    assert [(s["id"], s["study_uid"], s["patient_id"], s["group"]) for s in listed] == [
        (metrics["study_id"], "DCM001", "PSEUDO-7", "neuro")
    ]
    assert listed[0]["shape"] == list(SHAPE) and listed[0]["spacing"] == [1.5, 1.5, 3.0]
    assert sorted(listed[0]["modalities"]) == ["flair", "t1", "t1ce", "t2"]

    study = db_session.get(Study, metrics["study_id"])
    assert (
        study.owner_id == db_session.scalars(select(User.id).where(User.email == "alice@example.org")).one()
    )
    folder = Path(study.directory)
    assert folder == Path(app.config["UPLOADS_DIR"]) / "DCM001"
    assert (folder / "dicom_source.json").is_file()
    assert phi_found(folder) == []
    assert leftovers(app) == sorted([f"DCM001/{p.name}" for p in folder.iterdir()] + ["DCM001"])
    assert not archive.exists()


def test_another_groups_user_sees_nothing_of_the_import(client, api, app, db_session, neuro):
    queued = post_dicom(client, api, study_zip(), study_uid="DCM002", group=neuro).json
    assert run_ingest(queued["id"]) == "succeeded"
    study_id = client.get(queued["status_url"], headers=api["alice"]).json["result"]["metrics"]["study_id"]

    assert client.get(f"/api/v1/studies/{study_id}", headers=api["alice"]).status_code == 200
    refused = client.get(f"/api/v1/studies/{study_id}", headers=api["bob"])
    assert refused.status_code == 404 and refused.json == {"error": f"unknown study id: {study_id}"}
    assert client.get("/api/v1/studies", headers=api["bob"]).json["studies"] == []
    assert client.get(queued["status_url"], headers=api["bob"]).status_code == 404
    assert client.get("/api/v1/patients", headers=api["bob"]).json["patients"] == []


def test_ambiguous_series_fail_the_job_naming_them_and_a_map_resolves_them(
    client, api, app, db_session, neuro
):
    archive = study_zip(extra=AMBIGUOUS)
    first = post_dicom(client, api, archive, study_uid="DCM003", group=neuro).json
    assert run_ingest(first["id"]) == "failed"
    error = client.get(first["status_url"], headers=api["alice"]).json["error"]
    assert "\n" not in error and 'series 9 "T1 MPRAGE POST GD"' in error and "series 10" in error, error
    assert counts(db_session) == (0, 0) and leftovers(app) == []

    second = post_dicom(client, api, archive, study_uid="DCM003", group=neuro, map="9=t1ce").json
    assert second["params"]["map"] == {"9": "t1ce"}
    assert run_ingest(second["id"]) == "succeeded"
    metrics = client.get(second["status_url"], headers=api["alice"]).json["result"]["metrics"]
    assert metrics["series"]["t1ce"] == 9 and metrics["series"]["unplaced"] == [10]
    assert counts(db_session) == (1, 1)


# ----------------------------------------------------------------------------------------- refused by the job


BAD_ARCHIVES = {
    "no DICOM at all": (text_zip, ("no DICOM image series",)),
    "no MR series": (lambda: study_zip(ct=True), ("no MR series",)),
    "path traversal": (lambda: traversal_zip(study_zip()), ("path traversal",)),
    "zip bomb": (bomb_zip, ("ratio",)),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_a_bad_archive_fails_its_job_with_one_line_and_leaves_nothing(
    case, client, api, app, db_session, neuro
):
    make, words = BAD_ARCHIVES[case]
    response = post_dicom(client, api, make(), study_uid="BAD1", group=neuro)
    assert response.status_code == 202, response.json

    assert run_ingest(response.json["id"]) == "failed"
    job = client.get(response.json["status_url"], headers=api["alice"]).json
    assert job["status"] == "failed" and "\n" not in job["error"]
    assert all(word in job["error"] for word in words), job["error"]
    assert "Traceback" not in job["error"] and str(app.config["UPLOADS_DIR"]) not in job["error"]
    assert counts(db_session) == (0, 0)
    assert leftovers(app) == []


# ----------------------------------------------------------------------------------------- refused at once


def _refused(response, status: int, fragment: str, app, db_session) -> None:
    assert response.status_code == status, response.json
    assert fragment in response.json["error"], response.json
    assert counts(db_session) == (0, 0)
    assert db_session.scalar(select(func.count()).select_from(Job)) == 0
    assert leftovers(app) == []


@pytest.mark.parametrize(
    "archive, fields, status, fragment",
    [
        (b"this is not a zip file at all", {}, 400, "dicom: not a zip archive"),
        (b"PK\x03\x04 but then nothing a zip holds", {}, 400, "not a readable zip archive"),
        (b"", {}, 400, "the file is empty"),
        (None, {"map": "5=t1ce, banana"}, 400, "map must read like 5=t1ce"),
        (None, {"map": "5=t1ce, 6=t1ce"}, 400, "t1ce is given to more than one series"),
        (None, {"map": "5=pd"}, 400, "must map to one of"),
        (None, {"patient_id": "Mustermann, Erika"}, 400, "patient_id must be"),
        (None, {"group": "elsewhere"}, 400, "not a group of yours: elsewhere"),
    ],
)
def test_what_the_web_can_tell_cheaply_is_refused_at_once(
    archive, fields, status, fragment, client, api, app, db_session, neuro
):
    body = archive if archive is not None else study_zip()
    _refused(post_dicom(client, api, body, **fields), status, fragment, app, db_session)


def test_an_empty_zip_and_a_non_zip_content_type_are_refused(client, api, app, db_session, neuro):
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()
    _refused(post_dicom(client, api, empty.getvalue()), 400, "the zip archive is empty", app, db_session)
    refused = post_dicom(client, api, study_zip(), content_type="image/png")
    _refused(refused, 415, "is not a zip archive", app, db_session)


def test_dicom_and_nifti_files_together_are_refused(client, api, app, db_session, neuro, study_files):
    files = study_files()
    data = {
        "patient_id": "P1",
        "dicom": (io.BytesIO(study_zip()), "export.zip", "application/zip"),
        "t1": (io.BytesIO(files["t1"].read_bytes()), "t1.nii.gz", "application/gzip"),
    }
    response = client.post(
        "/api/v1/studies", data=data, headers=api["alice"], content_type="multipart/form-data"
    )
    _refused(response, 400, "not both (also got t1)", app, db_session)


def test_an_existing_study_uid_is_a_conflict_before_anything_is_queued(
    client, api, app, db_session, neuro, upload, study_files
):
    assert upload(study_files(), study_uid="TAKEN").status_code == 201
    response = post_dicom(client, api, study_zip(), study_uid="TAKEN", group=neuro)
    assert response.status_code == 409 and response.json == {"error": "a study TAKEN already exists"}
    assert db_session.scalar(select(func.count()).select_from(Job)) == 0
    assert [p for p in leftovers(app) if not p.startswith("TAKEN")] == []


def test_an_archive_over_the_upload_cap_is_413_and_kept_nowhere(make_app, users, db_session):
    from bmcore.accounts import create_token
    from bmcore.db import session_factory

    app = make_app(MAX_CONTENT_LENGTH=50_000)
    with session_factory(app.config["DATABASE_URL"])() as session:
        token = create_token(session, users.alice.email, "small")
    response = post_dicom(app.test_client(), {"alice": {"Authorization": f"Bearer {token}"}}, study_zip())
    _refused(response, 413, "larger than the server accepts", app, db_session)


def test_a_client_cannot_submit_or_forge_an_ingest_job(client, api, app, db_session, neuro):
    body = {"type": "ingest", "params": {"patient_id": "P", "study_uid": "S", "group": "neuro"}}
    refused = client.post("/api/v1/jobs", json=body, headers=api["alice"])
    assert refused.status_code == 400 and "type must be one of" in refused.json["error"]
    body = {"type": "segment", "params": {"archive": "/etc/passwd"}}
    forged = client.post("/api/v1/jobs", json=body, headers=api["alice"])
    assert forged.status_code == 400 and forged.json == {
        "error": "params.archive is set by the server; do not send it"
    }
    assert db_session.scalar(select(func.count()).select_from(Job)) == 0


def test_ingest_params_are_typed_and_bounded():
    from bmcore.jobs.errors import JobParamsError
    from bmcore.jobs.params import validate_job

    good = {"patient_id": "P1", "study_uid": "S1", "group": "neuro", "map": {5: "t1ce", "07": "flair"}}
    stored = validate_job("ingest", good, internal={"archive": ".incoming-dicom-x_1/archive.zip"})
    assert stored["map"] == {"5": "t1ce", "7": "flair"}
    for params, internal, message in [
        (good, {}, "needs the uploaded archive"),
        (good | {"archive": "x/a.zip"}, {"archive": "x/a.zip"}, "params.archive is set by the server"),
        (good | {"study_dir": "/x"}, {"archive": "x/a.zip"}, "unknown ingest parameter(s): study_dir"),
        (good | {"patient_id": "../x"}, {"archive": "x/a.zip"}, "patient_id must be"),
        (good | {"group": ""}, {"archive": "x/a.zip"}, "params.group must be"),
        (good | {"map": {"x": "t1"}}, {"archive": "x/a.zip"}, "series numbers are whole numbers"),
        (good | {"map": {str(n): "t1" for n in range(40)}}, {"archive": "x/a.zip"}, "at most 32"),
        (good, {"archive": "/data/uploads/x/archive.zip"}, "internal parameter archive"),
        (good, {"archive": "../../etc/archive.zip"}, "internal parameter archive"),
    ]:
        with pytest.raises(JobParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate_job("ingest", params, internal=internal)


# ----------------------------------------------------------------------------------------- dashboard


def test_the_dashboard_form_queues_an_import_and_offers_a_series_map(signed_in, app, db_session, neuro):
    page = signed_in.get("/studies").text
    assert 'id="dicom-form"' in page and 'name="dicom"' in page and 'name="map"' in page

    data = {
        "patient_id": "PSEUDO-9",
        "study_uid": "DASHDCM",
        "map": "9 = t1ce",
        "csrf_token": signed_in.csrf,
        "dicom": (io.BytesIO(study_zip()), "export.zip", "application/zip"),
    }
    response = signed_in.post("/studies", data=data, content_type="multipart/form-data")
    assert response.status_code == 303
    job = db_session.scalars(select(Job)).one()
    assert response.headers["Location"] == f"/jobs/{job.id}"
    assert job.type == "ingest" and job.params["map"] == {"9": "t1ce"}
    assert run_ingest(job.id) == "succeeded"
    assert "DASHDCM" in signed_in.get("/studies").text
    job_page = signed_in.get(f"/jobs/{job.id}")
    assert job_page.status_code == 200 and "succeeded" in job_page.text


def test_the_dashboard_form_shows_why_an_archive_is_refused(signed_in, app, db_session, neuro):
    data = {
        "patient_id": "PSEUDO-9",
        "map": "five=t1ce",
        "csrf_token": signed_in.csrf,
        "dicom": (io.BytesIO(b"not a zip"), "export.zip", "application/zip"),
    }
    response = signed_in.post("/studies", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "Upload refused" in response.text and "map must read like" in response.text
    assert 'value="five=t1ce"' in response.text  # the form keeps what was typed
    assert counts(db_session) == (0, 0) and leftovers(app) == []


# ----------------------------------------------------------------------------------------- DICOM outputs


def test_the_segment_form_and_the_api_ask_for_dicom_outputs(signed_in, client, api, stored_study, db_session):
    assert 'name="dicom"' in signed_in.get("/jobs/new?type=segment").text
    form = {
        "type": "segment",
        "study_id": str(stored_study["id"]),
        "dicom": "1",
        "csrf_token": signed_in.csrf,
    }
    form["model"] = "models:/bmseg-unet@champion"
    assert signed_in.post("/jobs", data=form).status_code == 303
    body = {"type": "segment", "params": {"dicom": True}, "study_id": stored_study["id"]}
    queued = client.post("/api/v1/jobs", json=body, headers=api["alice"])
    assert queued.status_code == 202 and queued.json["params"]["dicom"] is True
    jobs = db_session.scalars(select(Job).order_by(Job.created_at)).all()
    assert [(j.type, j.params.get("dicom")) for j in jobs] == [("segment", True), ("segment", True)]

    page = signed_in.get(f"/studies/{stored_study['id']}").text  # no DICOM outputs yet: a way to ask
    assert 'id="segment-dicom-form"' in page and 'id="no-dicom"' in page and "rtstruct-download" not in page


def test_the_study_page_offers_the_rtstruct_and_dicom_seg_of_the_newest_dicom_segmentation(
    signed_in, app, stored_study, users, db_session, fake_segment
):
    import pydicom

    job_id = record_dicom_segmentation(
        db_session, app.config["RESULTS_DIR"], stored_study["id"], users.alice.id
    )
    fake_segment(stored_study["id"], users.alice.id)  # a newer segmentation without DICOM outputs
    page = signed_in.get(f"/studies/{stored_study['id']}").text
    links = {
        kind: f"/jobs/{job_id}/artifacts/S001_{suffix}?download=1"
        for kind, suffix in (
            ("rtstruct", "rtstruct"),
            ("dicom-seg", "dicom_seg"),
            ("mr-series", "t1ce_dicom"),
        )
    }
    for kind, href in links.items():
        assert f'id="{kind}-download" href="{href}"' in page, kind
    for kind, modality in (("rtstruct", "RTSTRUCT"), ("dicom-seg", "SEG")):
        response = signed_in.get(links[kind])
        assert response.status_code == 200 and "attachment" in response.headers["Content-Disposition"]
        dataset = pydicom.dcmread(io.BytesIO(response.data))
        assert dataset.Modality == modality and str(dataset.PatientName).rstrip("^") == "P001"
    series = zipfile.ZipFile(io.BytesIO(signed_in.get(links["mr-series"]).data))
    assert len(series.namelist()) == SHAPE[2]

    bob = app.test_client()
    from .conftest import sign_in

    sign_in(bob, users.bob.email)
    assert bob.get(links["rtstruct"]).status_code == 404  # jobs are private


@pytest.mark.browser
def test_a_browser_downloads_the_rtstruct_and_the_dicom_seg_from_the_study_page(
    app, users, stored_study, db_session, tmp_path
):
    """Headless Chromium signs in, opens a segmented study's page and downloads both files."""
    import threading

    import pydicom
    from werkzeug.serving import make_server

    from .conftest import PASSWORD
    from .test_web_browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (install it with: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    record_dicom_segmentation(db_session, app.config["RESULTS_DIR"], stored_study["id"], users.alice.id)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(accept_downloads=True).new_page()
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(f"{base}/studies/{stored_study['id']}")
                page.fill("#email", users.alice.email)
                page.fill("#password", PASSWORD)
                page.click("button[type=submit]")
                sync_api.expect(page.locator("#dicom-downloads")).to_contain_text("Download RTSTRUCT")
                for selector, modality in (
                    ("#rtstruct-download", "RTSTRUCT"),
                    ("#dicom-seg-download", "SEG"),
                ):
                    with page.expect_download() as caught:
                        page.click(selector)
                    download = caught.value
                    target = tmp_path / download.suggested_filename
                    download.save_as(target)
                    assert pydicom.dcmread(target).Modality == modality, selector
                assert errors == []
            finally:
                browser.close()
    finally:
        server.shutdown()
        thread.join(timeout=10)
