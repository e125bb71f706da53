"""The cohort overview (/cohort), the patient pages (/patients/<id>) and their JSON API, with the Flask test
client; one browser check that the cohort page's plots load in headless Chromium."""

from __future__ import annotations

import io
import re
import threading

import pytest
from PIL import Image
from sqlalchemy import select

from bmcore.reports.cohort import PLOTS

from .conftest import PASSWORD, sign_in


@pytest.fixture
def cohort_studies(upload, study_files) -> dict[str, dict]:
    """Alice's studies: patient P001 with two visits (S001, S002), P002 with one (S003)."""
    studies = {}
    for uid, patient, seed in (("S001", "P001", 0), ("S002", "P001", 1), ("S003", "P002", 2)):
        response = upload(study_files(uid, seed=seed), patient_id=patient, study_uid=uid)
        assert response.status_code == 201, response.json
        studies[uid] = response.json
    return studies


def patient_ids(client, headers) -> dict[str, int]:
    response = client.get("/api/v1/patients", headers=headers)
    assert response.status_code == 200
    return {p["pseudonym"]: p["id"] for p in response.json["patients"]}


def assert_png(response) -> Image.Image:
    assert response.status_code == 200 and response.mimetype == "image/png"
    image = Image.open(io.BytesIO(response.data))
    image.load()
    assert image.format == "PNG" and image.width > 100 and image.height > 100
    return image


# ----------------------------------------------------------------------------------------- cohort page


def test_cohort_page_renders_with_its_plots(signed_in, cohort_studies, users, fake_segment):
    fake_segment(cohort_studies["S001"]["id"], users.alice.id)
    page = signed_in.get("/cohort")
    assert page.status_code == 200
    assert 'id="count-patients">2<' in page.text and 'id="count-studies">3' in page.text
    plots = re.findall(r'<img class="curves cohort-plot" id="plot-([a-z_]+)"[^>]*src="([^"]+)"', page.text)
    assert sorted(name for name, _ in plots) == sorted(PLOTS)
    for _, src in plots:
        assert_png(signed_in.get(src.replace("&amp;", "&")))
    assert re.search(r'href="/patients/\d+"[^>]*>P001<', page.text)
    assert re.search(r'class="active">Cohort</a>', page.text)  # the nav link

    summary = signed_in.get("/cohort.json").json
    assert summary["counts"]["patients"] == 2 and summary["counts"]["studies"] == 3
    assert summary["counts"]["predicted_studies"] == 1  # the newest segment job of S001
    assert summary["class_distribution"]["predictions"]["studies"] == 1
    assert summary["primary_cancer"]["unknown"] == 2
    assert {p["patient_id"]: p["studies"] for p in summary["patients"]} == {
        "P001": ["S001", "S002"],
        "P002": ["S003"],
    }


def test_cohort_plot_route_checks_its_input(signed_in, cohort_studies):
    assert signed_in.get("/cohort/plot.png?name=nope").status_code == 400
    assert signed_in.get("/cohort/plot.png?seed=-1").status_code == 400
    assert_png(signed_in.get("/cohort/plot.png?name=split&seed=3"))
    anonymous = signed_in.application.test_client()
    assert anonymous.get("/cohort/plot.png").status_code == 401
    assert anonymous.get("/cohort").status_code == 302


def test_cohort_of_a_user_without_studies_is_empty(app, users, cohort_studies):
    client = app.test_client()
    sign_in(client, users.bob.email)
    page = client.get("/cohort")
    assert page.status_code == 200 and 'id="cohort-empty"' in page.text
    assert client.get("/cohort/plot.png").status_code == 404


def test_an_edited_primary_cancer_shows_in_the_cohort(client, api, cohort_studies, web_settings):
    ids = patient_ids(client, api["alice"])
    before = client.get("/api/v1/cohort", headers=api["alice"]).json
    assert before["primary_cancer"]["unknown"] == 2
    response = client.patch(
        f"/api/v1/patients/{ids['P001']}", json={"primary_cancer": "melanoma"}, headers=api["alice"]
    )
    assert response.status_code == 200
    after = client.get("/api/v1/cohort", headers=api["alice"]).json
    assert after["primary_cancer"]["counts"]["melanoma"] == 1 and after["primary_cancer"]["unknown"] == 1
    # A new report (the edit changed the fingerprint) that reread no label: one record per study.
    cache = web_settings.cache_dir / "cohort"
    assert len(list((cache / "reports").iterdir())) == 2
    assert len(list((cache / "records").glob("*.json"))) == 3
    assert client.get("/api/v1/cohort?seed=x", headers=api["alice"]).status_code == 400
    assert client.get("/api/v1/cohort").status_code == 401


def test_a_study_whose_folder_is_gone_is_listed_as_skipped(signed_in, cohort_studies, db_session):
    import shutil

    from bmcore.db import Study

    study = db_session.get(Study, cohort_studies["S003"]["id"])
    shutil.rmtree(study.directory)
    page = signed_in.get("/cohort")
    assert page.status_code == 200 and 'id="cohort-skipped"' in page.text and "S003" in page.text
    summary = signed_in.get("/cohort.json").json
    assert summary["counts"]["studies"] == 2 and [s["study_id"] for s in summary["skipped"]] == ["S003"]


# ----------------------------------------------------------------------------------------- patient page


def test_patient_page_lists_visits_lesions_and_jobs(
    signed_in, client, api, cohort_studies, users, fake_segment
):
    job_id = fake_segment(cohort_studies["S001"]["id"], users.alice.id)
    ids = patient_ids(client, api["alice"])
    page = signed_in.get(f"/patients/{ids['P001']}")
    assert page.status_code == 200
    text = page.text
    assert text.index("S001") < text.index("S002")  # visit order
    assert f"segmentation {job_id[:8]}" in text  # S001: the job's lesion table (2 rows)
    assert "lesions from the ground truth" in text  # S002: its uploaded label
    assert text.count('class="lesion-table"') == 2
    assert f'href="/jobs/{job_id}"' in text and 'id="patient-jobs"' in text
    assert 'id="volumes-plot"' in text
    assert_png(signed_in.get(f"/patients/{ids['P001']}/volumes.png"))
    assert 'id="patient-form"' in text  # alice owns every study of P001


def test_patient_form_edits_primary_cancer_and_clinical_fields(signed_in, client, api, cohort_studies):
    pid = patient_ids(client, api["alice"])["P002"]
    form = {
        "csrf_token": signed_in.csrf,
        "primary_cancer": "breast",
        "clinical.age": "58",
        "clinical.sex": "F",
        "clinical.kps": "",
        "new_key": "her2",
        "new_value": "positive",
    }
    response = signed_in.post(f"/patients/{pid}", data=form)
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/patients/{pid}")
    detail = client.get(f"/api/v1/patients/{pid}", headers=api["alice"]).json
    assert detail["primary_cancer"] == "breast"
    assert detail["clinical"] == {"age": 58, "sex": "F", "her2": "positive"}
    page = signed_in.get(f"/patients/{pid}")
    assert "saved" in page.text and 'id="primary-cancer">breast<' in page.text

    # Emptying a field removes it; a bad value saves nothing.
    signed_in.post(f"/patients/{pid}", data={"csrf_token": signed_in.csrf, "clinical.her2": ""})
    signed_in.post(f"/patients/{pid}", data={"csrf_token": signed_in.csrf, "clinical.age": "old"})
    detail = client.get(f"/api/v1/patients/{pid}", headers=api["alice"]).json
    assert detail["clinical"] == {"age": 58, "sex": "F"}
    assert "Not saved" in signed_in.get(f"/patients/{pid}").text

    # No CSRF token: refused.
    assert signed_in.post(f"/patients/{pid}", data={"primary_cancer": "lung"}).status_code == 400
    assert client.get(f"/api/v1/patients/{pid}", headers=api["alice"]).json["primary_cancer"] == "breast"


def test_patient_visibility_and_edit_rights(
    app, client, api, users, cohort_studies, upload, study_files, db_session
):
    """Patients belong to a group: its members see and edit them, nobody else sees them (404, as for an
    unknown id), and an upload under the same pseudonym elsewhere is a patient of its own."""
    from bmcore.db import Group, User

    ids = patient_ids(client, api["alice"])
    bob = app.test_client()
    sign_in(bob, users.bob.email)
    hidden = bob.get(f"/patients/{ids['P001']}")
    assert hidden.status_code == 404 and f"unknown patient id: {ids['P001']}" in hidden.text
    assert bob.get("/patients/99999").status_code == 404
    assert patient_ids(client, api["bob"]) == {}

    # Bob uploads a "P001" too: a patient of his own group; alice's stays hers (and editable by her).
    assert (
        upload(study_files("bob", seed=5), patient_id="P001", study_uid="B001", user="bob").status_code == 201
    )
    bobs = patient_ids(client, api["bob"])
    assert list(bobs) == ["P001"] and bobs["P001"] != ids["P001"]
    page = bob.get(f"/patients/{bobs['P001']}")
    assert page.status_code == 200 and "B001" in page.text and "S001" not in page.text
    assert 'id="patient-form"' in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert (
        bob.post(f"/patients/{ids['P001']}", data={"csrf_token": csrf, "primary_cancer": "lung"}).status_code
        == 404
    )
    allowed = client.patch(
        f"/api/v1/patients/{ids['P001']}", json={"primary_cancer": "lung"}, headers=api["alice"]
    )
    assert allowed.status_code == 200 and allowed.json["primary_cancer"] == "lung"
    assert [s["study_uid"] for s in allowed.json["studies"]] == ["S001", "S002"]

    # An admin adds bob to alice's group: now he sees and edits her patients too.
    group = db_session.scalars(select(Group).where(Group.name == f"user-{users.alice.id}")).one()
    group.members.append(db_session.get(User, users.bob.id))
    db_session.commit()
    listed = client.get("/api/v1/patients", headers=api["bob"]).json["patients"]
    assert sorted((p["pseudonym"], p["group"]) for p in listed) == [
        ("P001", f"user-{users.alice.id}"),
        ("P001", f"user-{users.bob.id}"),
        ("P002", f"user-{users.alice.id}"),
    ]
    shared = bob.get(f"/patients/{ids['P001']}")
    assert shared.status_code == 200 and "S001" in shared.text and 'id="patient-form"' in shared.text
    edited = client.patch(
        f"/api/v1/patients/{ids['P002']}", json={"clinical": {"kps": 70}}, headers=api["bob"]
    )
    assert edited.status_code == 200 and edited.json["group"] == f"user-{users.alice.id}"
    root = app.test_client()
    assert sign_in(root, users.root.email, PASSWORD).status_code == 303
    assert 'id="patient-form"' in root.get(f"/patients/{ids['P001']}").text


def test_patient_api(client, api, cohort_studies):
    ids = patient_ids(client, api["alice"])
    listed = client.get("/api/v1/patients", headers=api["alice"]).json["patients"]
    assert {p["pseudonym"]: p["studies"] for p in listed} == {"P001": 2, "P002": 1}
    detail = client.get(f"/api/v1/patients/{ids['P001']}", headers=api["alice"]).json
    assert detail["can_edit"] is True and [s["study_uid"] for s in detail["studies"]] == ["S001", "S002"]

    url = f"/api/v1/patients/{ids['P001']}"
    response = client.patch(
        url, json={"primary_cancer": "renal", "clinical": {"age": 70}}, headers=api["alice"]
    )
    assert response.status_code == 200
    assert response.json["primary_cancer"] == "renal" and response.json["clinical"] == {"age": 70}
    response = client.patch(url, json={"clinical": {"age": None, "kps": 80}}, headers=api["alice"])
    assert response.json["clinical"] == {"kps": 80} and response.json["primary_cancer"] == "renal"
    for body, status in (
        ({"primary_cancer": "liver"}, 400),
        ({"pseudonym": "x"}, 400),
        ({"clinical": {"age": 900}}, 400),
    ):
        refused = client.patch(url, json=body, headers=api["alice"])
        assert refused.status_code == status and "error" in refused.json, body
    assert client.patch(url, data="x", headers=api["alice"]).status_code == 415
    assert client.patch("/api/v1/patients/99999", json={}, headers=api["alice"]).status_code == 404
    hidden = client.get(url, headers=api["bob"])
    assert hidden.status_code == 404 and hidden.json == {"error": f"unknown patient id: {ids['P001']}"}
    assert client.get("/api/v1/patients").status_code == 401


# ----------------------------------------------------------------------------------------- browser


@pytest.mark.browser
def test_cohort_plots_load_in_a_browser(app, users, cohort_studies, fake_segment):
    from .test_web_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (install it with: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from werkzeug.serving import make_server

    fake_segment(cohort_studies["S001"]["id"], users.alice.id)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    SCREENSHOTS.mkdir(exist_ok=True)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(f"{base}/sign-in")
                page.fill("#email", users.alice.email)
                page.fill("#password", PASSWORD)
                page.click("button[type=submit]")
                sync_api.expect(page).to_have_url(f"{base}/jobs")

                page.goto(f"{base}/cohort", wait_until="load")  # "load" waits for every image
                plots = page.locator("img.cohort-plot")
                sync_api.expect(plots).to_have_count(7)
                widths = page.evaluate(
                    "Array.from(document.querySelectorAll('img.cohort-plot'), i => [i.id, i.naturalWidth])"
                )
                assert all(width > 0 for _, width in widths), widths
                page.screenshot(path=str(SCREENSHOTS / "cohort.png"), full_page=True)

                page.click("#cohort-patients a:text('P001')")
                sync_api.expect(page).to_have_url(re.compile(r"/patients/\d+$"))
                page.wait_for_load_state("load")
                assert page.evaluate("document.getElementById('volumes-plot').naturalWidth") > 0
                page.select_option("#primary_cancer", "melanoma")
                page.click("#save-patient")
                sync_api.expect(page.locator("#primary-cancer")).to_have_text("melanoma")
                page.screenshot(path=str(SCREENSHOTS / "patient.png"), full_page=True)
                assert errors == []
            finally:
                browser.close()
    finally:
        server.shutdown()
        thread.join(timeout=10)
