"""Benchmark: the training-recipe ablation, on a synthetic cohort's validation patients.

Run: ``.venv/bin/python bench/bench_recipe.py`` (the full ablation, written to
``bench/results/recipe_ablation.{md,json}``) or ``--quick`` (a smoke run of a minute or two on a tiny
cohort, written under ``bench/data/recipe_quick/``).

One factor at a time from the candidate recipe (the ``candidate`` row: Dice + CE, native-resolution 64²
crops inside the brain box, lesion-centred for half the draws, one neighbouring slice on each side as extra
channels, left-right flip TTA), each row trained with the same budget (epochs × crops per epoch): the
study's recipe (CE on whole slices resized to ``--size``²), CE alone, class-weighted CE, whole resized
slices instead of crops, 2D input, lesion-balanced sampling, a higher lesion fraction; then inference
options of the candidate model without retraining (no TTA, minimum component sizes). The ``2d`` row (the
candidate without neighbouring slices) did best and, with TTA off (``no_tta``: no gain at twice the
inference time), became bmseg's recipe. Every row is scored on the
**validation** patients of the patient-level split (the test patients are never cached, predicted
or read), under the ``brats2025`` convention (:func:`bmcore.metrics.conventions.lesion_wise`, tumour
core): lesion-wise Dice TC as the mean over studies with a large lesion, with a 95 % percentile
bootstrap interval over patients; detection per diameter bin (< 3, 3–6, 6–10, > 10 mm, Dice ≥ 0.1)
pooled over the validation lesions; false-positive lesions per study; minutes (training plus validation
inference; inference alone for the inference rows). ``best.pt`` is chosen on the validation slices'
loss, as ``bmseg train`` does, alike for every row. The default cohort is the demo's geometry (1 mm
voxels, a 160 × 192 × 64 slab) drawn with another seed, and the budget is the demo's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import machine_info
from scipy import stats

from bmcore import imaging
from bmcore.data.synth import synth_cohort
from bmcore.experiments.training import prepare_data
from bmcore.inference import load_predictor, predict_volume
from bmcore.metrics import DIAMETER_BIN_NAMES, diameter_bin
from bmcore.metrics.conventions import lesion_wise
from bmcore.reports.tables import markdown_table
from bmcore.training.config import RECIPES, TrainConfig
from bmcore.training.loop import fit
from bmcore.training.parts import build_training_parts

HERE = Path(__file__).resolve().parent

BIN_LABELS = dict(zip(DIAMETER_BIN_NAMES, ("< 3 mm", "3–6 mm", "6–10 mm", "> 10 mm"), strict=True))
FULL = {  # the demo's cohort geometry (another seed) and the demo's training budget
    "cases": 58,
    "shape": (160, 192, 64),
    "spacing": (1.0, 1.0, 1.0),
    "size": 128,
    "base_channels": 16,
    "depth": 4,
    "epochs": 4,
    "samples_per_epoch": 1024,
    "batch_size": 16,
    "val_slices": 192,
    "min_components": "10,30",
}
QUICK = {  # a smoke run: every row and the interval computed, nothing to read into the figures
    "cases": 14,
    "shape": (64, 64, 32),
    "spacing": (3.0, 3.0, 4.0),
    "size": 64,
    "base_channels": 8,
    "depth": 3,
    "epochs": 2,
    "samples_per_epoch": 64,
    "batch_size": 16,
    "val_slices": 32,
    "min_components": "3",
}


def ablation_rows(min_components: list[int], size: int) -> list[dict]:
    """Each row: name, what it changes from the ``candidate`` row, TrainConfig overrides (None: the
    candidate model, re-scored) and predictor overrides."""
    study = {**RECIPES["study"], "recipe": "study", "size": size}
    rows = [
        ("candidate", "the candidate: Dice + CE, native 64² crops, 2.5D (±1 slice), flip TTA", {}, {}),
        ("study", f"the study's recipe: CE, whole slices resized to {size}², no TTA", study, {}),
        ("ce", "cross-entropy alone", {"loss": "ce"}, {}),
        (
            "ce_weighted",
            "CE term with inverse-frequency class weights",
            {"class_weights": "inverse_frequency"},
            {},
        ),
        ("whole_slices", f"whole slices resized to {size}² instead of crops", {"crop": 0, "size": size}, {}),
        ("2d", "no neighbouring slices (2D); bmseg's recipe, without TTA", {"context_slices": 0}, {}),
        ("lesion_balance", "every lesion drawn as often, whatever its size", {"lesion_balance": True}, {}),
        ("lesion_0.8", "lesion fraction 0.8 (0.5)", {"lesion_fraction": 0.8}, {}),
    ]
    rows.append(("no_tta", "candidate model, no flip TTA", None, {"tta": False}))
    rows += [
        (
            f"min_comp_{n}",
            f"candidate model, components < {n} voxels dropped",
            None,
            {"min_component_voxels": n},
        )
        for n in min_components
    ]
    return [{"name": n, "what": w, "train": t, "inference": i} for n, w, t, i in rows]


def score_studies(predictor, refs: list[imaging.StudyRef]) -> list[dict]:
    """brats2025 tumour-core lesion-wise results of every validation study with a 3-class label."""
    studies = []
    for ref in refs:
        if ref.label is None or ref.label_kind != "multiclass":
            continue
        volume = imaging.load_study(ref, modalities=predictor.modalities)
        result = lesion_wise(
            predict_volume(predictor, volume), volume.label, volume.spacing, "brats2025", "TC"
        )
        studies.append(
            {
                "study_id": ref.study_id,
                "patient_id": ref.patient_id,
                "lesion_dice": result["lesion_dice"],
                "n_fp": result["n_fp"],
                "lesions": [(lesion["diameter_mm"], lesion["detected"]) for lesion in result["lesions"]],
            }
        )
    return studies


def patient_interval(studies: list[dict]) -> list[float] | None:
    """95 % percentile bootstrap interval of the mean over studies, resampling patients (the ratio of
    their summed study Dice to their counted studies); None with fewer than two patients to resample."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for study in studies:
        if not np.isnan(study["lesion_dice"]):
            sums[study["patient_id"]] = sums.get(study["patient_id"], 0.0) + study["lesion_dice"]
            counts[study["patient_id"]] = counts.get(study["patient_id"], 0) + 1
    if len(counts) < 2:
        return None
    patients = sorted(counts)
    data = (np.array([sums[p] for p in patients]), np.array([counts[p] for p in patients], dtype=float))
    result = stats.bootstrap(
        data,
        lambda s, c, axis=-1: s.sum(axis=axis) / c.sum(axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=2000,
        rng=np.random.default_rng(0),
    )
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def summarise(studies: list[dict]) -> dict:
    dice = [s["lesion_dice"] for s in studies if not np.isnan(s["lesion_dice"])]
    lesions = [lesion for s in studies for lesion in s["lesions"]]
    detection = {}
    for name in DIAMETER_BIN_NAMES:
        found = [detected for diameter, detected in lesions if diameter_bin(diameter) == name]
        detection[name] = {"detected": int(sum(found)), "total": len(found)}
    return {
        "lesion_dice_TC": float(np.mean(dice)) if dice else None,
        "lesion_dice_TC_ci95": patient_interval(studies),
        "studies_scored": len(dice),
        "studies": len(studies),
        "patients": len({s["patient_id"] for s in studies}),
        "lesions": len(lesions),
        "detection_TC": detection,
        "fp_per_study_TC": float(np.mean([s["n_fp"] for s in studies])) if studies else None,
    }


def train_row(config: TrainConfig, prepared, out_dir: Path) -> Path:
    parts = build_training_parts(config, prepared.train_cases, prepared.val_cases)
    return fit(parts, config, out_dir, progress=False).best_checkpoint


def run_rows(args, base: TrainConfig, prepared: dict, out: Path) -> list[dict]:
    """Train and score every row; the inference rows re-score the candidate model."""
    results, candidate = [], None
    for row in ablation_rows([int(n) for n in args.min_components.split(",")], args.size):
        started = time.perf_counter()
        if row["train"] is not None:
            config = dataclasses.replace(base, **row["train"])
            checkpoint = train_row(config, prepared[config.cache_size], out / row["name"])
            predictor = load_predictor(checkpoint, device=config.device, precision=args.precision)
            candidate = candidate or predictor
        else:
            config, predictor = None, dataclasses.replace(candidate, **row["inference"])
        trained = time.perf_counter()
        summary = summarise(score_studies(predictor, prepared[base.cache_size].val_refs))
        finished = time.perf_counter()
        print(f"{row['name']}: {json.dumps(summary)} ({finished - started:.0f} s)", flush=True)
        results.append(
            {
                **{k: row[k] for k in ("name", "what", "train", "inference")},
                **summary,
                "train_minutes": round((trained - started) / 60, 2) if config else 0.0,
                "minutes": round((finished - started) / 60, 2),
            }
        )
    return results


def _cell(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
    header = ["row", "what changes", "lesion Dice TC [95 % CI]", *BIN_LABELS.values(), "FP/study", "minutes"]
    rows = []
    for row in result["rows"]:
        ci = row["lesion_dice_TC_ci95"]
        dice = _cell(row["lesion_dice_TC"]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else " [–]")
        bins = [row["detection_TC"][name] for name in DIAMETER_BIN_NAMES]
        bins = [f"{b['detected']}/{b['total']}" if b["total"] else "–" for b in bins]
        rows.append(
            [
                row["name"],
                row["what"],
                dice,
                *bins,
                _cell(row["fp_per_study_TC"], 2),
                _cell(row["minutes"], 2),
            ]
        )
    first = result["rows"][0]
    return "\n".join(
        [
            "# Recipe ablation: validation patients only, brats2025 convention, tumour core",
            "",
            f"Command: `{result['command']}`",
            "",
            f"Cohort: {result['cases']} synthetic studies (`{result['data']}`); split by patient "
            f"{result['split_patients']}; scored on the validation side: {first['studies']} studies of "
            f"{first['patients']} patients, {first['lesions']} lesions. Detection: lesions found "
            "(Dice ≥ 0.1) / lesions, by diameter. Settings of the `candidate` row: "
            f"`{json.dumps({k: result['settings'][k] for k in result['settings_shown']})}`.",
            "",
            markdown_table(header, rows),
            "",
        ]
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a tiny cohort and budget: a smoke run")
    for name, value in FULL.items():
        if name not in ("shape", "spacing"):
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    parser.add_argument("--shape", type=lambda t: tuple(int(v) for v in t.split(",")), default=None)
    parser.add_argument("--spacing", type=lambda t: tuple(float(v) for v in t.split(",")), default=None)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--result", type=Path, default=None, help="results path without suffix")
    parser.add_argument("--seed", type=int, default=15, help="cohort seed")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", help="inference: auto, fp32 or bf16")
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    for name, value in size.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    tag = "quick" if args.quick else "full"
    args.data = args.data or HERE / "data" / f"recipe_{tag}" / "cohort"
    args.out = args.out or HERE / "data" / f"recipe_{tag}" / "runs"
    args.result = args.result or (
        HERE / "data" / "recipe_quick" / "recipe_ablation"
        if args.quick
        else HERE / "results" / "recipe_ablation"
    )
    return args


def main() -> None:
    args = parse_args()
    os.environ.setdefault("BMSEG_DATA_DIR", str(args.out.parent / "bmseg-data"))
    started = time.perf_counter()
    if not (args.data / "cohort.json").exists():
        synth_cohort(
            args.data, args.cases, args.seed, "brats", args.shape, args.spacing, workers=os.cpu_count() or 1
        )
    shown = ("base_channels", "depth", "epochs", "samples_per_epoch", "batch_size", "val_slices", "crop")
    shown += ("loss", "context_slices", "lesion_fraction", "tta")
    budget = {k: getattr(args, k) for k in shown[:6]}
    base = TrainConfig(
        **budget, context_slices=1, num_workers=1, early_stopping_patience=6, device=args.device
    )  # the candidate: bmseg's recipe with 2.5D context, which the 2d row (bmseg's recipe) beat
    resized = dataclasses.replace(base, crop=0, size=args.size)  # whole-slice rows read a resized cache
    prepared = {c.cache_size: prepare_data(args.data, c, args.split_seed) for c in (base, resized)}
    assert prepared[0].split == prepared[args.size].split  # one split for every row
    rows = run_rows(args, base, prepared, args.out)
    result = {
        "benchmark": "recipe_ablation",
        "command": "python bench/bench_recipe.py " + " ".join(sys.argv[1:]),
        "cases": args.cases,
        "data": str(args.data),
        "settings": base.to_dict(),
        "settings_shown": list(shown),
        "split_patients": {k: len(v) for k, v in prepared[base.cache_size].split["patients"].items()},
        "convention": "brats2025",
        "machine": machine_info(),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.result.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
