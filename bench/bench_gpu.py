"""Benchmark: training and inference slices/s of the default U-Net on one CUDA GPU (under 5 minutes).

Run on a GPU machine: ``python bench/bench_gpu.py`` → ``bench/results/gpu.json`` (``--out DIR`` to write
elsewhere). It imports only torch and torch-only parts of bmcore (models, losses, run_config; the
``run_epoch`` row also needs numpy and scipy), so it runs without the rest of bmseg's dependencies.

Rows, each at 256² on random data already on the GPU (the data loader is measured by
``bench_data.py``), bf16 autocast, channels-last, cuDNN autotuning:

- ``train_*``: one optimizer step (forward, cross-entropy as ``bmseg train`` computes it, backward,
  fused Adam), eager and under ``torch.compile``, at a small and a large batch;
- ``train_loop_run_epoch``: the same through :func:`bmcore.training.loop.run_epoch` itself (its per-batch
  prediction and confusion matrix included);
- ``infer_*``: forward + softmax under ``torch.inference_mode`` with batch norm folded into the
  convolutions (as :func:`bmcore.inference.load_predictor` does), eager and compiled.

Targets (issue 8, one H100): ≥ 2,000 training and ≥ 5,000 inference slices/s. Each row: warm-up
steps (compilation included, reported as ``warmup_s``), then steps for ``--seconds`` seconds.
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial
from pathlib import Path

import torch
from common import RESULTS, machine_info, rounded, write_result
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from bmcore.models import build_model
from bmcore.training.config import TrainConfig
from bmcore.training.losses import build_loss

CL = torch.channels_last
TARGETS = {"train_slices_per_s": 2000, "infer_slices_per_s": 5000}
RUN_EPOCH_BATCHES = 6


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """The folding of :func:`bmcore.inference.fold_batch_norm` (that module needs nibabel)."""
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            for index in range(len(module) - 1):
                conv, norm = module[index], module[index + 1]
                if type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d:
                    module[index] = fuse_conv_bn_eval(conv, norm)
                    module[index + 1] = nn.Identity()
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step, batch: int, device: torch.device, seconds: float, warmup: int = 3) -> dict:
    """Slices/s of ``step()`` (``batch`` slices each) after ``warmup`` calls, over ``seconds``."""
    started = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - started
    steps, started = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        if steps >= 3 and steps % 3 == 0:
            sync(device)
            if time.perf_counter() - started >= seconds:
                break
    elapsed = time.perf_counter() - started
    figures = {"batch": batch, "slices_per_s": steps * batch / elapsed, "warmup_s": warmup_s}
    if device.type == "cuda":
        figures["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return figures


def train_step(arch: str, batch: int, size: int, device: torch.device, compiled: bool = False):
    model = build_model(arch).to(device).to(memory_format=CL).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    forward = torch.compile(model) if compiled else model
    loss_fn = build_loss("ce")
    x = torch.randn(batch, 4, size, size, device=device).contiguous(memory_format=CL)
    target = torch.randint(0, 4, (batch, size, size), device=device)
    partial = torch.zeros(batch, dtype=torch.bool, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(forward(x).float(), target, partial)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def run_epoch_step(arch: str, batch: int, size: int, device: torch.device):
    """One pass of bmcore.training.loop.run_epoch over ``RUN_EPOCH_BATCHES`` batches per call."""
    from bmcore.training.loop import run_epoch
    from bmcore.training.parts import TrainingParts

    config = TrainConfig(arch=arch, batch_size=batch, size=size, device=str(device))
    model = build_model(arch).to(device).to(memory_format=CL)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    loader = [
        (
            torch.randn(batch, 4, size, size, device=device),
            torch.randint(0, 4, (batch, size, size), device=device),
            torch.zeros(batch, dtype=torch.bool, device=device),
        )
        for _ in range(RUN_EPOCH_BATCHES)
    ]
    parts = TrainingParts(model, optimizer, scheduler, build_loss(config.loss), loader, None)
    return lambda: run_epoch(parts, loader, True, device, config)


def infer_step(arch: str, batch: int, size: int, device: torch.device, compiled: bool = False):
    model = fold_batch_norm(build_model(arch).eval()).to(device).to(memory_format=CL)
    forward = torch.compile(model) if compiled else model
    x = torch.randn(batch, 4, size, size, device=device).contiguous(memory_format=CL)

    def step():
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        ):
            return torch.softmax(forward(x).float(), dim=1)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--train-batches", type=int, nargs="*", default=[64, 256])
    parser.add_argument("--infer-batches", type=int, nargs="*", default=[256, 1024])
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per row")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--budget", type=float, default=250.0, help="start no row after this many seconds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", RESULTS)))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    started = time.perf_counter()
    result = {"machine": machine_info(), "arch": args.arch, "size": args.size, "rows": {}, "errors": {}}
    if device.type == "cuda":
        from bench_limits import gpu_limits

        result["peak"] = gpu_limits()

    plan = []  # eager rows first: if the time budget runs out, the compiled ones are skipped
    for compiled in (False,) if args.no_compile else (False, True):
        tag = "compiled" if compiled else "eager"
        # compiled: the largest batch only (each new shape compiles again, ~a minute)
        for batch in [max(args.train_batches)] if compiled else args.train_batches:
            plan.append((f"train_{tag}_b{batch}", batch, partial(train_step, compiled=compiled)))
        for batch in [max(args.infer_batches)] if compiled else args.infer_batches:
            plan.append((f"infer_{tag}_b{batch}", batch, partial(infer_step, compiled=compiled)))
        if not compiled:
            plan.append(("train_loop_run_epoch", max(args.train_batches), run_epoch_step))

    for name, batch, make in plan:
        if time.perf_counter() - started > args.budget:
            result["errors"][name] = f"skipped: over the {args.budget:.0f} s budget"
            continue
        try:
            step = make(args.arch, batch, args.size, device)
            per_call = RUN_EPOCH_BATCHES * batch if name == "train_loop_run_epoch" else batch
            figures = measure(step, per_call, device, args.seconds)
            result["rows"][name] = dict(figures, batch=batch)
            print(f"{name:24s} {figures['slices_per_s']:9.1f} slices/s (warm-up {figures['warmup_s']:.1f} s)")
        except Exception as exc:  # an OOM or a compile failure loses one row, not the run
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            result["errors"][name] = f"{type(exc).__name__}: {message}"
            print(f"{name}: {result['errors'][name]}")
        finally:
            step = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
        summarise(result, started)
        write_result("gpu", rounded(result, 3), args.out)  # after every row: a timeout keeps the rest
    path = write_result("gpu", rounded(result, 3), args.out)
    print(f"{path}: best {rounded(result['best'], 1)} in {result['wall_s']:.0f} s", flush=True)


def summarise(result: dict, started: float) -> None:
    def best(prefix: str) -> float:
        rates = [r["slices_per_s"] for n, r in result["rows"].items() if n.startswith(prefix)]
        return max(rates, default=0.0)

    result["best"] = {"train_slices_per_s": best("train_"), "infer_slices_per_s": best("infer_")}
    result["targets"] = {
        key: {"target": value, "met": result["best"][key] >= value} for key, value in TARGETS.items()
    }
    result["wall_s"] = time.perf_counter() - started


if __name__ == "__main__":
    main()
