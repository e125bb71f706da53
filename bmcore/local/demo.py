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
from bmcore.evaluation.headline import HEADLINE, KEY_FIGURES, format_with_interval, headline_caption
from bmcore.jobs.lifecycle import submit_job
from bmcore.jobs.search import get_job, job_to_dict
from bmcore.local.clinical import RANKED_BY, studies_count, walk_clinical_path
from bmcore.local.stack import Stack, wait_until
from bmcore.reports.plots import plot_curves
from bmcore.reports.tables import markdown_table
from bmcore.training.config import TrainConfig


@dataclass(frozen=True)
class DemoPlan:
    cases: int
    seed: int
    shape: tuple[int, int, int] | None
    spacing: tuple[float, float, float] | None
    train: dict
    second: dict | None = None  # the second cohort: synth_cohort arguments (another seed and layout)


FULL = DemoPlan(
    # 49 patients (68 studies): the 67/20/13 split leaves 7 lesion-bearing validation and 5 test patients,
    # and 6+ test lesions in every size bin (< 3, 3-6, 6-10, > 10 mm: 7, 8, 6, 16; the seed was picked
    # for that, from the ground truth alone). 1 mm voxels; the field of view is a 64 mm axial slab.
    cases=68,
    seed=16,
    shape=(160, 192, 64),
    spacing=(1.0, 1.0, 1.0),
    train={  # bmseg's recipe (the defaults), at a budget two CPU cores train in minutes
        "base_channels": 16,  # width 8 never separates the lesion classes (bench/bench_width.py)
        "depth": 4,
        "epochs": 6,  # 4 x 1,024 left the U-Net still learning (val loss falling fast) and edema unstable
        "samples_per_epoch": 1536,
        "batch_size": 16,
        "val_slices": 192,
        "num_workers": 1,
    },
    # UCSF-BMSR's layout: anisotropic 0.86 x 0.86 x 1.5 mm, another seed and field of view, scored
    # without retraining on its studies with three-class labels
    second={
        "cases": 8,
        "seed": 8,
        "layout": "ucsf",
        "shape": (184, 224, 48),
        "spacing": (0.86, 0.86, 1.5),
        "multiclass_fraction": 1.0,
    },
)
QUICK = DemoPlan(
    cases=6,
    seed=7,
    shape=(64, 64, 32),
    spacing=(3.5, 3.5, 5.0),
    train={
        "crop": 32,
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
CLINICAL_STUDIES = 4  # test studies the clinical path uploads and segments (the evaluation scored them all)


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
        synth_cohort(
            cohort, plan.cases, seed=plan.seed, layout="brats", shape=plan.shape, spacing=plan.spacing
        )
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
    test_studies = report["split"]["studies"]["test"][:CLINICAL_STUDIES]
    echo(
        f"the clinical path: {len(test_studies)} test studies through the API, one of them as a DICOM series"
    )
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
    report["config"] = TrainConfig.from_dict(plan.train).to_dict()
    markdown = report_markdown(report)
    write_report(out, report, markdown)  # kept even if the second cohort's evaluation fails
    echo(markdown)
    if plan.second:
        model = registered_model(train_results["unet"][0])
        report["second_cohort"] = evaluate_second_cohort(plan, out.parent, model, echo)
        markdown += "\n" + report["second_cohort"]["markdown"] + "\n"
        write_report(out, report, markdown)
    echo(f"report: {out / 'report.md'}\ncurves: {report['files']['curves']}")
    report["jobs"] = {k: v["status"] for k, v in (trained | evaluated).items()}
    return report


def write_report(out: Path, report: dict, markdown: str) -> None:
    (out / "report.md").write_text(markdown)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))


def registered_model(train_metrics: dict) -> str:
    """The registry URI of the version a train job registered."""
    return f"models:/{train_metrics['registered']['name']}/{train_metrics['registered']['version']}"


def register_cohort(cohort: Path, name: str | None = None, promotable: bool = True) -> str:
    """The demo cohort as a promotable data set (``demo``, or ``demo-quick``), registered on first use, so
    the demo's training runs may move ``champion`` as any run on a promotable data set does; its name.
    The second cohort is registered under ``name``, not promotable (it is only evaluated on)."""
    name = name or cohort.parent.name
    with session_scope() as session:
        dataset = find_dataset(session, name)
        if dataset is None:
            add_dataset(session, name, cohort.absolute(), promotable=promotable)
        elif Path(dataset.path) != cohort.absolute() or dataset.promotable != promotable:
            raise ValueError(
                f"a data set named {name!r} is registered for {dataset.path}; the demo needs it to be "
                f"{cohort.absolute()}, {'' if promotable else 'not '}promotable "
                f"(bmseg datasets remove {name})"
            )
    return name


def evaluate_second_cohort(plan: DemoPlan, demo_dir: Path, model: str, echo: Callable[[str], None]) -> dict:
    """The U-Net, without retraining, on a second cohort of another seed, layout and field of view
    (``plan.second``): one evaluation job through the queue; returns its summary and printed table."""
    spec = dict(plan.second or {})
    cohort = demo_dir / "second-cohort"
    if not (cohort / "cohort.json").exists():
        echo(f"writing the second cohort ({spec['cases']} studies, {spec['layout']} layout) to {cohort}")
        synth_cohort(cohort, spec.pop("cases"), **spec)
    dataset = register_cohort(cohort, name=f"{demo_dir.name}-second", promotable=False)
    ids = submit_each("evaluate", {"evaluate unet, second cohort": {"model": model}}, dataset)
    follow_to_success(ids, "second-cohort evaluation")
    summary = result_of(ids["evaluate unet, second cohort"])[0]
    labels = {key: (label, convention) for key, label, convention in HEADLINE}
    rows = [[labels[k][0], format_with_interval(summary, k), labels[k][1]] for k in KEY_FIGURES]
    layout = f"{plan.second['layout']} layout, {plan.second['spacing']} mm, seed {plan.second['seed']}"
    table = "\n".join(
        [
            f"## (c) The same U-Net, not retrained, on a second cohort ({layout})",
            "",
            markdown_table(["figure", "unet", "convention"], rows),
            "",
            f"Scored: {headline_caption(summary)}.",
        ]
    )
    echo(table)
    return {"data": str(cohort), "model": model, "summary": summary, "markdown": table}


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
            "validation": {key: metrics.get(key) for key in RANKED_BY},
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
