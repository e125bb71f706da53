"""Data-feeding benchmark: synthesise a BraTS-size cohort, cache it, run one training epoch of slices.

    python bench/bench_data.py [--data DIR] [--cases 50] [--batch-size 16] [--workers 2]

Steps, each timed:

1. ``bmseg synth DIR --cases N --layout brats`` (240 × 240 × 155, 1 mm), skipped when DIR already holds
   a cohort of N studies;
2. in a fresh process (so its memory figures are its own): ``prepare_case`` for every study, then one
   epoch of a ``DataLoader`` over ``SliceDataset`` (augmentation on, lesion oversampling 0.5, batches of
   16, 2 workers), touching every batch as a trainer would.

Memory: ``ru_maxrss`` of the feeding process and of its (reaped) children, and the peak of the summed RSS
of the process and its live workers sampled with psutil every 50 ms during the epoch (an upper bound:
pages shared after fork are counted once per process). Writes ``bench/results/data_feeding.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "data_feeding.json"
MIB = 1024 * 1024


def maxrss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


class RssSampler(threading.Thread):
    """Peak of the summed RSS of this process and all its descendants, sampled in the background."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.peak_processes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        while not self._stop_event.is_set():
            total, count = 0, 0
            for proc in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                    count += 1
                except psutil.Error:
                    pass
            if total > self.peak:
                self.peak, self.peak_processes = total, count
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def feed(data: Path, cache: Path, batch_size: int, workers: int, lesion_fraction: float) -> dict:
    """Prepare the cache and run one epoch; returns the figures (runs in its own process)."""
    import torch
    from torch.utils.data import DataLoader

    from bmcore.data.dataset import SliceDataset, lesion_sampler, prepare_case
    from bmcore.imaging import find_studies

    torch.set_num_threads(1)
    refs = find_studies(data)
    start = time.perf_counter()
    cases = [prepare_case(ref, cache) for ref in refs]
    prepare_s = time.perf_counter() - start
    rss_after_prepare = maxrss_mib(resource.RUSAGE_SELF)

    dataset = SliceDataset(cases, augment=True, seed=0)
    sampler = lesion_sampler(dataset, lesion_fraction, num_samples=len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    sampler_thread = RssSampler()
    sampler_thread.start()
    slices = lesion_slices = 0
    checksum = 0.0
    start = time.perf_counter()
    first_batch_s = None
    for images, labels, _partial in loader:
        if first_batch_s is None:
            first_batch_s = time.perf_counter() - start
        slices += images.shape[0]
        lesion_slices += int((labels.flatten(1) > 0).any(1).sum())
        checksum += float(images[:, :, ::16, ::16].sum())  # touch the data as a trainer would
    epoch_s = time.perf_counter() - start
    sampler_thread.stop()
    cache_bytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    return {
        "studies": len(cases),
        "slices_in_dataset": len(dataset),
        "lesion_slice_share_natural": round(float(dataset.lesion_items.mean()), 3),
        "prepare_s": round(prepare_s, 1),
        "prepare_s_per_study": round(prepare_s / len(cases), 2),
        "cache_mib": round(cache_bytes / MIB, 1),
        "epoch_slices": slices,
        "epoch_s": round(epoch_s, 2),
        "first_batch_s": round(first_batch_s or 0.0, 2),
        "slices_per_s": round(slices / epoch_s, 1),
        "lesion_slice_share_drawn": round(lesion_slices / max(slices, 1), 3),
        "peak_rss_mib": {
            "self_after_prepare_ru_maxrss": round(rss_after_prepare, 1),
            "self_ru_maxrss": round(maxrss_mib(resource.RUSAGE_SELF), 1),
            "children_ru_maxrss": round(maxrss_mib(resource.RUSAGE_CHILDREN), 1),
            "self_plus_children_ru_maxrss": round(
                maxrss_mib(resource.RUSAGE_SELF) + maxrss_mib(resource.RUSAGE_CHILDREN), 1
            ),
            "epoch_psutil_sum_of_processes": round(sampler_thread.peak / MIB, 1),
            "epoch_psutil_processes_at_peak": sampler_thread.peak_processes,
        },
    }


def cohort_size(data: Path) -> int:
    record = data / "cohort.json"
    return len(json.loads(record.read_text())["studies"]) if record.is_file() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="Cohort folder (made if absent; default: a temp folder).")
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lesion-fraction", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cache", type=Path, help="Cache folder (default: a temp folder; reuse skips work).")
    parser.add_argument("--feed-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()

    if args.feed_only:
        print(json.dumps(feed(args.data, args.cache, args.batch_size, args.workers, args.lesion_fraction)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-data-") as scratch:
        data = args.data or Path(scratch) / "cohort"
        synth_s = None
        if cohort_size(data) != args.cases:
            bmseg = Path(sys.executable).with_name("bmseg")
            command = [str(bmseg), "synth", str(data), "--cases", str(args.cases), "--layout", "brats"]
            print("$", " ".join(command), flush=True)
            start = time.perf_counter()
            subprocess.run(command, check=True)
            synth_s = time.perf_counter() - start
        synth_peak = maxrss_mib(resource.RUSAGE_CHILDREN)
        cache = args.cache or Path(scratch) / "cache"
        print(f"preparing {args.cases} studies and running one epoch…", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--feed-only", "--data", str(data), "--cache", str(cache),
             "--batch-size", str(args.batch_size), "--workers", str(args.workers),
             "--lesion-fraction", str(args.lesion_fraction)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        figures = json.loads(child.stdout.strip().splitlines()[-1])

    result = {
        "benchmark": "data feeding (bench/bench_data.py)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "cohort": {"cases": args.cases, "layout": "brats", "shape": [240, 240, 155], "spacing_mm": [1, 1, 1]},
        "synth_s": None if synth_s is None else round(synth_s, 1),
        "synth_peak_rss_mib_largest_process": round(synth_peak, 1) if synth_s is not None else None,
        "loader": {"batch_size": args.batch_size, "num_workers": args.workers, "augment": True,
                   "lesion_fraction": args.lesion_fraction, "size": 256},
        **figures,
        "target": "peak RSS under 2048 MiB",
    }  # fmt: skip
    peak = result["peak_rss_mib"]
    worst = max(peak["self_plus_children_ru_maxrss"], peak["epoch_psutil_sum_of_processes"])
    result["within_target"] = worst < 2048
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
