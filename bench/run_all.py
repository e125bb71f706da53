"""Run the CPU benchmarks one after another (``make bench``); each writes ``bench/results/<name>.json``.

Each benchmark runs in its own process (thread pools and allocator state do not leak from one into
the next). The GPU benchmark (``bench_gpu.py``) is not run here: run it on a GPU machine.
``--only NAME …`` / ``--skip NAME …`` pick benchmarks by name; ``bench_compare`` (a ~30 min training
comparison) runs only when named with ``--only`` or when ``--with-compare`` is given.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name: (script, extra arguments); in this order.
BENCHMARKS = {
    "limits": ("bench_limits.py", []),
    "models": ("bench_models.py", []),
    "inference": ("bench_inference.py", []),
    "data": ("bench_data.py", []),
    "queue": ("bench_queue.py", []),
    "ddp": ("bench_ddp.py", []),
    "compare": ("bench_compare.py", []),
}
OPT_IN = {"compare"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    parser.add_argument("--skip", nargs="*", choices=sorted(BENCHMARKS), default=[])
    parser.add_argument("--with-compare", action="store_true")
    args = parser.parse_args()
    names = args.only or [n for n in BENCHMARKS if n not in OPT_IN or args.with_compare]
    names = [n for n in names if n not in args.skip]
    summary, failed = {}, []
    for name in names:
        script, extra = BENCHMARKS[name]
        if not (HERE / script).exists():
            print(f"== {name}: {script} not present, skipped", flush=True)
            continue
        print(f"== {name}: {script}", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / script), *extra], cwd=HERE.parent)
        summary[name] = {"seconds": round(time.perf_counter() - started, 1), "exit_code": code}
        if code:
            failed.append(name)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "run_all.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
