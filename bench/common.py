"""Shared helpers of the benchmarks: timing on a shared machine, machine facts, JSON results.

Timings on a machine that others share are noisy, so every figure is the *minimum* of several
repeats, and variants that are compared with each other are timed in interleaved rounds (A, B, A, B…)
so that a burst of someone else's work slows both alike. Each result records the load average before
and after, and the CPU share this process got while timing (process CPU seconds / (wall × threads)):
well under 1.0 means other work took the cores.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import torch

    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_start": list(os.getloadavg()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class CpuShare:
    """Context manager: the share of ``threads`` cores this process used while inside it."""

    def __init__(self, threads: int):
        self.threads = max(1, threads)
        self.share = None

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        self.share = round((time.process_time() - self.cpu) / max(wall * self.threads, 1e-9), 3)


def best_of(function: Callable[[], object], repeats: int = 5, warmup: int = 1, sync=None) -> float:
    """Minimum wall seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        if sync:
            sync()
        times.append(time.perf_counter() - started)
    return min(times)


def interleaved(
    functions: dict[str, Callable[[], object]], rounds: int = 5, warmup: int = 1, sync=None
) -> dict[str, float]:
    """Minimum wall seconds per named function, timed in interleaved rounds."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            if sync:
                sync()
            started = time.perf_counter()
            function()
            if sync:
                sync()
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def write_result(name: str, result: dict, directory: Path = RESULTS) -> Path:
    """Write ``result`` (load average at the end added) to ``<directory>/<name>.json``."""
    result = dict(result)
    if "machine" in result:
        result["machine"] = dict(result["machine"], loadavg_end=list(os.getloadavg()))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def rounded(value, digits: int = 4):
    """Round floats (recursively) for readable JSON."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item, digits) for item in value]
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_private_redis(directory: Path, *extra: str) -> tuple[str, subprocess.Popen]:
    """A redis-server of our own on a free port (``extra``: more server options, e.g. AOF)."""
    from bmcore.local.stack import redis_reachable, redis_server_binary, wait_until

    port = free_port()
    argv = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        str(directory),
        *extra,
    ]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: redis_reachable(url), 10, "the private redis-server")
    except RuntimeError:
        server.kill()
        raise
    return url, server


def percentiles(values: list[float]) -> dict:
    """p50, p95, max and count of latencies in seconds ({} when there are none)."""
    if not values:
        return {}
    import numpy as np

    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": float(max(values)),
        "n": len(values),
    }
