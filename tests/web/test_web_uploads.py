"""Study uploads: a good study is stored, checked and registered; every bad one is refused with a 4xx JSON
message and leaves no row and no file behind."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import func, select

from bmcore.db import Patient, Study
from bmcore.imaging import find_studies

from .conftest import SHAPE, affine_for, multipart, nifti_bytes, synthetic_study

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _counts(session) -> tuple[int, int]:
    session.expire_all()
    return (
        session.scalar(select(func.count()).select_from(Study)),
        session.scalar(select(func.count()).select_from(Patient)),
    )


def _assert_nothing_kept(app, db_session) -> None:
    assert _counts(db_session) == (0, 0)
    uploads = Path(app.config["UPLOADS_DIR"])
    leftovers = (
        sorted(p.relative_to(uploads).as_posix() for p in uploads.rglob("*")) if uploads.exists() else []
    )
    assert leftovers == []


def _good_bytes(seed: int = 0) -> dict[str, bytes]:
    return {field: nifti_bytes(data) for field, data in synthetic_study(seed=seed).items()}


# ----------------------------------------------------------------------------------------- accepted


def test_upload_stores_a_checked_study_in_brats_layout(app, upload, study_files, db_session, users):
    response = upload(study_files(), patient_id="100101", study_uid="100101A")

    assert response.status_code == 201, response.json
    body = response.json
    assert body["study_uid"] == "100101A"
    assert body["patient_id"] == "100101"
    assert body["modalities"] == ["flair", "t1", "t1ce", "t2"]
    assert body["has_label"] is True
    assert body["shape"] == list(SHAPE)
    assert body["spacing"] == [1.5, 1.5, 3.0]
    assert response.headers["Location"] == f"/api/v1/studies/{body['id']}"

    folder = Path(app.config["UPLOADS_DIR"]) / "100101A"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"100101A-{s}.nii.gz" for s in ("seg", "t1c", "t1n", "t2f", "t2w")]
    refs = find_studies(folder)
    assert [(r.study_id, r.layout, r.label is not None) for r in refs] == [("100101A", "brats", True)]

    study = db_session.scalars(select(Study)).one()
    assert study.owner_id == users.alice.id
    assert study.directory == str(folder)
    assert study.files["t1"] == str(folder / "100101A-t1n.nii.gz")
    assert study.label_path == str(folder / "100101A-seg.nii.gz")
    digest = hashlib.sha256()
    for field, suffix in (("t1", "t1n"), ("t1ce", "t1c"), ("t2", "t2w"), ("flair", "t2f"), ("seg", "seg")):
        digest.update(field.encode() + b"\x00" + (folder / f"100101A-{suffix}.nii.gz").read_bytes())
    assert study.checksum == body["checksum"] == digest.hexdigest()
    assert db_session.scalars(select(Patient)).one().pseudonym == "100101"
    assert not [p for p in Path(app.config["UPLOADS_DIR"]).iterdir() if p.name.startswith(".")]


def test_upload_clears_free_text_header_fields(app, upload, study_files):
    response = upload(study_files(descrip="Patient John Doe DOB 1970"), study_uid="PHI1")

    assert response.status_code == 201, response.json
    for path in (Path(app.config["UPLOADS_DIR"]) / "PHI1").iterdir():
        header = nib.load(path).header
        assert header["descrip"].item() == b"", path.name
        assert b"John" not in gzip.decompress(path.read_bytes())


FAKE_NAME = "Doe^Jane^Quinn"


def _with_sidecar(data: np.ndarray, gz: bool = True) -> bytes:
    """A NIfTI whose header carries what converters leave there: a JSON DICOM sidecar as an extension
    and a name in ``data_type``."""
    image = nib.Nifti1Image(data, affine_for())
    sidecar = {"PatientName": FAKE_NAME, "PatientBirthDate": "19700101", "Modality": "MR"}
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", json.dumps(sidecar).encode()))
    image.header["data_type"] = b"Doe^Jane"
    raw = image.to_bytes()
    assert FAKE_NAME.encode() in raw and nib.Nifti1Image.from_bytes(raw).header.extensions
    return gzip.compress(raw) if gz else raw


def test_upload_drops_header_extensions_and_data_type(app, upload):
    study = synthetic_study()
    files = _good_bytes()
    files["t1"] = _with_sidecar(study["t1"])
    files["seg"] = (_with_sidecar(study["seg"], gz=False), "seg.nii")
    response = upload(files, study_uid="PHI2")

    assert response.status_code == 201, response.json
    folder = Path(app.config["UPLOADS_DIR"]) / "PHI2"
    for field, suffix in (("t1", "t1n"), ("seg", "seg")):
        path = folder / f"PHI2-{suffix}.nii.gz"
        stored = gzip.decompress(path.read_bytes())
        for secret in (FAKE_NAME.encode(), b"Doe^Jane", b"19700101", b"PatientName"):
            assert secret not in stored, (field, secret)
        image = nib.load(path)
        assert len(image.header.extensions) == 0 and image.header["data_type"].item() == b""
        np.testing.assert_array_equal(np.asarray(image.dataobj), study[field])  # the data itself intact


def test_upload_generates_a_study_uid_and_reuses_the_patient(upload, study_files, db_session):
    first = upload(study_files(with_label=False), patient_id="P7")
    second = upload(study_files(with_label=False, seed=1), patient_id="P7")

    assert first.status_code == second.status_code == 201
    assert first.json["study_uid"] != second.json["study_uid"]
    assert first.json["study_uid"].startswith("study-")
    assert first.json["has_label"] is False
    assert _counts(db_session) == (2, 1)


def test_uncompressed_nifti_is_accepted(upload):
    files = {f: (nifti_bytes(d, gz=False), f"{f}.nii") for f, d in synthetic_study().items()}
    response = upload(files, study_uid="RAW1")
    assert response.status_code == 201, response.json


def test_client_file_names_are_never_used(app, upload):
    files = {f: (data, "../../etc/passwd") for f, data in _good_bytes().items()}
    response = upload(files, study_uid="TRAV1")

    assert response.status_code == 201, response.json
    data_dir = Path(app.config["UPLOADS_DIR"]).parent
    assert not any("passwd" in p.name for p in data_dir.parent.rglob("*"))
    assert (
        sorted(p.name for p in (Path(app.config["UPLOADS_DIR"]) / "TRAV1").iterdir())[0] == "TRAV1-seg.nii.gz"
    )


# ----------------------------------------------------------------------------------------- refused


def _replace(field: str, content: bytes, filename: str | None = None, content_type: str = "application/gzip"):
    files = _good_bytes()
    files[field] = (content, filename or f"{field}.nii.gz", content_type)
    return files


def _header_only(shape, dtype=np.int16, offset: int = 352) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(affine_for(), code=1)
    header["vox_offset"] = offset
    return header.binaryblock + b"\x00" * (offset - 348)


def _bomb() -> bytes:
    """A valid 32x32x16 int16 header followed by 64 MB of zeros: ~64 KB compressed."""
    raw = _header_only(SHAPE) + bytes(64 * 1024 * 1024)
    return gzip.compress(raw, compresslevel=9)


BAD_UPLOADS = {
    "truncated gzip": (lambda: _replace("t1", nifti_bytes(synthetic_study()["t1"])[:3000]), 400, "truncated"),
    "truncated raw data": (
        lambda: _replace("t2", gzip.compress(nifti_bytes(synthetic_study()["t2"], gz=False)[:20000])),
        400,
        "truncated",
    ),
    "not NIfTI": (
        lambda: _replace("t1ce", b"hello, this is not an image" * 40, "t1ce.nii"),
        400,
        "not a NIfTI",
    ),
    "not NIfTI, gzipped": (lambda: _replace("t1ce", gzip.compress(b"<html>" * 200)), 400, "not a NIfTI"),
    "2D image": (lambda: _replace("flair", nifti_bytes(np.ones((32, 32), np.float32))), 400, "2D"),
    "shapes disagree": (
        lambda: _replace("t2", nifti_bytes(np.ones((32, 32, 12), np.float32))),
        400,
        "disagrees",
    ),
    "affines disagree": (
        lambda: _replace("t2", nifti_bytes(synthetic_study()["t2"], affine=affine_for((2.0, 1.5, 3.0)))),
        400,
        "disagrees",
    ),
    "NaN voxels": (
        lambda: _replace(
            "flair", nifti_bytes(np.where(synthetic_study()["flair"] > 50, np.nan, 1.0).astype(np.float32))
        ),
        400,
        "NaN",
    ),
    "all zero": (lambda: _replace("t1", nifti_bytes(np.zeros(SHAPE, np.float32))), 400, "all zero"),
    "huge header": (lambda: _replace("t1", gzip.compress(_header_only((4000, 4000, 4000)))), 400, "voxels"),
    "gzip bomb": (lambda: _replace("t1", _bomb()), 400, "expands beyond"),
    "huge header extensions": (
        lambda: _replace("t1", gzip.compress(_header_only(SHAPE, offset=20 << 20) + bytes(32 * 32 * 16 * 2))),
        400,
        "header extensions over 16 MB",
    ),
    "label values not integers": (
        lambda: _replace("seg", nifti_bytes(synthetic_study()["seg"].astype(np.float32) * 0.5)),
        400,
        "not integers",
    ),
    "label values outside 0..3": (
        lambda: _replace("seg", nifti_bytes((synthetic_study()["seg"] * 2).astype(np.uint8))),
        400,
        "outside",
    ),
    "path traversal name, junk content": (
        lambda: _replace("t1", b"root:x:0:0::/root:/bin/sh\n" * 20, "../../etc/passwd"),
        400,
        "NIfTI",
    ),
    "file content type": (
        lambda: _replace("t2", nifti_bytes(synthetic_study()["t2"]), "t2.txt", "text/plain"),
        415,
        "content type",
    ),
    "missing modality": (lambda: {k: v for k, v in _good_bytes().items() if k != "flair"}, 400, "flair"),
    "empty file": (lambda: _replace("t1", b""), 400, "empty"),
    "unknown file field": (lambda: {**_good_bytes(), "dwi": b"x"}, 400, "unexpected file field"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS), ids=list(BAD_UPLOADS))
def test_bad_upload_is_refused_and_leaves_nothing(case, app, upload, db_session, users):
    build, status, fragment = BAD_UPLOADS[case]
    response = upload(build(), study_uid="BAD1")

    assert response.status_code == status, response.json
    assert fragment.lower() in response.json["error"].lower()
    _assert_nothing_kept(app, db_session)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"patient_id": "John Doe"}, "patient_id"),
        ({"patient_id": ""}, "patient_id"),
        ({"study_uid": "../../evil"}, "study_uid"),
        ({"study_uid": "x" * 65}, "study_uid"),
    ],
)
def test_bad_identifiers_are_refused(fields, fragment, app, upload, db_session, users):
    values = {"patient_id": "P1", "study_uid": "OK1"} | fields
    response = upload(_good_bytes(), **values)

    assert response.status_code == 400
    assert fragment in response.json["error"]
    _assert_nothing_kept(app, db_session)


def test_duplicate_study_uid_is_a_conflict(app, upload, db_session):
    assert upload(_good_bytes(), study_uid="DUP").status_code == 201
    response = upload(_good_bytes(seed=2), study_uid="DUP")

    assert response.status_code == 409
    assert "already exists" in response.json["error"]
    assert _counts(db_session) == (1, 1)
    assert sorted(p.name for p in Path(app.config["UPLOADS_DIR"]).iterdir()) == ["DUP"]


def test_wrong_request_content_type_is_415(client, api, app, db_session):
    response = client.post("/api/v1/studies", json={"patient_id": "P1"}, headers=api["alice"])
    assert response.status_code == 415
    assert "multipart/form-data" in response.json["error"]
    _assert_nothing_kept(app, db_session)


def test_oversized_upload_is_413(make_app, users, db_session):
    from bmcore.accounts import create_token
    from bmcore.db import session_factory

    app = make_app(MAX_CONTENT_LENGTH=100_000)
    with session_factory(app.config["DATABASE_URL"])() as session:
        token = create_token(session, users.alice.email, "small")
    response = app.test_client().post(
        "/api/v1/studies",
        data=multipart(
            {f: (bytes(30_000), f"{f}.nii") for f in ("t1", "t1ce", "t2", "flair")}, patient_id="P1"
        ),
        headers={"Authorization": f"Bearer {token}"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 413
    assert "larger than the server accepts" in response.json["error"]
    _assert_nothing_kept(app, db_session)


CLAIMED_SHAPE = (500, 500, 250)  # int16: 125 MB per file, 62.5 million voxels


@functools.cache
def _claiming_bomb() -> bytes:
    """Issue #16, item 8: ~120 KB of gzip whose header claims 500×500×250 int16, every voxel there."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(_header_only(CLAIMED_SHAPE))]
    block = np.ones(1 << 20, np.int16).tobytes()
    total = int(np.prod(CLAIMED_SHAPE)) * 2
    for start in range(0, total, len(block)):
        parts.append(compressor.compress(block[: total - start]))
    return b"".join(parts) + compressor.flush()


def test_files_claiming_more_voxels_than_the_web_accepts_are_refused_from_the_header(app, upload, db_session):
    cap = app.config["MAX_UPLOAD_VOXELS"]
    claimed = int(np.prod(CLAIMED_SHAPE))
    assert cap < claimed <= app.config["MAX_VOXELS"]  # the worker's cap would let these through
    bomb = _claiming_bomb()
    assert len(bomb) < 200_000
    response = upload({field: bomb for field in ("t1", "t1ce", "t2", "flair")}, study_uid="AMP1")

    assert response.status_code in (400, 413)
    assert f"header claims {claimed:,} voxels, over the limit of {cap:,}" in response.json["error"]
    _assert_nothing_kept(app, db_session)


def test_gzip_bomb_is_not_expanded_past_the_cap(app, tmp_path, users):
    """The cap is the header-implied size + 1 MB: the bounded reader stops there."""
    from services.web.uploads import GZIP_SLACK_BYTES, UploadError, _gunzip_bounded

    source, target = tmp_path / "bomb.gz", tmp_path / "bomb.nii"
    source.write_bytes(_bomb())
    with source.open("rb") as stream, pytest.raises(UploadError, match="expands beyond"):
        _gunzip_bounded(stream, target, "t1", 10**7)
    implied = 352 + int(np.prod(SHAPE)) * 2
    assert target.stat().st_size <= implied + GZIP_SLACK_BYTES


def test_nifti_header_peek_reads_nifti1_and_nifti2():
    from services.web.uploads import UploadError, implied_nifti_bytes

    data = np.ones(SHAPE, np.float32)
    one = nib.Nifti1Image(data, affine_for()).to_bytes()
    two = nib.Nifti2Image(data, affine_for()).to_bytes()
    assert implied_nifti_bytes(one[:540], "x", 10**6) == len(one)
    assert implied_nifti_bytes(two[:540], "x", 10**6) == len(two)
    swapped = bytearray(one[:348])
    struct.pack_into(">i", swapped, 0, 348)  # a big-endian sizeof_hdr with little-endian fields: invalid dims
    with pytest.raises(UploadError):
        implied_nifti_bytes(bytes(swapped), "x", 10**6)


# ----------------------------------------------------------------------------------------- dashboard form


def test_dashboard_upload_form_stores_a_study(signed_in, study_files, db_session):
    data = multipart(study_files(), patient_id="P9", study_uid="DASH1", csrf_token=signed_in.csrf)
    response = signed_in.post("/studies", data=data, content_type="multipart/form-data")

    assert response.status_code == 303
    study = db_session.scalars(select(Study)).one()
    assert response.headers["Location"] == f"/studies/{study.id}"
    assert "DASH1" in signed_in.get("/studies").text


def test_dashboard_upload_form_shows_the_reason(signed_in, app, db_session, users):
    files = _replace("flair", nifti_bytes(np.ones((32, 32), np.float32)))
    response = signed_in.post(
        "/studies",
        data=multipart(files, patient_id="P9", csrf_token=signed_in.csrf),
        content_type="multipart/form-data",
    )

    assert response.status_code == 400
    assert "Upload refused" in response.text and "2D" in response.text
    _assert_nothing_kept(app, db_session)


def test_dashboard_upload_without_csrf_is_refused(signed_in, study_files, app, db_session, users):
    response = signed_in.post(
        "/studies", data=multipart(study_files(), patient_id="P9"), content_type="multipart/form-data"
    )

    assert response.status_code == 400
    assert "did not come from this site" in response.text
    _assert_nothing_kept(app, db_session)


def test_dashboard_oversized_upload_gets_a_413_page(make_app, users, db_session):
    from .conftest import sign_in

    app = make_app(MAX_CONTENT_LENGTH=100_000)
    client = app.test_client()
    sign_in(client, users.alice.email)
    files = {f: (bytes(30_000), f"{f}.nii") for f in ("t1", "t1ce", "t2", "flair")}
    response = client.post(
        "/studies",
        data=multipart(files, patient_id="P1", csrf_token=client.csrf),
        content_type="multipart/form-data",
    )
    assert response.status_code == 413
    assert "Too large" in response.text and "larger than the server accepts" in response.text
    _assert_nothing_kept(app, db_session)


def test_stale_incoming_folders_are_purged_at_start(make_app, web_settings):
    import os
    import time

    uploads = web_settings.uploads_dir
    stale, fresh = uploads / ".incoming-stale", uploads / ".incoming-fresh"
    for folder in (stale, fresh):
        (folder / "received").mkdir(parents=True)
    old = time.time() - 7 * 3600
    os.utime(stale, (old, old))
    make_app()
    assert not stale.exists() and fresh.exists()
