"""The demo's clinical path: its test studies go in through the real HTTP API and come out segmented.

After training and evaluation, ``bmseg demo`` walks what a clinic does, as an API client of the running
stack (``urllib``, a bearer token made for the demo user): the cohort's test studies are uploaded as NIfTI
into the group ``demo``, except one, which becomes a four-series DICOM MR study (one series per modality,
scanner-style series descriptions that the identification rules of :mod:`bmcore.dicom.identify` place
without a map, one StudyInstanceUID and FrameOfReferenceUID) posted as a zip and imported by an ``ingest``
job on the cpu queue. That study's ground truth, on the same grid, is then kept with it
(:func:`bmcore.patients.studies.attach_label`), so the viewer can show the prediction and the truth. One
segmentation job per study follows (``"dicom": true``: RTSTRUCT and DICOM-SEG beside the mask), with the
champion of the architecture that ranks best on the validation figures, and the walk ends with the DICOM
study's page. A second run reuses the studies the first stored and queues new segmentations.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bmcore import imaging
from bmcore.accounts import create_token, require_user, revoke_token
from bmcore.config import get_settings
from bmcore.db import Study, session_scope
from bmcore.db.groups import find_group
from bmcore.evaluation.headline import format_value
from bmcore.memberships import add_member, create_group
from bmcore.patients.studies import attach_label
from bmcore.tracking.registry import CHAMPION_METRICS

DEMO_GROUP = "demo"
TOKEN_NAME = "demo clinical path"
DICOM_SUFFIX = "-DICOM"  # the DICOM study's uid: its source study's, so the two are told apart
# Validation figures rank the architectures (never test ones): the registry's champion figures, Dice TC, WT.
RANKED_BY = (*CHAMPION_METRICS, "val_dice_TC", "val_dice_WT")
# (series number, SeriesDescription) as a scanner names them; the default rules place each one.
SCANNER_SERIES = {
    "t1": (3, "t1_mprage_tra"),
    "t1ce": (4, "t1_mprage_tra_post_gd"),
    "t2": (5, "t2_tse_tra"),
    "flair": (6, "t2_flair_tra"),
}
FINISHED = ("succeeded", "failed", "cancelled")
POLL_SECONDS = 0.5
JOB_TIMEOUT_S = 900.0
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the stack is local: never a proxy


class ApiError(RuntimeError):
    """The API refused a request or did not answer; one line: the request, the status, its error."""


def multipart(fields: dict[str, str], files: dict[str, Path]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of text fields and files, and its content type."""
    boundary = f"bmseg-{uuid.uuid4().hex}"
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, path in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts += [head.encode(), Path(path).read_bytes(), b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class Api:
    """The JSON API of a running stack under ``base_url``, called with a bearer token."""

    base_url: str
    token: str
    timeout: float = 300.0

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> bytes:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers, method=method)
        try:
            with NO_PROXY.open(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                reason = exc.reason
            raise ApiError(f"{method} {path}: HTTP {exc.code}: {reason}") from None
        except OSError as exc:  # URLError, a refused connection, a timeout
            raise ApiError(f"{method} {path}: {getattr(exc, 'reason', exc)}") from None

    def json(self, method: str, path: str, payload: dict | None = None) -> dict:
        body = None if payload is None else json.dumps(payload).encode()
        return json.loads(self.request(method, path, body, "application/json" if body else ""))

    def upload(self, fields: dict[str, str], files: dict[str, Path]) -> dict:
        """``POST /api/v1/studies``: a NIfTI study (201, the study) or a DICOM zip (202, its ingest job)."""
        body, content_type = multipart(fields, files)
        return json.loads(self.request("POST", "/api/v1/studies", body, content_type))


@dataclass(frozen=True)
class ClinicalWalk:
    """What the walk left in the dashboard: the studies (uid → id, the DICOM one among them), the UIDs the
    DICOM study was written with (empty when an earlier run had stored it), each study's segmentation job
    (its final detail), the model they used and why, and the DICOM study's page."""

    study_ids: dict[str, int]
    dicom_study: str
    dicom_uids: dict[str, str]
    jobs: dict[str, dict]
    model: str
    why: str
    study_url: str


def studies_count(count: int) -> str:
    return f"{count} test stud{'y' if count == 1 else 'ies'}"


def demo_access(email: str, group: str) -> str:
    """A fresh API token for ``email`` (the walk's previous one revoked), member of ``group`` (made when
    missing)."""
    with session_scope() as session:
        user = require_user(session, email)
        if find_group(session, group) is None:
            create_group(session, group)
        add_member(session, group, user)
        revoke_token(session, email, TOKEN_NAME)
        return create_token(session, email, TOKEN_NAME, days=1)


def rank_architectures(report: dict) -> list[tuple[str, float | None]]:
    """The report's architectures with their validation lesion-wise Dice TC (brats2025), best first (ties
    broken by the 2023 rules' figure, Dice TC, then Dice WT; a missing figure ranks last). The test
    patients' figures are only reported, never used to choose."""

    def score(figures: dict) -> tuple[float, ...]:
        values = (figures.get(key) for key in RANKED_BY)
        return tuple(v if isinstance(v, int | float) and math.isfinite(v) else -math.inf for v in values)

    ranked = sorted(report["models"].items(), key=lambda m: score(m[1].get("validation", {})), reverse=True)
    return [(arch, model.get("validation", {}).get(RANKED_BY[0])) for arch, model in ranked]


def champion_model(api: Api, report: dict) -> tuple[str, str]:
    """The registry model to segment with, the champion of the best-ranked architecture (the version this
    run registered when that model has no champion), and why, in words."""
    ranking = rank_architectures(report)
    arch = ranking[0][0]
    name, registered = f"bmseg-{arch}", report["models"][arch]["registered"]
    try:
        listed = api.json("GET", "/api/v1/models")["models"]
        champion = next((entry.get("champion") for entry in listed if entry["name"] == name), None)
    except ApiError:
        champion = None
    if champion is None:
        version = registered["version"]
        uri, which = f"models:/{name}/{version}", f"version {version}, no champion alias yet"
    else:
        uri = f"models:/{name}@champion"
        which = f"version {champion}" + (", trained now" if champion == registered["version"] else "")
    figures = ", ".join(f"{a} {format_value(s)}" for a, s in ranking)
    why = f"{arch} ranks first by validation lesion-wise Dice TC, brats2025 ({figures})"
    return uri, f"{why}: {uri} ({which})"


def pick_dicom_study(cohort: Path, refs: dict[str, imaging.StudyRef]) -> imaging.StudyRef:
    """The test study with the most tumour-core voxels (cohort.json), so its page shows lesions."""
    truth: dict[str, int] = {}
    record = cohort / "cohort.json"
    if record.is_file():
        for study in json.loads(record.read_text()).get("studies", []):
            voxels = study.get("label_voxels") or {}
            truth[study["study_id"]] = int(voxels.get("1", 0)) + int(voxels.get("3", 0))
    labelled = [ref for ref in refs.values() if ref.label is not None] or list(refs.values())
    return max(labelled, key=lambda ref: truth.get(ref.study_id, 0))


def upload_nifti(api: Api, ref: imaging.StudyRef, group: str) -> int:
    """Upload one study as NIfTI, its multi-class label with it; the new study's id."""
    files = dict(ref.images)
    if ref.label is not None and ref.label_kind == "multiclass" and not ref.label_map:
        files["seg"] = ref.label
    fields = {"patient_id": ref.patient_id, "study_uid": ref.study_id, "group": group}
    return int(api.upload(fields, files)["id"])


def dicom_zip(ref: imaging.StudyRef, pseudonym: str, work: Path) -> tuple[Path, dict[str, str]]:
    """The study as four DICOM MR series of one study and frame of reference, zipped as a PACS export
    (entries ``DICOM/IM00001``…); the zip and the UIDs it was written with."""
    from pydicom.uid import generate_uid  # lazy: pydicom, loaded when the walk writes its DICOM study

    from bmcore.dicom import write_mr_series  # lazy: as above (bmcore.dicom loads highdicom too)

    uids = {"study_instance_uid": generate_uid(), "frame_of_reference_uid": generate_uid()}
    series_root = work / "series"
    for modality, (number, description) in SCANNER_SERIES.items():
        write_mr_series(
            ref.images[modality],
            series_root / modality,
            pseudonym,
            uids["study_instance_uid"],
            uids["frame_of_reference_uid"],
            number,
            description,
        )
    archive = work / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for index, path in enumerate(sorted(series_root.rglob("*.dcm")), start=1):
            out.write(path, f"DICOM/IM{index:05d}")
    shutil.rmtree(series_root)
    return archive, uids


def import_dicom_study(
    api: Api, ref: imaging.StudyRef, uid: str, group: str, work: Path, echo: Callable[[str], None]
) -> tuple[int, dict[str, str]]:
    """Post the study as a DICOM zip, follow its ingest job; the imported study's id and its UIDs."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        archive, uids = dicom_zip(ref, ref.patient_id, work)
        fields = {"patient_id": ref.patient_id, "study_uid": uid, "group": group}
        job = api.upload(fields, {"dicom": archive})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    done = follow_jobs(api, {f"import {uid} (DICOM, 4 series)": job["id"]}, echo)
    (detail,) = done.values()
    series = detail["result"]["metrics"].get("series", {})
    placed = ", ".join(f"series {number} → {modality}" for modality, number in series.items())
    echo(f"  the ingest job placed {placed}")
    return int(detail["result"]["metrics"]["study_id"]), uids


def keep_ground_truth(study_id: int, label: Path) -> Path:
    """Attach the source study's label to the imported study (same grid, checked)."""
    with session_scope() as session:
        study = session.get(Study, study_id)
        return attach_label(session, study, label, get_settings().max_voxels)


def follow_jobs(
    api: Api, job_ids: dict[str, str], echo: Callable[[str], None], timeout: float = JOB_TIMEOUT_S
) -> dict[str, dict]:
    """Poll ``GET /api/v1/jobs/<id>`` until every job ended (each status change printed); their final
    details. Raises unless all succeeded."""
    finished: dict[str, dict] = {}
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        for name, job_id in job_ids.items():
            if name not in finished:
                job = api.json("GET", f"/api/v1/jobs/{job_id}")
                if job["status"] != seen.get(name):
                    seen[name] = job["status"]
                    echo(f"  {name}: {job['status']}")
                if job["status"] in FINISHED:
                    finished[name] = job
        if len(finished) == len(job_ids):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"clinical path: jobs still running after {timeout:.0f} s: {sorted(seen)}")
        time.sleep(POLL_SECONDS)
    failed = [f"{name}: {job.get('error')}" for name, job in finished.items() if job["status"] != "succeeded"]
    if failed:
        raise RuntimeError("clinical path failed: " + "; ".join(failed))
    return finished


def segment_studies(
    api: Api, study_ids: dict[str, int], model: str, echo: Callable[[str], None]
) -> dict[str, dict]:
    """One segmentation job per study through the API, with RTSTRUCT and DICOM-SEG; their final details."""
    params = {"model": model, "dicom": True}
    queued = {
        uid: api.json("POST", "/api/v1/jobs", {"type": "segment", "study_id": sid, "params": params})["id"]
        for uid, sid in study_ids.items()
    }
    done = follow_jobs(api, {f"segment {uid}": job_id for uid, job_id in queued.items()}, echo)
    return {uid: done[f"segment {uid}"] for uid in queued}


def store_studies(
    api: Api, refs: dict[str, imaging.StudyRef], dicom_ref: imaging.StudyRef, group: str, work: Path, echo
) -> tuple[dict[str, int], dict[str, str]]:
    """Every test study stored once (NIfTI; the chosen one as DICOM, with its ground truth kept);
    the studies by uid and the DICOM study's UIDs (empty when it was stored before)."""
    stored = {s["study_uid"]: s for s in api.json("GET", "/api/v1/studies?limit=500")["studies"]}
    study_ids: dict[str, int] = {}
    for uid, ref in refs.items():
        if ref is not dicom_ref:
            study_ids[uid] = stored[uid]["id"] if uid in stored else upload_nifti(api, ref, group)
    echo(f"uploaded {studies_count(len(study_ids))} as NIfTI into the group {group}")
    dicom_uid, uids = f"{dicom_ref.study_id}{DICOM_SUFFIX}", {}
    if dicom_uid in stored:
        study_ids[dicom_uid] = stored[dicom_uid]["id"]
    else:
        study_ids[dicom_uid], uids = import_dicom_study(api, dicom_ref, dicom_uid, group, work, echo)
    if dicom_ref.label is not None and not stored.get(dicom_uid, {}).get("has_label"):
        keep_ground_truth(study_ids[dicom_uid], dicom_ref.label)
        echo(f"  kept {dicom_ref.study_id}'s ground truth with {dicom_uid} (same grid, checked)")
    return study_ids, uids


def walk_clinical_path(
    base_url: str,
    cohort: Path,
    test_studies: list[str],
    work: Path,
    email: str,
    report: dict | None = None,
    model: str | None = None,
    group: str = DEMO_GROUP,
    echo: Callable[[str], None] = print,
) -> ClinicalWalk:
    """The walk (see the module docstring) against the stack at ``base_url`` as user ``email``: the test
    studies of ``cohort`` in, segmented with ``model`` (default: :func:`champion_model` of ``report``)."""
    api = Api(base_url.rstrip("/"), demo_access(email, group))
    wanted = set(test_studies)
    refs = {ref.study_id: ref for ref in imaging.find_studies(cohort) if ref.study_id in wanted}
    if not refs:
        raise RuntimeError(f"clinical path: none of the test studies is in {cohort}")
    dicom_ref = pick_dicom_study(cohort, refs)
    study_ids, uids = store_studies(api, refs, dicom_ref, group, work, echo)
    why = "the model asked for"
    if model is None:
        if report is None:
            raise ValueError("walk_clinical_path needs a model or the demo's report to pick one")
        model, why = champion_model(api, report)
        echo(f"segmenting with the champion: {why}")
    jobs = segment_studies(api, study_ids, model, echo)
    for uid, job in jobs.items():
        lesions = job["result"]["metrics"].get("studies", {}).get(uid, {}).get("lesions", [])
        echo(f"  {uid}: {len(lesions)} lesion(s) found; RTSTRUCT and DICOM-SEG written")
    dicom_uid = f"{dicom_ref.study_id}{DICOM_SUFFIX}"
    url = f"{api.base_url}/studies/{study_ids[dicom_uid]}"
    return ClinicalWalk(study_ids, dicom_uid, uids, jobs, model, why, url)
