"""Benchmark: U-Net vs CNN vs FCN with bmseg's recipe, as 3-fold cross-validation by patient, on CPU.

Run: ``.venv/bin/python bench/bench_compare.py`` (or ``make bench`` with ``--with-compare``). The cohort
is the demo's geometry (1 mm voxels, a 160 × 192 × 64 slab; 70 studies) drawn with another seed, the
budget the demo's (width 16, depth 4, 6 epochs × 1,536 native 64² crops), the recipe the default
(``bmseg``; ``--recipe study`` for the paper's). Every patient is tested once, by the model of the fold
that did not train on it (``bmseg compare --folds 3``): the table is out of fold, pooled over every test
fold, with 95 % bootstrap intervals over patients, and mean ± std over the folds. Writes
``bench/results/compare_cpu.json`` and ``bench/results/compare_cpu_report.md``. Budget: ≤ 60 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from common import machine_info

from bmcore.data.synth import synth_cohort
from bmcore.evaluation.headline import KEY_FIGURES
from bmcore.jobs.parents.compare_folds import run_fold_comparison
from bmcore.training.config import RECIPES, TrainConfig

HERE = Path(__file__).resolve().parent
KEYS = (*KEY_FIGURES, "dice_TC", "paper_mean_dice")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=70)
    parser.add_argument("--seed", type=int, default=40, help="cohort seed (the demo's is another)")
    parser.add_argument("--data", type=Path, default=HERE / "data" / "compare_cohort")
    parser.add_argument("--out", type=Path, default=HERE / "data" / "compare_folds")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--recipe", default="bmseg", choices=list(RECIPES))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples-per-epoch", type=int, default=1536)
    parser.add_argument("--result", type=Path, default=HERE / "results" / "compare_cpu")
    args = parser.parse_args()
    os.environ.setdefault("BMSEG_DATA_DIR", str(HERE / "data" / "bmseg-data"))

    started = time.perf_counter()
    if not (args.data / "cohort.json").exists():
        synth_cohort(args.data, args.cases, args.seed, "brats", (160, 192, 64), (1.0, 1.0, 1.0), workers=2)
    synth_seconds = time.perf_counter() - started
    config = TrainConfig.from_dict(
        {
            "recipe": args.recipe,
            "epochs": args.epochs,
            "samples_per_epoch": args.samples_per_epoch,
            "base_channels": 16,
            "depth": 4,
            "batch_size": 16,
            "val_slices": 192,
            "num_workers": 1,
            "device": "cpu",
        }
    )
    train_started = time.perf_counter()
    result = run_fold_comparison(args.data, args.out, config, ("unet", "cnn", "fcn"), args.folds)
    seconds = time.perf_counter() - train_started
    models = {
        arch: {
            "oof": {k: summary["oof"].get(k) for k in KEYS} if summary["oof"] else None,
            "oof_ci95": {k: summary["oof"].get(f"{k}_ci95") for k in KEYS} if summary["oof"] else None,
            "fold_mean": {k: summary["mean"].get(f"test_{k}") for k in KEYS},
            "fold_std": {k: summary["std"].get(f"test_{k}") for k in KEYS},
            "oof_studies": summary["oof_studies"],
            "patients": (summary["oof"] or {}).get("patients"),
            "lesions": (summary["oof"] or {}).get("lesions"),
        }
        for arch, summary in result["summaries"].items()
    }
    record = {
        "benchmark": "compare_cpu",
        "command": f"python bench/bench_compare.py --folds {args.folds} --recipe {args.recipe}",
        "cases": args.cases,
        "settings": config.to_dict(),
        "machine": machine_info(),
        "synth_seconds": round(synth_seconds, 1),
        "train_and_test_minutes": round(seconds / 60, 1),
        "models": models,
        "targets": {"minutes": 60},
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.with_suffix(".json").write_text(json.dumps(record, indent=1))
    shutil.copyfile(args.out / "report.md", args.result.with_name(args.result.name + "_report.md"))
    print((args.out / "report.md").read_text())
    print(f"{seconds / 60:.1f} minutes")


if __name__ == "__main__":
    main()
