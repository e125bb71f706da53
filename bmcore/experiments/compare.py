"""``bmseg compare``: U-Net, CNN and FCN on one patient split with one budget, reported two ways.

(a) the study's Table IV layout — train and validation accuracy, loss, Dice and IoU, paper-style
(pooled slice voxels, four classes including background) at each model's best epoch, with the study's
own figures beside them; (b) the honest table on the held-out test patients, on whole volumes in native
geometry: foreground Dice per class and region, lesion-wise Dice, detection by size, false positives per
study and HD95. Plus training curves and overlays of test slices.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bmcore import imaging
from bmcore.architectures import ARCHS
from bmcore.evaluation.evaluate import evaluate_studies
from bmcore.evaluation.headline import format_value, headline_caption, headline_rows
from bmcore.experiments.request import TrainRequest
from bmcore.experiments.training import prepare_data, train_run
from bmcore.inference import load_predictor, predict_volume
from bmcore.reports.plots import plot_curves, plot_overlays
from bmcore.reports.tables import markdown_table
from bmcore.training.config import TrainConfig

# Table IV of the study (train / validation); IoU there is a mean over classes with background.
STUDY_TABLE = {
    "unet": {
        "train_accuracy": 0.9975,
        "train_dice": 0.6449,
        "train_iou": 0.9681,
        "val_accuracy": 0.993,
        "val_dice": 0.631,
        "val_iou": 0.9681,
    },
    "cnn": {"train_dice": 0.388, "val_dice": 0.372},
    "fcn": {"train_dice": 0.44, "val_dice": 0.423},
}
PAPER_COLUMNS = (
    ("accuracy", "paper_accuracy"),
    ("loss", "loss"),
    ("dice", "paper_mean_dice"),
    ("iou", "paper_mean_iou"),
)
HONEST_KEYS = (
    "dice_ET",
    "dice_TC",
    "dice_WT",
    "lesion_dice_TC",
    "detection_sensitivity_TC",
    "detection_sensitivity_lt3mm_TC",
    "detection_sensitivity_3to6mm_TC",
    "detection_sensitivity_6to10mm_TC",
    "detection_sensitivity_gt10mm_TC",
    "fp_per_study_TC",
    "hd95_TC",
    "paper_mean_dice",
    "paper_mean_iou",
)


def paper_row(history: list[dict], best_epoch: int) -> dict:
    best = next((h for h in history if h["epoch"] == best_epoch), history[-1])
    return {
        f"{side}_{name}": best.get(f"{side}_{key}")
        for side in ("train", "val")
        for name, key in PAPER_COLUMNS
    }


def run_comparison(
    data_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    archs=ARCHS,
    split_seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
    show_progress: bool = True,
    split: dict | None = None,
) -> dict:
    """Train and test every architecture on one split (``split``, else drawn with ``split_seed``); write
    ``report.md``, ``report.json``, PNGs and each model's per-study test results
    (``<arch>/test_cases.json``, as a train job's ``test_cases`` artifact)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_data(data_dir, config, split_seed, split=split)
    if not prepared.test_refs:
        raise ValueError("the split left no test patients: the comparison needs at least 3 patients")
    models = {}
    for index, arch in enumerate(archs):
        arch_config = dataclasses.replace(config, arch=arch)
        if progress:
            progress(index / len(archs), f"training {arch}")
        request = TrainRequest(
            data_dir, arch_config, out_dir / arch, prepared=prepared, show_progress=show_progress
        )
        outcome = train_run(request)
        predictor = load_predictor(outcome.best_checkpoint, device=config.device)
        test = evaluate_studies(predictor, prepared.test_refs)
        (out_dir / arch / "test_cases.json").write_text(json.dumps(test, indent=1))
        models[arch] = {
            "checkpoint": str(outcome.best_checkpoint),
            "best_epoch": outcome.best_epoch,
            "paper": paper_row(outcome.history, outcome.best_epoch),
            "test": test["summary"],
            "test_skipped": test["skipped"],
            "test_cases": str(out_dir / arch / "test_cases.json"),
            "validation": outcome.validation["summary"] if outcome.validation else None,
            "history": outcome.history,
        }
    report = {
        "data": str(data_dir),
        "config": config.to_dict(),
        "split": prepared.split,
        "models": models,
        "study_table": STUDY_TABLE,
    }
    report["files"] = write_figures(report, prepared.test_refs, out_dir, config)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out_dir / "report.md").write_text(report_markdown(report))
    if progress:
        progress(1.0, "comparison written")
    return report


def write_figures(
    report: dict, test_refs: list[imaging.StudyRef], out_dir: Path, config: TrainConfig
) -> dict:
    histories = {arch: m["history"] for arch, m in report["models"].items()}
    files = {"curves": str(plot_curves(histories, out_dir / "curves.png", "U-Net vs CNN vs FCN"))}
    for arch, history in histories.items():
        files[f"curves_{arch}"] = str(plot_curves({arch: history}, out_dir / f"curves_{arch}.png", arch))
    predictors = {
        arch: load_predictor(m["checkpoint"], device=config.device) for arch, m in report["models"].items()
    }
    rows = []
    for ref in [r for r in test_refs if r.label_kind == "multiclass"][:3]:
        volume = imaging.load_study(ref, modalities=config.modalities)
        z = int(np.argmax((volume.label > 0).sum(axis=(0, 1))))
        channel = config.modalities.index("t1ce") if "t1ce" in config.modalities else 0
        masks = {"ground truth": volume.label[..., z]}
        for arch, predictor in predictors.items():
            masks[arch] = predict_volume(predictor, volume)[..., z]
        rows.append(
            {
                "title": f"{ref.study_id} z={z} ({config.modalities[channel]})",
                "image": volume.image[channel, ..., z],
                "masks": masks,
            }
        )
    if rows:
        files["overlays"] = str(plot_overlays(rows, out_dir / "overlays.png"))
    return files


PAPER_HEADER = (
    "model",
    "train acc",
    "train loss",
    "train Dice",
    "train IoU",
    "val acc",
    "val loss",
    "val Dice",
    "val IoU",
)


def report_markdown(report: dict) -> str:
    """``report.md``: the study's layout (a), the honest test figures (b) and the figure files."""
    sides = ", ".join(f"{k} {len(v)}" for k, v in report["split"]["patients"].items())
    lines = [
        "# U-Net vs CNN vs FCN",
        "",
        f"Data: `{report['data']}`; split by patient (seed {report['split']['seed']}): {sides} patients.",
        "",
        f"Recipe: {recipe_line(report.get('config'))}.",
        "",
        "## (a) The study's Table IV layout (paper-style: pooled slice voxels, 4 classes "
        "incl. background, best epoch)",
        "",
        markdown_table(PAPER_HEADER, paper_table_rows(report["models"])),
        "",
        "The study's IoU (0.968) beside its Dice (0.645) is only possible "
        "as a mean over classes with background included: for one mask pair IoU = Dice / (2 - Dice).",
        "",
        "## (b) Honest metrics on the test patients (whole volumes, native geometry)",
        "",
        *honest_table(report["models"]),
        "",
        "## Figures",
        "",
    ]
    lines += [f"- {name}: `{path}`" for name, path in report.get("files", {}).items()]
    return "\n".join(lines) + "\n"


def recipe_line(config: dict | None) -> str:
    """The recipe every model of a report was trained with, and its budget, as one line."""
    if not config:
        return "n/a"
    how = f"{config['loss']}, " + (
        f"native {config['crop']}² crops" if config["crop"] else f"whole slices resized to {config['size']}²"
    )
    how += f", ±{config['context_slices']} slices" if config["context_slices"] else ", 2D"
    how += ", flip TTA" if config["tta"] else ""
    budget = f"{config['epochs']} epochs × {config['samples_per_epoch'] or 'all'} slices, width "
    return f"`{config.get('recipe', 'n/a')}` ({how}); {budget}{config['base_channels']}"


def paper_table_rows(models: dict) -> list[list[str]]:
    """Two rows per model for table (a): bmseg's figures, then the study's (which has no loss)."""
    rows = []
    for arch, model in models.items():
        paper = model["paper"]
        rows.append(
            [f"{arch} (bmseg)"]
            + [
                format_value(paper.get(f"{side}_{name}"))
                for side in ("train", "val")
                for name, _ in PAPER_COLUMNS
            ]
        )
        study = STUDY_TABLE.get(arch, {})
        rows.append(
            [f"{arch} (study)"]
            + [
                format_value(study.get(f"{side}_{name}")) if name != "loss" else "n/a"
                for side in ("train", "val")
                for name, _ in PAPER_COLUMNS
            ]
        )
    return rows


def honest_table(models: dict) -> list[str]:
    """Table (b), one column per model, and the number of test studies under it."""
    archs = list(models)
    first = models[archs[0]]["test"]
    rows = [
        [label, *[headline_value(models[a]["test"], label) for a in archs], convention]
        for label, _, convention in headline_rows(first)
    ]
    table = markdown_table(["figure", *archs, "convention"], rows)
    return [table, "", f"Test side: {headline_caption(first)}."]


def headline_value(summary: dict, label: str) -> str:
    for row_label, value, _ in headline_rows(summary):
        if row_label == label:
            return value
    return "n/a"
