"""Benchmark: model throughput on the CPU at 256², batch 16, against the machine's peak and MONAI.

Run: ``.venv/bin/python bench/bench_models.py`` → ``bench/results/models.json`` (needs the ``bench``
extra for MONAI: ``pip install -e '.[bench]'``; without it the MONAI rows are skipped).

In one process, timed in interleaved rounds (best of ``--rounds``):

- inference (``torch.inference_mode``, eval mode) slices/s of ``unet``, ``cnn``, ``fcn`` at their
  defaults, each as plain float32 channels-last, and through bmseg's inference path
  (:func:`bmcore.inference._forward` on a :func:`~bmcore.inference.load_predictor` predictor: batch
  norm folded, bfloat16 where the CPU does it natively, softmax included);
- training (forward + cross-entropy + backward, train mode, float32 channels-last as ``bmseg train``
  runs on a CPU) slices/s, and the same under bfloat16 autocast for information;
- MONAI's ``AttentionUnet`` with the same widths (spatial_dims=2, 4 → 4 channels,
  channels (32, 64, 128, 256, 512), strides 2): as shipped (float32, NCHW), float32 channels-last and
  bfloat16 channels-last, forward and training.

``--compile`` adds the bmseg path under ``torch.compile`` (inductor, weights frozen) and its compile time.

FLOPs per slice come from ``torch.utils.flop_counter.FlopCounterMode``; achieved FLOP/s are held against
the peak measured in the same process (``bench_limits.cpu_limits``) for the dtype the run computes in.
Targets (issue 8): U-Net forward ≥ 1.3× MONAI ``AttentionUnet``; conv stack ≥ 50 % of the peak.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_limits import cpu_limits
from common import CpuShare, interleaved, machine_info, rounded, write_result
from torch.utils.flop_counter import FlopCounterMode

from bmcore import inference
from bmcore.models import build_model, save_checkpoint

SIZE = 256
CHANNELS = 4
CLASSES = 4
CL = torch.channels_last


def monai_attention_unet(base: int = 32, depth: int = 4):
    """MONAI's AttentionUnet with bmseg's default widths, or None when MONAI is not installed."""
    try:
        from monai.networks.nets import AttentionUnet
    except ImportError:
        return None
    channels = tuple(base * 2**level for level in range(depth + 1))
    return AttentionUnet(
        spatial_dims=2,
        in_channels=CHANNELS,
        out_channels=CLASSES,
        channels=channels,
        strides=(2,) * depth,
    )


def count_flops(model: torch.nn.Module, train: bool) -> float:
    """FLOPs per slice of one forward (``train=False``) or forward + backward pass."""
    model = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format).train(train)
    x = torch.randn(2, CHANNELS, SIZE, SIZE)
    with FlopCounterMode(display=False) as counter:
        if train:
            model(x).sum().backward()
        else:
            with torch.inference_mode():
                model(x)
    return counter.get_total_flops() / 2


def forward_fn(model, x):
    def run():
        with torch.inference_mode():
            return model(x)

    return run


def train_fn(model, x, target, autocast: bool = False):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x).float(), target)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def fast_path_fn(predictor, x):
    def run():
        with torch.inference_mode():
            return inference._forward(predictor, x, tta=False)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--archs", nargs="*", default=["unet", "cnn", "fcn"])
    parser.add_argument("--no-train", action="store_true", help="skip the training rows")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile row for the U-Net")
    args = parser.parse_args()
    torch.manual_seed(0)
    result = {"machine": machine_info(), "batch": args.batch, "size": SIZE, "peak": cpu_limits()}
    x = torch.randn(args.batch, CHANNELS, SIZE, SIZE).contiguous(memory_format=CL)
    target = torch.randint(0, CLASSES, (args.batch, SIZE, SIZE))

    models = {arch: build_model(arch) for arch in args.archs}
    monai = monai_attention_unet()
    if monai is not None:
        models["monai_attention_unet"] = monai
    flops = {
        name: {"forward": count_flops(model, False), "train": count_flops(model, True)}
        for name, model in models.items()
    }

    forward, train, precision = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            model = models[arch].eval().to(memory_format=CL)
            forward[f"{arch}_fp32"] = forward_fn(model, x)
            path = Path(tmp) / f"{arch}.pt"
            save_checkpoint(path, model, arch)
            predictor = inference.load_predictor(path, device="cpu")
            forward[f"{arch}_bmseg"] = fast_path_fn(predictor, x)
            precision[f"{arch}_bmseg"] = predictor.precision
            if args.compile and arch == "unet":
                import torch._inductor.config as inductor_config

                inductor_config.freezing = True  # constant-fold the weights: the way inductor serves
                compiled = dataclasses.replace(predictor, model=torch.compile(predictor.model))
                started = time.perf_counter()
                fast_path_fn(compiled, x)()
                result["unet_compile_s"] = time.perf_counter() - started
                forward["unet_bmseg_compiled"] = fast_path_fn(compiled, x)
                precision["unet_bmseg_compiled"] = predictor.precision
            trained = copy.deepcopy(models[arch]).train().to(memory_format=CL)
            train[f"{arch}_fp32"] = train_fn(trained, x, target)
            train[f"{arch}_bf16_autocast"] = train_fn(trained, x, target, autocast=True)
        if monai is not None:
            monai.eval()
            forward["monai_fp32_nchw"] = forward_fn(monai, x.contiguous())
            monai_cl = copy.deepcopy(monai).to(memory_format=CL)
            forward["monai_fp32"] = forward_fn(monai_cl, x)
            monai_bf16 = copy.deepcopy(monai_cl).to(torch.bfloat16)
            forward["monai_bf16"] = forward_fn(monai_bf16, x.to(torch.bfloat16))
            train["monai_fp32_nchw"] = train_fn(copy.deepcopy(monai).train(), x.contiguous(), target)
            train["monai_fp32"] = train_fn(copy.deepcopy(monai_cl).train(), x, target)

        threads = torch.get_num_threads()
        with CpuShare(threads) as forward_share:
            forward_seconds = interleaved(forward, rounds=args.rounds)
        train_seconds = {}
        if not args.no_train:
            with CpuShare(threads) as train_share:
                train_seconds = interleaved(train, rounds=args.rounds)
            result["cpu_share_train"] = train_share.share
        result["cpu_share_forward"] = forward_share.share

    peak = {"fp32": result["peak"]["peak_fp32_gflops"], "bf16": result["peak"]["peak_bf16_gflops"]}

    def row(name: str, seconds: float, kind: str) -> dict:
        model = "monai_attention_unet" if name.startswith("monai") else name.split("_")[0]
        dtype = precision.get(name, "bf16" if "bf16" in name else "fp32")
        per_slice = flops[model]["forward" if kind == "forward" else "train"]
        rate = args.batch / seconds
        achieved = per_slice * rate / 1e9
        return {
            "slices_per_s": rate,
            "dtype": dtype,
            "gflop_per_slice": per_slice / 1e9,
            "achieved_gflops": achieved,
            "fraction_of_peak": achieved / peak[dtype],
        }

    result["forward"] = {name: row(name, s, "forward") for name, s in forward_seconds.items()}
    result["train"] = {name: row(name, s, "train") for name, s in train_seconds.items()}
    f = result["forward"]
    ratios = {}
    if monai is not None and "unet" in args.archs:
        ratios = {
            "unet_bmseg_vs_monai_as_shipped": f["unet_bmseg"]["slices_per_s"]
            / f["monai_fp32_nchw"]["slices_per_s"],
            "unet_bmseg_vs_monai_same_precision_channels_last": f["unet_bmseg"]["slices_per_s"]
            / f[f"monai_{precision['unet_bmseg']}"]["slices_per_s"],
            "unet_fp32_vs_monai_fp32_channels_last": f["unet_fp32"]["slices_per_s"]
            / f["monai_fp32"]["slices_per_s"],
            "target_forward_ratio": 1.3,
        }
        if train_seconds:
            t = result["train"]
            ratios["unet_train_fp32_vs_monai_train_fp32_channels_last"] = (
                t["unet_fp32"]["slices_per_s"] / t["monai_fp32"]["slices_per_s"]
            )
    result["ratios"] = ratios
    if "unet" in args.archs:
        result["targets"] = {
            "forward_vs_monai_as_shipped_met": bool(ratios)
            and ratios["unet_bmseg_vs_monai_as_shipped"] >= 1.3,
            "forward_vs_monai_same_precision_met": bool(ratios)
            and ratios["unet_bmseg_vs_monai_same_precision_channels_last"] >= 1.3,
            "conv_stack_fraction_of_peak": f["unet_bmseg"]["fraction_of_peak"],
            "conv_stack_target_met": f["unet_bmseg"]["fraction_of_peak"] >= 0.5,
        }
    path = write_result("models", rounded(result, 4))
    for kind in ("forward", "train"):
        for name, figures in result[kind].items():
            print(
                f"{kind:7s} {name:28s} {figures['slices_per_s']:7.2f} slices/s  "
                f"{figures['achieved_gflops']:6.1f} GFLOP/s  {100 * figures['fraction_of_peak']:5.1f} % of "
                f"{figures['dtype']} peak"
            )
    print(f"{path}: ratios {rounded(ratios, 2)}")


if __name__ == "__main__":
    main()
