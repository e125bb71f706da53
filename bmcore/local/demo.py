"""``bmseg demo`` (``make demo``): the main job, end to end, on embedded defaults.

Writes a synthetic cohort, starts the local stack (:mod:`bmcore.local.stack`), submits U-Net, CNN and FCN
training **through the queue** (tracked in MLflow, registered as ``bmseg-<arch>``), then one evaluation
job per registered version on the held-out test patients, follows their progress, and prints the
comparison: the study's Table IV layout beside the honest metrics, where the report and curves are, and
the dashboard and MLflow URLs. Small widths and few epochs so it fits a laptop's CPU; the full-size
settings for GPUs are in the README.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from bmcore.config import get_settings

ARCHS = ("unet", "cnn", "fcn")


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
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from bmcore.db import session_scope
    from bmcore.jobs.lifecycle import get_job, job_to_dict

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
    from bmcore.db import Result, session_scope

    with session_scope() as session:
        result = session.query(Result).filter_by(job_id=job_id).one()
        return dict(result.metrics), dict(result.artifacts)


def ensure_demo_user() -> None:
    from bmcore.accounts import create_user
    from bmcore.db import User, session_scope

    with session_scope() as session:
        if session.query(User).filter_by(email=DEMO_USER[0]).one_or_none() is None:
            create_user(session, DEMO_USER[0], DEMO_USER[1], is_admin=True)


def run_demo(
    quick: bool = False, serve: bool = True, web_port: int = 8000, mlflow_port: int = 5000, echo=print
) -> dict:
    from bmcore.data.synth import synth_cohort
    from bmcore.db import session_scope
    from bmcore.experiments.compare import STUDY_TABLE, paper_row, report_markdown
    from bmcore.jobs.lifecycle import submit_job
    from bmcore.local.stack import Stack, wait_until
    from bmcore.reports.plots import plot_curves

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
        with session_scope() as session:
            train_ids = {
                f"train {arch}": submit_job(
                    session, "train", {"data": str(cohort), "arch": arch, **plan.train}
                ).id
                for arch in ARCHS
            }
        echo("queued training jobs: " + ", ".join(f"{k} {v}" for k, v in train_ids.items()))
        trained = follow(train_ids)
        failed = [f"{name}: {job['error']}" for name, job in trained.items() if job["status"] != "succeeded"]
        if failed:
            raise RuntimeError("demo training failed: " + "; ".join(failed))
        train_results = {arch: result_of(train_ids[f"train {arch}"]) for arch in ARCHS}
        with session_scope() as session:
            eval_ids = {}
            for arch, (metrics, artifacts) in train_results.items():
                model = f"models:/{metrics['registered']['name']}/{metrics['registered']['version']}"
                eval_ids[f"evaluate {arch}"] = submit_job(
                    session, "evaluate", {"data": str(cohort), "model": model, "split": artifacts["split"]}
                ).id
        evaluated = follow(eval_ids)
        failed = [
            f"{name}: {job['error']}" for name, job in evaluated.items() if job["status"] != "succeeded"
        ]
        if failed:
            raise RuntimeError("demo evaluation failed: " + "; ".join(failed))
        report = build_report(
            cohort,
            train_results,
            {a: result_of(eval_ids[f"evaluate {a}"])[0] for a in ARCHS},
            demo_dir / "report",
            paper_row,
            plot_curves,
            STUDY_TABLE,
        )
        markdown = report_markdown(report)
        (demo_dir / "report" / "report.md").write_text(markdown)
        (demo_dir / "report" / "report.json").write_text(json.dumps(report, indent=1, default=str))
        echo(markdown)
        echo(f"report: {demo_dir / 'report' / 'report.md'}\ncurves: {report['files']['curves']}")
        echo(f"dashboard: {urls['dashboard']} (sign in as {DEMO_USER[0]} / {DEMO_USER[1]})")
        echo(f"MLflow: {urls['mlflow']} (registered models bmseg-unet, bmseg-cnn, bmseg-fcn)")
        report["urls"] = urls
        report["jobs"] = {
            **{k: v["status"] for k, v in trained.items()},
            **{k: v["status"] for k, v in evaluated.items()},
        }
        if serve:
            echo("the stack keeps running; press Ctrl-C to stop it")
            wait_until(lambda: False, float("inf"), "forever", stack)
        return report
    except KeyboardInterrupt:
        echo("stopping")
        return {}
    finally:
        stack.stop()


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
