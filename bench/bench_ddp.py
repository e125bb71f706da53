"""Data-parallel scaling: training slices/s of ``bmseg train --gpus N`` for each N, side by side.

    python bench/bench_ddp.py                      # CPU: 1 and 2 processes over gloo
    python bench/bench_ddp.py --device cuda        # GPU node: 1 and every GPU (NCCL)
    python bench/bench_ddp.py --gpus 1 2 4 8 --size 256

Each N runs the real command (``bmseg train --gpus N --no-track``) on one small synthetic cohort, in
interleaved rounds (1, N, 1, N…). A run's figure is its fastest epoch after the first, counting the
training pass alone (``train_seconds`` in history.json): global slices per second, i.e.
``samples_per_epoch / train_seconds``; ``--batch-size`` is per process, as in ``bmseg train``.
Efficiency is slices/s over N times the one-process figure. On CPUs the N processes share the same
cores (``OMP_NUM_THREADS`` = cores / N), so efficiency there measures overhead, not added hardware.
Writes ``bench/results/ddp_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, rounded, write_result  # noqa: E402


def train_once(cohort: Path, out: Path, gpus: int, args, env: dict) -> dict:
    command = [
        sys.executable, "-m", "bmcore.cli", "train", "--data", str(cohort), "--gpus", str(gpus),
        "--device", args.device, "--no-track", "--epochs", str(args.epochs),
        "--samples-per-epoch", str(args.samples), "--batch-size", str(args.batch_size),
        "--size", str(args.size), "--base-channels", str(args.base_channels),
        "--num-workers", str(args.num_workers), "--early-stopping-patience", "100", "-o", str(out),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"--gpus {gpus} failed: {done.stderr.strip().splitlines()[-1:]}")
    history = json.loads((out / "history.json").read_text())
    best = min(h["train_seconds"] for h in history[1:])
    return {"slices_per_s": args.samples / best, "wall_s": time.perf_counter() - started}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--gpus", type=int, nargs="*", help="process counts (default: 1 and 2 / all GPUs)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--samples", type=int, default=256, help="slices per epoch, over all processes")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=1)
    args = parser.parse_args()

    import torch

    from bmcore.data.synth import synth_cohort

    if args.gpus is None:
        args.gpus = [1, max(2, torch.cuda.device_count())] if args.device == "cuda" else [1, 2]
    machine = machine_info() | {"cuda_devices": torch.cuda.device_count()}  # load average before the runs
    runs: dict[int, list[dict]] = {n: [] for n in args.gpus}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as temp:
        env = os.environ | {"BMSEG_DATA_DIR": str(Path(temp) / "data")}  # cache and stores, removed after
        env.pop("OMP_NUM_THREADS", None)  # the launcher shares the cores out
        cohort = Path(temp) / "cohort"
        synth_cohort(cohort, 6, 0, "brats", shape=(args.size, args.size, 48), spacing=(1.9, 1.9, 3.2))
        for round_ in range(args.rounds):
            for n in args.gpus:
                runs[n].append(train_once(cohort, Path(temp) / f"out-{n}-{round_}", n, args, env))
                figure = runs[n][-1]["slices_per_s"]
                print(f"round {round_ + 1}: --gpus {n}: {figure:.1f} slices/s", flush=True)
    best = {n: max(r["slices_per_s"] for r in runs[n]) for n in args.gpus}
    one = best.get(1)
    result = {
        "benchmark": "ddp",
        "device": args.device,
        "settings": {k: v for k, v in vars(args).items() if k != "gpus"} | {"arch": "unet", "depth": 4},
        "machine": machine,
        "processes": {
            str(n): {
                "train_slices_per_s": best[n],
                "speedup": best[n] / one if one else None,
                "efficiency": best[n] / (n * one) if one else None,
                "runs": runs[n],
            }
            for n in args.gpus
        },
    }
    path = write_result(f"ddp_{args.device}", rounded(result, 3))
    print(json.dumps({n: rounded(best[n], 1) for n in args.gpus}), "->", path)


if __name__ == "__main__":
    main()
