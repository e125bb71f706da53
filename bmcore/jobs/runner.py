"""What a worker does with a job id: claim the row, run bmcore, write progress, result and status.

The job row is the truth (docs/design.md §6): each step re-reads it, so a task delivered twice finds the job
finished and does nothing, and a redelivered training job resumes from its ``last.pt`` and its MLflow
run. Cancellation is cooperative: ``should_stop`` reads the row's ``cancel_requested`` flag (at most once
a second) between batches. Errors are recorded as one readable line, the traceback as a log event.

A child of a sweep or cross-validation (``parent_id``) tells its parent when it ends
(:func:`bmcore.jobs.parents.steps.notify_parent`); the parent's own task runs in short steps
(:func:`run_parent`) and never waits for its children, so one worker consuming both queues cannot deadlock.

The worker's tasks run a job ``isolated``: in the job process (:mod:`bmcore.jobs.supervisor`, a fresh
interpreter kept warm between jobs, dying with the worker), which enforces the hard time limit
``settings.max_job_seconds`` the solo pool cannot; a job process that dies is settled like a lost worker.
Called in-process (the default: tests, tools), a job has no time limit. Parent steps always run
in-process: they are short. The worker itself never imports torch; the job process warms up with
:data:`WARM_UP`.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bmcore import imaging
from bmcore.config import get_settings
from bmcore.data.split import load_split
from bmcore.db import Study, session_scope
from bmcore.experiments.request import Tracking, TrainRequest
from bmcore.jobs import lifecycle
from bmcore.jobs.ingest import ingest_archive
from bmcore.jobs.parents.steps import advance, notify_parent
from bmcore.jobs.reaper import Heartbeat, registered_version
from bmcore.jobs.search import get_job, is_cancel_requested
from bmcore.jobs.supervisor import run_in_job_process
from bmcore.tracking.registry import model_warnings
from bmcore.training.config import TrainConfig

CANCELLED = ("TrainingCancelled", "InferenceCancelled")
# What the job process imports before it says ready (torch, MLflow), so a job's time limit counts the job.
WARM_UP = ("bmcore.experiments.tracked", "bmcore.inference", "bmcore.evaluation.evaluate")

log = logging.getLogger(__name__)


class Throttle:
    """Call ``function`` at most once per ``seconds`` (the last value always gets through on ``flush``)."""

    def __init__(self, function: Callable, seconds: float = 1.0):
        self.function, self.seconds, self.last = function, seconds, 0.0

    def __call__(self, *args, force: bool = False):
        now = time.monotonic()
        if force or now - self.last >= self.seconds:
            self.last = now
            return self.function(*args)
        return None


def job_dir(job_id: str) -> Path:
    return get_settings().results_dir / "jobs" / job_id


def run_job(job_id: str, worker_host: str | None = None, isolated: bool = False) -> str | None:
    """Run one job to its end; returns its final status (None when there was nothing to run).

    ``isolated`` (the worker's tasks): in the job process, within ``settings.max_job_seconds``; the
    status is then also "queued" when the job process died and the job was queued for another attempt.
    A job with a parent then reports to it, even when it was not run (cancelled before it started).
    """
    host = worker_host or socket.gethostname()
    status = run_in_job_process(job_id, host, _run_job, WARM_UP) if isolated else _run_job(job_id, host)
    try:
        notify_parent(job_id)
    except Exception:  # the parent's recheck step catches up; this job's outcome stands
        log.warning("could not notify the parent of job %s:\n%s", job_id, traceback.format_exc())
    return status


def run_parent(job_id: str, step: str = "start", worker_host: str | None = None) -> str | None:
    """One short step of a sweep or cross-validation parent (:func:`bmcore.jobs.parents.steps.advance`)."""
    return advance(job_id, step, worker_host or socket.gethostname())


def _run_job(job_id: str, worker_host: str, on_claim: Callable[[int], None] | None = None) -> str | None:
    """Claim, run, record; ``on_claim(attempt)`` once claimed (the job process tells the worker)."""
    with session_scope() as session:
        job = lifecycle.claim_job(session, job_id, worker_host)
        if job is None:
            return None
        job_type, params, run_id, study_id = job.type, dict(job.params), job.mlflow_run_id, job.study_id
        attempt = job.attempts
    if on_claim is not None:
        on_claim(attempt)

    def report(fraction: float, message: str) -> None:
        with session_scope() as session:
            lifecycle.update_progress(session, job_id, fraction, message)

    def cancelled() -> bool:
        with session_scope() as session:
            return is_cancel_requested(session, job_id)

    cancel_check = Throttle(cancelled, 1.0)
    progress = Throttle(report, 1.0)
    try:
        runner = RUNNERS[job_type]
        with Heartbeat(job_id):  # a worker that vanishes stops beating; bmcore.jobs.reaper re-queues its job
            metrics, artifacts = runner(
                job_id, params, run_id, study_id, progress, lambda: bool(cancel_check())
            )
        with session_scope() as session:
            lifecycle.record_result(session, job_id, metrics, artifacts)
            lifecycle.finish_job(session, job_id, "succeeded")
        return "succeeded"
    except Exception as exc:  # the job fails, the worker lives on
        if type(exc).__name__ in CANCELLED:
            with session_scope() as session:
                lifecycle.finish_job(session, job_id, "cancelled", None)
            return "cancelled"
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        with session_scope() as session:
            lifecycle.log_event(session, job_id, traceback.format_exc()[-4000:], level="debug")
            lifecycle.finish_job(session, job_id, "failed", message)
        return "failed"


def _remember_run(job_id: str) -> Callable[[str], None]:
    def remember(run_id: str) -> None:
        with session_scope() as session:
            job = get_job(session, job_id)
            job.mlflow_run_id = run_id
            session.commit()

    return remember


def run_train(job_id: str, params: dict, run_id: str | None, study_id, progress, should_stop):
    from bmcore.experiments.tracked import tracked_train  # lazy: torch, loaded by the first train job

    params = dict(params)
    data = params.pop("data")
    split_seed = int(params.pop("split_seed", params.get("seed", 0)))
    split = params.pop("split", None)
    if isinstance(split, str):
        split = load_split(split)
    evaluate_test = bool(params.pop("evaluate_test", False))
    champion_eligible = bool(params.pop("champion_eligible", True))
    parent_run_id = params.pop("mlflow_parent_run_id", None)
    params.pop("config_hash", None)
    dataset = params.pop("dataset", None)  # the data set's name (recorded for people); ``data``: its path
    params.setdefault("num_workers", 0)
    config = TrainConfig.from_dict(params)
    # A lost attempt that got as far as registering the model: finish without a second registry version.
    registered = registered_version(run_id) if run_id else None
    tracking = Tracking(
        enabled=registered is None,
        run_id=run_id,
        run_name=f"job-{job_id[:8]}-{config.arch}",
        tags={"bmseg.job_id": job_id} | ({"bmseg.dataset": str(dataset)} if dataset else {}),
        parent_run_id=parent_run_id,
        champion_eligible=champion_eligible,
        on_run=_remember_run(job_id),
    )
    request = TrainRequest(
        data,
        config,
        job_dir(job_id),
        resume=True,
        split_seed=split_seed,
        split=split,
        should_stop=should_stop,
        progress=progress,
        show_progress=False,
        tracking=tracking,
    )
    summary = tracked_train(request)
    summary["registered"] = summary["registered"] or registered
    metrics = dict(summary["metrics"]) | {
        "registered": summary["registered"],
        "run_id": summary["run_id"],
        "epochs_run": summary["epochs_run"],
    }
    artifacts = _train_artifacts(summary)
    if evaluate_test:
        figures, artifacts["test_cases"] = _score_test_studies(
            job_id, data, summary, config.device, progress, should_stop
        )
        metrics |= figures
    return metrics, artifacts


def _train_artifacts(summary: dict) -> dict[str, str]:
    """A finished run's files: checkpoint, curves, split, history, and the per-study validation results
    (shown on the job page) when the run wrote them."""
    out = Path(summary["out_dir"])
    artifacts = {
        "checkpoint": summary["checkpoint"],
        "curves": summary["curves"],
        "split": str(out / "split.json"),
        "history": str(out / "history.json"),
    }
    if (out / "validation.json").is_file():
        artifacts["validation"] = str(out / "validation.json")
    return artifacts


def _score_test_studies(job_id: str, data, summary: dict, device: str, progress, should_stop):
    """Score the best checkpoint on the run's test studies (whole volumes, every convention): the
    ``test_*`` figures and ``test_cases.json`` (per-study results, pooled by a cross-validation parent)."""
    # lazy: torch; a worker that only takes parent steps (cpu queue) never loads it
    from bmcore.evaluation.evaluate import evaluate_studies
    from bmcore.inference import load_predictor

    test_ids = set(load_split(Path(summary["out_dir"]) / "split.json")["studies"]["test"])
    refs = [ref for ref in imaging.find_studies(data) if ref.study_id in test_ids]
    scorable = [r for r in refs if r.label is not None and r.label_kind == "multiclass"]
    result = {"summary": None, "cases": [], "skipped": []}
    if scorable:
        predictor = load_predictor(summary["checkpoint"], device=device)
        result = evaluate_studies(
            predictor,
            refs,
            on_study=lambda i, n, s: progress(0.95, f"tested {s} ({i}/{n})"),
            should_stop=should_stop,
        )
    else:
        result["skipped"] = [{"study_id": r.study_id, "reason": "no 3-class label"} for r in refs]
    path = job_dir(job_id) / "test_cases.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    figures = {
        f"test_{key}": value
        for key, value in (result["summary"] or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return figures | {"test_studies": len(result["cases"])}, str(path)


def _study_refs(params: dict, study_id: int | None):
    if study_id is not None:
        with session_scope() as session:
            study = session.get(Study, study_id)
            if study is None:
                raise LookupError(f"unknown study id: {study_id}")
            directory = study.directory
        return imaging.find_studies(directory)
    if "study_dir" in params:
        return imaging.find_studies(params["study_dir"])
    return imaging.find_studies(params["data"])


def run_segment(job_id: str, params: dict, run_id, study_id, progress, should_stop):
    from bmcore.inference import load_predictor, segment_study  # lazy: torch, loaded by the first segment job

    refs = _study_refs(params, study_id)
    pseudonym = None  # a stored study's patient pseudonym names the patient in DICOM outputs
    if params.get("dicom"):
        from bmcore.dicom import write_dicom_outputs, zip_series  # lazy: pydicom, highdicom; dicom jobs only

        if study_id is not None:
            with session_scope() as session:
                pseudonym = session.get(Study, study_id).patient.pseudonym
    model = params.get("model", "models:/bmseg-unet@champion")
    predictor = load_predictor(model)
    out = job_dir(job_id)
    metrics, artifacts = {"model": model, "model_warnings": model_warnings(model), "studies": {}}, {}
    for index, ref in enumerate(refs):

        def on_batch(i, n, index=index, name=ref.study_id):
            progress((index + i / n) / len(refs), f"{name}: slice batch {i}/{n}")

        result = segment_study(
            predictor,
            ref,
            out,
            tta=params.get("tta"),  # absent: the model's own recorded default
            on_batch=on_batch,
            should_stop=should_stop,
        )
        metrics["studies"][ref.study_id] = {"lesions": result.lesions, "label_voxels": result.label_voxels}
        artifacts[f"{ref.study_id}_seg"] = str(result.mask_path)
        artifacts[f"{ref.study_id}_lesions"] = str(result.lesions_path)
        if params.get("dicom"):  # RTSTRUCT, DICOM-SEG and (NIfTI studies) the referenced MR series, zipped
            t1ce, name = ref.images["t1ce"], pseudonym or ref.patient_id
            written = write_dicom_outputs(
                t1ce.parent, result.mask_path, result.lesions, out, ref.study_id, name, t1ce
            )
            artifacts[f"{ref.study_id}_rtstruct"] = str(written["rtstruct"])
            artifacts[f"{ref.study_id}_dicom_seg"] = str(written["seg"])
            if "mr_series" in written:
                artifacts[f"{ref.study_id}_t1ce_dicom"] = str(zip_series(written["mr_series"]))
    metrics["lesion_count"] = sum(len(s["lesions"]) for s in metrics["studies"].values())
    return metrics, artifacts


def run_evaluate(job_id: str, params: dict, run_id, study_id, progress, should_stop):
    # lazy: torch; a worker that only takes parent steps (cpu queue) never loads it
    from bmcore.evaluation.evaluate import evaluate_studies
    from bmcore.inference import load_predictor

    refs = _study_refs(params, study_id)
    if params.get("split"):
        split = params["split"]
        test_ids = set((split if isinstance(split, dict) else load_split(split))["studies"]["test"])
        refs = [r for r in refs if r.study_id in test_ids]
    predictor = load_predictor(params.get("model", "models:/bmseg-unet@champion"))
    result = evaluate_studies(
        predictor,
        refs,
        tta=params.get("tta"),  # absent: the model's own recorded default
        on_study=lambda i, n, s: progress(i / n, f"scored {s}"),
        should_stop=should_stop,
    )
    out = job_dir(job_id)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result["summary"].items() if k != "confusion"}
    return summary | {"skipped": result["skipped"]}, {"metrics": str(out / "metrics.json")}


def run_ingest(job_id: str, params: dict, run_id, study_id, progress, should_stop):
    """A DICOM archive uploaded through the web, imported as a study of its group
    (:func:`bmcore.jobs.ingest.ingest_archive`); the result names the study."""
    return ingest_archive(job_id, params, progress)


RUNNERS = {"train": run_train, "segment": run_segment, "evaluate": run_evaluate, "ingest": run_ingest}
