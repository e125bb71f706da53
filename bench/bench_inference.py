"""Benchmark: end-to-end inference of one 240×240×155 four-modality study on the CPU, stage by stage.

Run: ``.venv/bin/python bench/bench_inference.py`` → ``bench/results/inference.json``.

The study is synthetic (``synth_cohort(tmp, 1, seed, "brats", workers=1)``); the model is the default
U-Net with *random* weights (seeded) unless ``--model`` names a checkpoint: speed does not depend on the
weights, but the lesion-table stage does (random weights segment noise, so it may have more lesions to
describe than a trained model would). The pipeline timed is :func:`bmcore.inference.segment_study`
itself; its stages are timed by wrapping the functions it calls (load, brain mask, z-score, resize,
model forward, resample to the native grid, lesion table, mask write). Each configuration runs
``--repeats`` times and reports its fastest run; the default (auto) precision is compared voxel by
voxel with float32 (argmax agreement; target ≥ 99.9 %). Target (issue 8): ≤ 20 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from common import CpuShare, machine_info, rounded, write_result

from bmcore import imaging, inference
from bmcore.data.synth import synth_cohort
from bmcore.models import build_model, save_checkpoint

TARGET_SECONDS = 20.0
# (name in the breakdown, module, attribute): the functions segment_study goes through.
STAGES = (
    ("load", imaging, "load_study"),
    ("brain_mask", inference, "brain_mask"),
    ("normalize", inference, "normalize"),
    ("resize", inference, "resize_image"),
    ("forward", inference, "_forward"),
    ("resample_back", inference, "probabilities_to_native"),
    ("lesion_table", inference, "lesion_rows"),
    ("write_mask", imaging, "save_mask"),
)


class StageTimer:
    """Wrap the pipeline's functions so that each call adds its wall time to its stage."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.originals = []

    def __enter__(self):
        for stage, module, name in STAGES:
            original = getattr(module, name)
            self.originals.append((module, name, original))
            setattr(module, name, self._wrap(stage, original))
        return self

    def _wrap(self, stage, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - started

        return timed

    def __exit__(self, *exc):
        for module, name, original in self.originals:
            setattr(module, name, original)


def run_once(predictor, ref, out_dir: Path) -> tuple[dict, np.ndarray]:
    with StageTimer() as timer, CpuShare(torch.get_num_threads()) as share:
        started = time.perf_counter()
        result = inference.segment_study(predictor, ref, out_dir)
        total = time.perf_counter() - started
    stages = dict(timer.seconds)
    stages["other"] = total - sum(stages.values())
    labels = np.asarray(nib.load(str(result.mask_path)).dataobj)
    figures = {"total_s": total, "stages_s": stages, "lesions": len(result.lesions), "cpu_share": share.share}
    return figures, labels


def bench_config(
    checkpoint: Path, ref, out_dir: Path, precision: str, repeats: int
) -> tuple[dict, np.ndarray]:
    started = time.perf_counter()
    predictor = inference.load_predictor(checkpoint, device="cpu", precision=precision)
    load_model_s = time.perf_counter() - started
    runs = []
    labels = None
    for _ in range(repeats):
        figures, labels = run_once(predictor, ref, out_dir)
        runs.append(figures)
    best = min(runs, key=lambda r: r["total_s"])
    best = dict(best, precision=predictor.precision, load_model_s=load_model_s)
    best["all_totals_s"] = [r["total_s"] for r in runs]
    return best, labels


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, help="a checkpoint (default: the default U-Net, random weights)"
    )
    parser.add_argument(
        "--widths",
        type=int,
        nargs="*",
        default=[32, 16],
        help="base_channels of random-weight U-Nets to time (first: the headline)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fp32", action="store_true", help="skip the float32 comparison run")
    parser.add_argument("--name", default="inference", help="results file: bench/results/NAME.json")
    args = parser.parse_args()

    result = {"machine": machine_info(), "target_s": TARGET_SECONDS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        synth_cohort(tmp / "study", 1, args.seed, "brats", workers=1)
        result["synth_s"] = time.perf_counter() - started
        ref = imaging.find_studies(tmp / "study")[0]
        result["study"] = {
            "id": ref.study_id,
            "shape": list(imaging.load_study(ref, with_label=False).image.shape),
        }
        if args.model:
            models = {"checkpoint": args.model}
        else:
            models = {}
            for width in args.widths:
                torch.manual_seed(args.seed)
                path = tmp / f"unet{width}.pt"
                save_checkpoint(path, build_model("unet", base_channels=width), "unet")
                models[f"unet_base{width}_random"] = path
        result["weights"] = "checkpoint " + str(args.model) if args.model else "random (seeded): speed only"
        result["configs"] = {}
        for index, (name, checkpoint) in enumerate(models.items()):
            auto, auto_labels = bench_config(checkpoint, ref, tmp / "out", "auto", args.repeats)
            result["configs"][f"{name}_{auto['precision']}"] = auto
            print(f"{name} {auto['precision']}: {auto['total_s']:.2f} s {rounded(auto['stages_s'], 2)}")
            if index == 0 and auto["precision"] != "fp32" and not args.no_fp32:
                fp32, fp32_labels = bench_config(checkpoint, ref, tmp / "out", "fp32", 1)
                result["configs"][f"{name}_fp32"] = fp32
                same = auto_labels == fp32_labels
                labelled = (auto_labels > 0) | (fp32_labels > 0)
                result["agreement_with_fp32"] = {
                    "all_voxels": float(same.mean()),
                    "voxels_labelled_by_either": float(same[labelled].mean()) if labelled.any() else 1.0,
                    "target": 0.999,
                }
                print(f"{name} fp32: {fp32['total_s']:.2f} s; agreement {result['agreement_with_fp32']}")
        headline = next(iter(result["configs"].values()))
        result["headline"] = {
            "config": next(iter(result["configs"])),
            "total_s": headline["total_s"],
            "meets_target": headline["total_s"] <= TARGET_SECONDS,
        }
    path = write_result(args.name, rounded(result, 4))
    print(f"{path}: headline {rounded(result['headline'], 2)}")


if __name__ == "__main__":
    main()
