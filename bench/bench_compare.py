"""Benchmark: U-Net vs CNN vs FCN trained and tested on a 40-study synthetic cohort, on CPU.

Run: ``.venv/bin/python bench/bench_compare.py`` (or ``make bench``). Writes
``bench/results/compare_cpu.json`` with the settings (reduced input size and width on CPU: recorded),
wall time, and each model's test lesion-wise Dice, detection sensitivity by size and the rest of the
honest metrics. Targets (issue "Models…"): ≤ 30 min on 2 cores; U-Net lesion-wise Dice ≥ 0.70 and
detection of lesions > 6 mm ≥ 0.90; U-Net ahead of both baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from bmcore.data.synth import synth_cohort
from bmcore.experiments.compare import run_comparison
from bmcore.training.config import TrainConfig

HERE = Path(__file__).resolve().parent


def detection_over_6mm(summary: dict) -> float | None:
    detected = summary.get("detected_6to10mm_TC", 0) + summary.get("detected_gt10mm_TC", 0)
    total = summary.get("total_6to10mm_TC", 0) + summary.get("total_gt10mm_TC", 0)
    return detected / total if total else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--data", type=Path, default=HERE / "data" / "cohort40")
    parser.add_argument("--out", type=Path, default=HERE / "data" / "compare40")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--samples-per-epoch", type=int, default=1200)
    parser.add_argument(
        "--loss", default="dice_ce", help="ce (the study's) or dice_ce (converges faster on CPU)"
    )
    parser.add_argument("--result", type=Path, default=HERE / "results" / "compare_cpu.json")
    args = parser.parse_args()
    os.environ.setdefault("BMSEG_DATA_DIR", str(HERE / "data" / "bmseg-data"))

    started = time.perf_counter()
    if not (args.data / "cohort.json").exists():
        synth_cohort(args.data, args.cases, seed=40, layout="brats", workers=os.cpu_count() or 1)
    synth_seconds = time.perf_counter() - started
    config = TrainConfig(
        loss=args.loss,
        epochs=args.epochs,
        size=args.size,
        base_channels=args.base_channels,
        depth=4,
        batch_size=16,
        samples_per_epoch=args.samples_per_epoch,
        lesion_fraction=0.7,
        num_workers=1,
        early_stopping_patience=6,
        device="cpu",
    )
    train_started = time.perf_counter()
    report = run_comparison(
        args.data,
        args.out,
        config,
        show_progress=False,
        progress=lambda f, m: print(f"[{time.perf_counter() - train_started:7.0f} s] {m}", flush=True),
    )
    seconds = time.perf_counter() - train_started
    models = {}
    for arch, model in report["models"].items():
        test = model["test"]
        models[arch] = {
            "test_lesion_dice_TC": test.get("lesion_dice_TC"),
            "test_detection_over_6mm_TC": detection_over_6mm(test),
            "test_detection_sensitivity_TC": test.get("detection_sensitivity_TC"),
            "test_detection_by_size_TC": {
                b: test.get(f"detection_sensitivity_{b}_TC") for b in ("lt3mm", "3to6mm", "6to10mm", "gt10mm")
            },
            "test_fp_per_study_TC": test.get("fp_per_study_TC"),
            "test_dice_ET": test.get("dice_ET"),
            "test_dice_TC": test.get("dice_TC"),
            "test_dice_WT": test.get("dice_WT"),
            "test_hd95_TC": test.get("hd95_TC"),
            "test_paper_mean_dice": test.get("paper_mean_dice"),
            "test_paper_mean_iou": test.get("paper_mean_iou"),
            "best_epoch": model["best_epoch"],
            "epochs_run": len(model["history"]),
        }
    result = {
        "benchmark": "compare_cpu",
        "command": "python bench/bench_compare.py",
        "cases": args.cases,
        "settings": config.to_dict(),
        "split_patients": {k: len(v) for k, v in report["split"]["patients"].items()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "synth_seconds": round(synth_seconds, 1),
        "train_and_test_seconds": round(seconds, 1),
        "models": models,
        "report": str(args.out / "report.md"),
        "targets": {"minutes": 30, "unet_lesion_dice": 0.70, "unet_detection_over_6mm": 0.90},
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
