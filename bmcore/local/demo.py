"""``bmseg demo`` (``make demo``): the main job, end to end, on embedded defaults.

Writes a synthetic cohort, registers it as the promotable data set ``demo`` (``demo-quick``), starts the
local stack (:mod:`bmcore.local.stack`), submits U-Net, CNN and FCN training on it **through the queue**
(tracked in MLflow, registered as ``bmseg-<arch>``, ``champion`` moving as on any promotable data set),
then one evaluation job per registered version on the held-out test patients, follows their progress, and
prints the comparison: the study's Table IV layout beside the honest metrics, where the report and curves
are, and the dashboard and MLflow URLs. Then it walks the clinical path (:mod:`bmcore.local.clinical`): the
test studies go in through the HTTP API, one as a DICOM series, and are segmented with RTSTRUCT and
DICOM-SEG by the best architecture's champion, so the dashboard's Studies and Cohort pages show them.
Small widths and few epochs so it fits a laptop's CPU; the full-size settings for GPUs are in the README.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bmcore.accounts import create_user
from bmcore.architectures import ARCHS
from bmcore.config import get_settings
from bmcore.data.synth import synth_cohort
from bmcore.datasets import add_dataset, find_dataset
from bmcore.db import Result, User, session_scope
from bmcore.jobs.lifecycle import submit_job
from bmcore.jobs.search import get_job, job_to_dict
from bmcore.local.clinical import studies_count, walk_clinical_path
from bmcore.local.stack import Stack, wait_until
from bmcore.reports.plots import plot_curves


@dataclass(frozen=True)
class DemoPlan:
    cases: int
    shape: tuple[int, int, int] | None
    spacing: tuple[float, float, float] | None
    train: dict


FULL = DemoPlan(
    cases=10,
    shape=None,
    spacing=None,
    train={
        "size": 128,
        "base_channels": 16,  # width 8 never separates the lesion classes (bench/bench_width.py)
        "depth": 4,
        "epochs": 6,
        "samples_per_epoch": 384,
        "batch_size": 16,
        "num_workers": 1,
    },
)
QUICK = DemoPlan(
    cases=6,
    shape=(64, 64, 32),
    spacing=(3.5, 3.5, 5.0),
    train={
        "size": 64,
        "base_channels": 4,
        "depth": 2,
        "epochs": 2,
        "samples_per_epoch": 32,
        "batch_size": 8,
        "num_workers": 0,
        "augment": False,
    },
)
DEMO_USER = ("demo@bmseg.local", "demo-password")


def follow(job_ids: dict[str, str]) -> dict[str, dict]:
    """Progress bars for several jobs until all end; returns their final dicts."""
    finished: dict[str, dict] = {}
    with Progress(
        TextColumn("{task.description:<48}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f} %"),
        TimeElapsedColumn(),
    ) as bar:
        tasks = {name: bar.add_task(name, total=100) for name in job_ids}
        while len(finished) < len(job_ids):
            for name, job_id in job_ids.items():
                if name in finished:
                    continue
                with session_scope() as session:
                    job = job_to_dict(get_job(session, job_id))
                bar.update(
                    tasks[name],
                    completed=100 * (job["progress"] or 0),
                    description=f"{name}: {job['status']} {(job['message'] or '')[:30]}",
                )
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    finished[name] = job
            time.sleep(1)
    return finished


def result_of(job_id: str) -> tuple[dict, dict]:
    with session_scope() as session:
        result = session.query(Result).filter_by(job_id=job_id).one()
        return dict(result.metrics), dict(result.artifacts)


def ensure_demo_user() -> None:
    with session_scope() as session:
        if session.query(User).filter_by(email=DEMO_USER[0]).one_or_none() is None:
            create_user(session, DEMO_USER[0], DEMO_USER[1], is_admin=True)


def run_demo(
    quick: bool = False, serve: bool = True, web_port: int = 8000, mlflow_port: int = 5000, echo=print
) -> dict:
    """The whole demo (see the module docstring); returns the report, ``{}`` when interrupted."""
    settings = get_settings()
    plan = QUICK if quick else FULL
    demo_dir = settings.data_dir / ("demo-quick" if quick else "demo")
    cohort = demo_dir / "cohort"
    if not (cohort / "cohort.json").exists():
        echo(f"writing a synthetic cohort of {plan.cases} studies to {cohort}")
        synth_cohort(cohort, plan.cases, seed=7, layout="brats", shape=plan.shape, spacing=plan.spacing)
    stack = Stack(settings, web_port, mlflow_port, with_mlflow=True)
    try:
        urls = stack.start()
        ensure_demo_user()
        echo(f"stack up: dashboard {urls['dashboard']}, MLflow {urls['mlflow']}, Redis {urls['redis']}")
        report = train_and_evaluate(cohort, plan, demo_dir / "report", echo)
        report["clinical"] = clinical_path(urls["dashboard"], cohort, report, demo_dir / "clinical", echo)
        echo(f"dashboard: {urls['dashboard']} (sign in as {DEMO_USER[0]} / {DEMO_USER[1]})")
        echo(f"MLflow: {urls['mlflow']} (registered models bmseg-unet, bmseg-cnn, bmseg-fcn)")
        report["urls"] = urls
        if serve:
            echo("the stack keeps running; press Ctrl-C to stop it")
            wait_until(lambda: False, float("inf"), "forever", stack)
        return report
    except KeyboardInterrupt:
        echo("stopping")
        return {}
    finally:
        stack.stop()


def clinical_path(
    dashboard: str,
    cohort: Path,
    report: dict,
    work: Path,
    echo: Callable[[str], None],
    model: str | None = None,
) -> dict:
    """The test studies through the API, one as DICOM, segmented by the best architecture's champion
    (or ``model``; :mod:`bmcore.local.clinical`); prints where to look, returns what it left."""
    echo("the clinical path: the test studies through the API, one of them as a DICOM series")
    test_studies = report["split"]["studies"]["test"]
    walk = walk_clinical_path(
        dashboard, cohort, test_studies, work, DEMO_USER[0], report=report, model=model, echo=echo
    )
    echo(
        f"study page: {walk.study_url} ({walk.dicom_study}, imported from DICOM: the prediction over the "
        "ground truth, the lesion table, Download RTSTRUCT / DICOM-SEG)"
    )
    echo(f"studies: {dashboard}/studies, cohort: {dashboard}/cohort ({studies_count(len(walk.study_ids))})")
    jobs = {uid: job["id"] for uid, job in walk.jobs.items()}
    left = {"studies": walk.study_ids, "dicom_study": walk.dicom_study, "dicom_uids": walk.dicom_uids}
    return left | {"model": walk.model, "why": walk.why, "jobs": jobs, "study_url": walk.study_url}


def train_and_evaluate(cohort: Path, plan: DemoPlan, out: Path, echo: Callable[[str], None]) -> dict:
    """Train every architecture through the queue, evaluate each registered version, write the report."""
    # lazy: torch, kept out of the demo's start and of bmseg --help
    from bmcore.experiments.compare import STUDY_TABLE, paper_row, report_markdown

    dataset = register_cohort(cohort)
    train_params = {f"train {arch}": {"arch": arch, **plan.train} for arch in ARCHS}
    train_ids = submit_each("train", train_params, dataset)
    echo("queued training jobs: " + ", ".join(f"{k} {v}" for k, v in train_ids.items()))
    trained = follow_to_success(train_ids, "demo training")
    train_results = {arch: result_of(train_ids[f"train {arch}"]) for arch in ARCHS}
    eval_params = {
        f"evaluate {arch}": {"model": registered_model(metrics), "split": artifacts["split"]}
        for arch, (metrics, artifacts) in train_results.items()
    }
    eval_ids = submit_each("evaluate", eval_params, dataset)
    evaluated = follow_to_success(eval_ids, "demo evaluation")
    eval_metrics = {a: result_of(eval_ids[f"evaluate {a}"])[0] for a in ARCHS}
    report = build_report(cohort, train_results, eval_metrics, out, paper_row, plot_curves, STUDY_TABLE)
    markdown = report_markdown(report)
    (out / "report.md").write_text(markdown)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    echo(markdown)
    echo(f"report: {out / 'report.md'}\ncurves: {report['files']['curves']}")
    report["jobs"] = {k: v["status"] for k, v in (trained | evaluated).items()}
    return report


def registered_model(train_metrics: dict) -> str:
    """The registry URI of the version a train job registered."""
    return f"models:/{train_metrics['registered']['name']}/{train_metrics['registered']['version']}"


def register_cohort(cohort: Path) -> str:
    """The demo cohort as a promotable data set (``demo``, or ``demo-quick``), registered on first use, so
    the demo's training runs may move ``champion`` as any run on a promotable data set does; its name."""
    name = cohort.parent.name
    with session_scope() as session:
        dataset = find_dataset(session, name)
        if dataset is None:
            add_dataset(session, name, cohort.absolute(), promotable=True)
        elif Path(dataset.path) != cohort.absolute() or not dataset.promotable:
            raise ValueError(
                f"a data set named {name!r} is registered for {dataset.path}; the demo needs it to be its "
                f"cohort {cohort.absolute()}, promotable (bmseg datasets remove {name})"
            )
    return name


def submit_each(job_type: str, params_by_name: dict[str, dict], dataset: str) -> dict[str, str]:
    """Queue one ``job_type`` job on data set ``dataset`` per entry; returns the job ids by the same names.

    Training jobs on a promotable data set may take ``champion`` (internal ``champion_eligible``)."""
    with session_scope() as session:
        found = find_dataset(session, dataset)
        internal: dict = {"dataset": found.name}
        if job_type == "train":
            internal["champion_eligible"] = bool(found.promotable)
        return {
            name: submit_job(session, job_type, {"data": found.path, **params}, internal=internal).id
            for name, params in params_by_name.items()
        }


def follow_to_success(job_ids: dict[str, str], what: str) -> dict[str, dict]:
    """Follow the jobs until they end (see :func:`follow`); raises unless all succeeded."""
    finished = follow(job_ids)
    failed = [f"{name}: {job['error']}" for name, job in finished.items() if job["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{what} failed: " + "; ".join(failed))
    return finished


def build_report(
    cohort: Path, train_results: dict, eval_metrics: dict, out: Path, paper_row, plot_curves, study_table
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    models, histories = {}, {}
    split = None
    for arch, (metrics, artifacts) in train_results.items():
        history = json.loads(Path(artifacts["history"]).read_text())
        split = split or json.loads(Path(artifacts["split"]).read_text())
        histories[arch] = history
        models[arch] = {
            "checkpoint": artifacts["checkpoint"],
            "best_epoch": metrics["best_epoch"],
            "registered": metrics["registered"],
            "paper": paper_row(history, metrics["best_epoch"]),
            "test": eval_metrics[arch],
            "history": history,
        }
    curves = plot_curves(histories, out / "curves.png", "U-Net vs CNN vs FCN (demo, through the queue)")
    return {
        "data": str(cohort),
        "split": split,
        "models": models,
        "study_table": study_table,
        "files": {"curves": str(curves)},
    }
