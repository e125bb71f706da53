"""The demo's clinical path (bmcore.local.clinical): the champion's choice, the multipart body the walk
posts, the ground truth kept with an imported study, and the whole walk against a real stack (gunicorn web
and a Celery worker on both queues, as ``bmseg up`` starts them) with a model trained here."""

from __future__ import annotations

import http.cookiejar
import io
import json
import re
import socket
import urllib.parse
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bmcore import imaging
from bmcore.local.clinical import DICOM_SUFFIX, SCANNER_SERIES, multipart, rank_architectures

FOREIGN_SETTINGS = ("BMSEG_DATABASE_URL", "BMSEG_MLFLOW_TRACKING_URI", "BMSEG_MLFLOW_ARTIFACT_ROOT")
SMALL = {"shape": (48, 48, 16), "spacing": (4.5, 4.5, 9.0)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def use_data_dir(monkeypatch, data_dir: Path) -> None:
    from bmcore.config import get_settings
    from bmcore.db import dispose_engines

    for name in FOREIGN_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BMSEG_DATA_DIR", str(data_dir))
    monkeypatch.setenv("BMSEG_ENV", "test")
    get_settings.cache_clear()
    dispose_engines()


# ------------------------------------------------------------------------------------------ the pieces


def test_the_best_validation_lesion_wise_dice_tc_picks_the_architecture_never_the_test_figure():
    def model(validation: float, test: float) -> dict:
        return {"validation": {"val_lesion_dice_tc_brats2025": validation}, "test": {"lesion_dice_TC": test}}

    report = {
        "models": {
            "unet": model(0.02, 0.99),
            "cnn": model(float("nan"), 0.99),
            "fcn": model(0.61, 0.10),
            "other": {"test": {"lesion_dice_TC": 0.99}},
        }
    }
    assert rank_architectures(report)[:2] == [("fcn", 0.61), ("unet", 0.02)]
    assert [arch for arch, _ in rank_architectures(report)][2:] == ["cnn", "other"]


def test_a_tie_on_lesion_wise_dice_is_broken_by_the_2023_figure_dice_tc_then_wt():
    tied = {"val_lesion_dice_tc_brats2025": 0.0, "val_lesion_dice": 0.0, "val_dice_TC": 0.0}
    report = {
        "models": {
            "unet": {"validation": tied | {"val_dice_WT": 0.10}},
            "cnn": {"validation": tied | {"val_dice_WT": 0.30}},
            "fcn": {"validation": tied | {"val_dice_TC": 0.05}},
        }
    }
    assert [arch for arch, _ in rank_architectures(report)] == ["fcn", "cnn", "unet"]


def test_the_multipart_body_parses_as_a_browser_form(tmp_path):
    from werkzeug.formparser import parse_form_data

    upload = tmp_path / "t1.nii.gz"
    upload.write_bytes(bytes(range(256)) * 40 + b"\r\n--tail")
    body, content_type = multipart({"patient_id": "P-1", "group": "demo"}, {"t1": upload})
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    _, form, files = parse_form_data(environ)
    assert dict(form) == {"patient_id": "P-1", "group": "demo"}
    assert files["t1"].filename == "t1.nii.gz" and files["t1"].read() == upload.read_bytes()


@pytest.fixture
def stored_study(tmp_path, monkeypatch):
    """A study registered as the DICOM import stores one (UCSF layout, no label), and the label of its
    source study on the same grid."""
    from bmcore.data.synth import synth_cohort
    from bmcore.db import Group, init_db, session_scope
    from bmcore.patients import studies

    use_data_dir(monkeypatch, tmp_path / "data")
    init_db()
    synth_cohort(tmp_path / "cohort", 1, seed=5, layout="brats", workers=1, **SMALL)
    (source,) = imaging.find_studies(tmp_path / "cohort")
    folder = tmp_path / "uploads" / "IMP1"
    folder.mkdir(parents=True)
    for modality, suffix in imaging.UCSF_SUFFIX.items():
        image = nib.load(source.images[modality])
        imaging.write_nifti(np.asanyarray(image.dataobj), image.affine, folder / f"IMP1_{suffix}.nii.gz")
    stored = studies.describe_stored(folder, dict(imaging.study_from_dir(folder).images), 10**7)
    with session_scope() as session:
        group = Group(name="demo")
        session.add(group)
        study = studies.register_study(session, stored, "P1", "IMP1", None, group)
        yield {"id": study.id, "folder": folder, "label": source.label, "checksum": study.checksum}


def test_a_label_on_the_study_grid_is_kept_and_counted_in_the_checksum(stored_study):
    from bmcore.db import Study, session_scope
    from bmcore.patients.studies import LabelRefused, attach_label

    with session_scope() as session:
        study = session.get(Study, stored_study["id"])
        target = attach_label(session, study, stored_study["label"], 10**7)
    assert target == stored_study["folder"] / "IMP1_BraTS-seg.nii.gz"
    assert imaging.study_from_dir(stored_study["folder"]).label == target
    kept, source = nib.load(target), nib.load(stored_study["label"])
    assert np.array_equal(np.asanyarray(kept.dataobj), np.asanyarray(source.dataobj))
    assert kept.header.extensions == [] and kept.header["descrip"].item() == b""
    with session_scope() as session:
        study = session.get(Study, stored_study["id"])
        assert study.label_path == str(target) and study.checksum != stored_study["checksum"]
        with pytest.raises(LabelRefused, match="has a label already"):
            attach_label(session, study, stored_study["label"], 10**7)


@pytest.mark.parametrize("damage", ["shape", "affine", "values"])
def test_a_label_off_the_grid_or_out_of_range_is_refused_and_leaves_nothing(stored_study, tmp_path, damage):
    from bmcore.db import Study, session_scope
    from bmcore.patients.studies import LabelRefused, attach_label

    image = nib.load(stored_study["label"])
    data, affine = np.asanyarray(image.dataobj).copy(), image.affine.copy()
    if damage == "shape":
        data = data[:, :, :-1]
    elif damage == "affine":
        affine[0, 3] += 5.0
    else:
        data[0, 0, 0] = 7
    bad = imaging.write_nifti(data, affine, tmp_path / "bad-seg.nii.gz", dtype=np.uint8)
    before = sorted(p.name for p in stored_study["folder"].iterdir())
    with (
        session_scope() as session,
        pytest.raises(
            LabelRefused, match={"shape": "shape", "affine": "affine", "values": "outside"}[damage]
        ),
    ):
        attach_label(session, session.get(Study, stored_study["id"]), bad, 10**7)
    assert sorted(p.name for p in stored_study["folder"].iterdir()) == before
    with session_scope() as session:
        study = session.get(Study, stored_study["id"])
        assert study.label_path is None and study.checksum == stored_study["checksum"]


# ------------------------------------------------------------------------------------- the whole walk


def sign_in(base: str, email: str, password: str) -> urllib.request.OpenerDirector:
    """A cookie-keeping client signed in through the dashboard's form (its CSRF token included)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{base}/sign-in", timeout=30) as response:
        token = re.search(r'name="csrf_token" value="([^"]+)"', response.read().decode())[1]
    form = urllib.parse.urlencode({"csrf_token": token, "email": email, "password": password}).encode()
    with opener.open(f"{base}/sign-in", data=form, timeout=30) as response:
        assert "/sign-in" not in response.url, "the sign-in was refused"
    return opener


@pytest.fixture
def stack(tmp_path, monkeypatch, redis_test_url):
    """The stack ``bmseg up`` starts (gunicorn, a worker on gpu and cpu; no MLflow UI) on tmp settings."""
    from bmcore.config import get_settings
    from bmcore.db import dispose_engines
    from bmcore.local.demo import ensure_demo_user
    from bmcore.local.stack import Stack

    use_data_dir(monkeypatch, tmp_path / "data")
    running = Stack(get_settings(), free_port(), free_port(), with_mlflow=False)
    try:
        running.start()
        ensure_demo_user()
        yield running
    finally:
        running.stop()
        get_settings.cache_clear()
        dispose_engines()


@pytest.fixture
def trained(tmp_path, tiny_train):
    """A tiny cohort and a model trained on it for one epoch (a checkpoint file, as admins may name)."""
    from bmcore.data.synth import synth_cohort
    from bmcore.experiments.request import TrainRequest
    from bmcore.experiments.training import train_run
    from bmcore.training.config import TrainConfig

    cohort = tmp_path / "cohort"
    synth_cohort(cohort, 4, seed=11, layout="brats", workers=1, **SMALL)
    config = TrainConfig(epochs=1, **tiny_train)
    outcome = train_run(TrainRequest(cohort, config, tmp_path / "run", show_progress=False))
    return cohort, outcome.best_checkpoint


@pytest.mark.slow
def test_the_walk_leaves_studies_segmentations_and_dicom_outputs_behind(stack, trained, tmp_path):
    import pydicom

    from bmcore.accounts import create_token
    from bmcore.db import Study, session_scope
    from bmcore.local.clinical import Api
    from bmcore.local.demo import DEMO_USER, clinical_path

    cohort, checkpoint = trained
    test_ids = [ref.study_id for ref in imaging.find_studies(cohort)][:2]
    printed: list[str] = []
    report = {"split": {"studies": {"test": test_ids}}}
    left = clinical_path(
        stack.web_url, cohort, report, tmp_path / "work", printed.append, model=str(checkpoint)
    )

    with session_scope() as session:
        api = Api(stack.web_url, create_token(session, DEMO_USER[0], "test"))
    listed = {s["study_uid"]: s for s in api.json("GET", "/api/v1/studies")["studies"]}
    dicom_uid = left["dicom_study"]
    assert set(listed) == {*test_ids, dicom_uid} - {dicom_uid.removesuffix(DICOM_SUFFIX)}
    assert all(s["group"] == "demo" and s["has_label"] for s in listed.values()), listed
    assert left["studies"] == {uid: s["id"] for uid, s in listed.items()}

    with session_scope() as session:
        folder = Path(session.get(Study, listed[dicom_uid]["id"]).directory)
    source = json.loads((folder / "dicom_source.json").read_text())
    assert {k: source[k] for k in left["dicom_uids"]} == left["dicom_uids"] != {}
    assert set(source["series"]) == set(SCANNER_SERIES)
    assert {s["series_number"] for s in source["series"].values()} == {n for n, _ in SCANNER_SERIES.values()}
    assert imaging.study_from_dir(folder).label == folder / f"{dicom_uid}_BraTS-seg.nii.gz"

    for uid, job_id in left["jobs"].items():
        job = api.json("GET", f"/api/v1/jobs/{job_id}")
        assert job["status"] == "succeeded" and job["study_id"] == listed[uid]["id"]
        rtstruct, seg = (
            pydicom.dcmread(io.BytesIO(api.request("GET", f"/api/v1/jobs/{job_id}/artifacts/{uid}{suffix}")))
            for suffix in ("_rtstruct", "_dicom_seg")
        )
        assert (rtstruct.Modality, seg.Modality) == ("RTSTRUCT", "SEG")
        if uid == dicom_uid:  # the outputs reference the series the walk posted
            frame = rtstruct.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
            assert frame == seg.FrameOfReferenceUID == source["frame_of_reference_uid"]
            assert rtstruct.StudyInstanceUID == seg.StudyInstanceUID == source["study_instance_uid"]

    (url,) = [m[1] for line in printed if (m := re.match(r"study page: (\S+)", line))]
    assert url == f"{stack.web_url}/studies/{listed[dicom_uid]['id']}"
    browser = sign_in(stack.web_url, *DEMO_USER)
    with browser.open(url, timeout=30) as response:
        page = response.read().decode()
        assert response.status == 200
    assert 'id="rtstruct-download"' in page and 'id="dicom-seg-download"' in page
    assert 'id="lesion-table"' in page or 'id="no-lesions"' in page
    assert 'data-value="label" disabled' not in page  # the ground-truth overlay is offered
    with browser.open(f"{url}/slice.png?overlay=label&modality=t1ce", timeout=30) as response:
        assert response.status == 200 and response.read()[:4] == b"\x89PNG"

    # A second run (a second `make demo` on the same data) reuses the stored studies and segments again.
    again = clinical_path(
        stack.web_url, cohort, report, tmp_path / "work", printed.append, model=str(checkpoint)
    )
    assert again["studies"] == left["studies"] and again["dicom_uids"] == {}
    assert len(api.json("GET", "/api/v1/studies")["studies"]) == 2
    assert set(again["jobs"].values()).isdisjoint(left["jobs"].values())
    assert all(api.json("GET", f"/api/v1/jobs/{j}")["status"] == "succeeded" for j in again["jobs"].values())
