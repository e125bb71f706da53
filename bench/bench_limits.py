"""Benchmark: this machine's measured peak FLOP/s, the yardstick the model figures are held against.

Run: ``.venv/bin/python bench/bench_limits.py`` → ``bench/results/limits.json``.

On the CPU: a large matrix product (4096², MKL) and large 3×3 convolutions (batch 16, 128 → 128
channels at 128² and 512 → 512 at 32², channels-last, oneDNN), each in float32 and bfloat16 (this
CPU's AVX-512 BF16 instructions do two bfloat16 multiply-adds where float32 does one). On CUDA, when
present: a bf16 and a float32 (TF32) matrix product and a convolution in bf16. The peak of a dtype is
the fastest of its matrix product and convolutions; every figure is the best of several runs.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import CpuShare, best_of, machine_info, rounded, write_result

# (channels in = out, spatial size) of the CPU's 3x3 convolutions at batch 16: the U-Net's own widths at
# their resolutions (wider layers run closer to the peak); the faster is the conv peak.
CPU_CONVS = ((128, 128), (512, 32))


def matmul_flops(device: str, dtype: torch.dtype, n: int, repeats: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else None
    seconds = best_of(lambda: a @ b, repeats, sync=sync)
    return 2 * n**3 / seconds


def conv_flops(device: str, dtype: torch.dtype, batch: int, channels: int, size: int, repeats: int) -> float:
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype)
    x, w = (t.contiguous(memory_format=torch.channels_last) for t in (x, w))
    sync = torch.cuda.synchronize if device == "cuda" else None
    with torch.inference_mode():
        seconds = best_of(lambda: F.conv2d(x, w, padding=1), repeats, sync=sync)
    return 2 * batch * size * size * channels * channels * 9 / seconds


def cpu_limits(repeats: int = 5, n: int = 4096) -> dict:
    """Peak float32 and bfloat16 FLOP/s of the CPU (all of torch's threads)."""
    figures = {}
    with CpuShare(torch.get_num_threads()) as share:
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            figures[f"matmul_{name}_gflops"] = matmul_flops("cpu", dtype, n, repeats) / 1e9
            for channels, size in CPU_CONVS:
                rate = conv_flops("cpu", dtype, 16, channels, size, repeats) / 1e9
                figures[f"conv{channels}x{size}_{name}_gflops"] = rate
            figures[f"conv_{name}_gflops"] = max(
                figures[f"conv{channels}x{size}_{name}_gflops"] for channels, size in CPU_CONVS
            )
    for name in ("fp32", "bf16"):
        figures[f"peak_{name}_gflops"] = max(figures[f"matmul_{name}_gflops"], figures[f"conv_{name}_gflops"])
    figures["cpu_share_while_timing"] = share.share
    return figures


def gpu_limits(repeats: int = 20) -> dict:
    """Peak bf16 and TF32 FLOP/s of CUDA device 0."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    figures = {
        "matmul_bf16_tflops": matmul_flops("cuda", torch.bfloat16, 8192, repeats) / 1e12,
        "matmul_tf32_tflops": matmul_flops("cuda", torch.float32, 8192, repeats) / 1e12,
        "conv_bf16_tflops": conv_flops("cuda", torch.bfloat16, 64, 256, 128, repeats) / 1e12,
    }
    figures["peak_bf16_tflops"] = max(figures["matmul_bf16_tflops"], figures["conv_bf16_tflops"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = {"machine": machine_info(), "cpu": cpu_limits(args.repeats)}
    if torch.cuda.is_available():
        result["gpu"] = gpu_limits()
    path = write_result("limits", rounded(result, 2))
    print(
        f"{path}: {rounded(result['cpu'], 1)}"
        + (f" gpu {rounded(result['gpu'], 1)}" if "gpu" in result else "")
    )


if __name__ == "__main__":
    main()
