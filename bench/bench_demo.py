"""Benchmark: ``make demo`` as a new user runs it — a fresh clone of HEAD, ``make setup``, then
``bmseg demo`` — timed from the clone to the final printed table, with the peak resident memory of the
demo's whole process tree (the demo, its web, worker, MLflow and job processes, summed).

Run: ``.venv/bin/python bench/bench_demo.py`` → ``bench/results/demo.json``, the timestamped output in
``demo.log`` and the demo's report (``report.md``, ``report.json``, ``curves.png``) in ``demo_report/``
(about 15 minutes on two cores; run nothing else beside it). ``--screenshot PATH`` keeps the stack up
after the demo, signs in with headless Chromium (/usr/bin/chromium and playwright), saves the demo's
DICOM study page to PATH, then stops the stack. ``--keep DIR`` clones into DIR and leaves it there.

Only committed work is measured (the clone is of HEAD). Every printed line is timestamped from the
start of the clone; the milestones are the comparison's honest-metrics table (``## (b)``), the second
cohort's table (``## (c)``, the final table) and the end of the clinical path. The memory sampler reads
every process of the tree twice a second (psutil), so a peak shorter than half a second may be missed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import rounded, write_result

from bmcore.local.demo import DEMO_USER

REPO = Path(__file__).resolve().parents[1]
MILESTONES = {
    "comparison_table": re.compile(r"^## \(b\)"),
    "final_table": re.compile(r"^## \(c\)"),
    "clinical_path_done": re.compile(r"^dashboard: "),
}
STUDY_PAGE = re.compile(r"^study page: (\S+)")
CHROMIUM = Path("/usr/bin/chromium")
GIB = 2**30


class TreeMemory(threading.Thread):
    """Samples the memory of a process and all its descendants until stopped: the peak of their summed
    PSS (shared pages split among the processes that share them, so a forked worker's copy-on-write
    pages count once), of their summed RSS (shared pages counted in every process: an upper bound), and
    the largest single RSS."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.every = psutil.Process(pid), every
        self.peak_pss = self.peak_rss = self.peak_process = 0
        self.peak_at = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        started = time.perf_counter()
        while not self.done.is_set():
            rss, pss = [], []
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for process in processes:
                try:
                    full = process.memory_full_info()
                except psutil.Error:
                    continue
                rss.append(full.rss)
                pss.append(full.pss)
            if pss and sum(pss) > self.peak_pss:
                self.peak_pss, self.peak_at = sum(pss), time.perf_counter() - started
            self.peak_rss = max(self.peak_rss, sum(rss))
            self.peak_process = max(self.peak_process, *rss, 0)
            self.done.wait(self.every)


def timed(command: list[str], cwd: Path, log) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - started


def screenshot(study_url: str, path: Path) -> None:
    # lazy: playwright is a test dependency, needed only with --screenshot
    from playwright.sync_api import sync_playwright

    base = study_url.split("/studies/")[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(f"{base}/sign-in?next=/studies")
            page.fill("#email", DEMO_USER[0])
            page.fill("#password", DEMO_USER[1])
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r"/studies$"))
            page.goto(study_url)
            page.wait_for_load_state("networkidle")
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=True)
        finally:
            browser.close()


def run_demo(clone: Path, started: float, shot: Path | None, log) -> dict:
    """``bmseg demo`` in ``clone``: the milestones (seconds since ``started``) and the peak memory."""
    command = [str(clone / ".venv/bin/bmseg"), "demo"] + ([] if shot else ["--no-serve"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("BMSEG_")} | {"PYTHONUNBUFFERED": "1"}
    demo = subprocess.Popen(
        command,
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C stops the demo: a shell started in the background (nohup, &) ignores SIGINT for its
        # children, and Python then installs no KeyboardInterrupt handler: restore the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    memory = TreeMemory(demo.pid)
    memory.start()
    seen: dict[str, float] = {}
    for line in demo.stdout:
        now = time.perf_counter() - started
        log.write(f"{now:8.1f} {line}")
        log.flush()
        for name, pattern in MILESTONES.items():
            if name not in seen and pattern.match(line):
                seen[name] = now
        if shot and (found := STUDY_PAGE.match(line)):
            seen["study_url"] = found[1]
        if shot and line.startswith("the stack keeps running"):
            screenshot(seen["study_url"], shot)
            demo.send_signal(signal.SIGINT)
    code = demo.wait()
    memory.done.set()
    memory.join()
    if code not in (0, -signal.SIGINT) or "final_table" not in seen:
        raise SystemExit(f"bmseg demo exited {code} before its final table; see the log")
    return seen | {
        "peak_pss_tree_gb": memory.peak_pss / GIB,
        "peak_pss_tree_at_s": memory.peak_at,
        "peak_rss_tree_sum_gb": memory.peak_rss / GIB,
        "peak_rss_one_process_gb": memory.peak_process / GIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenshot", type=Path, help="save the demo's DICOM study page here")
    parser.add_argument("--keep", type=Path, help="clone into this folder and keep it")
    args = parser.parse_args()
    clone = args.keep or Path(tempfile.mkdtemp(prefix="bmseg-demo-")) / "bmseg"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    log_path = REPO / "bench" / "results" / "demo.log"
    with log_path.open("w") as log:
        started = time.perf_counter()
        timed(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], REPO, log)
        install = timed(["make", "setup"], clone, log)
        figures = run_demo(clone, started, args.screenshot, log)
    result = {
        "commit": commit,
        "cpu_count": os.cpu_count(),
        "loadavg_end": list(os.getloadavg()),
        "install_s": install,
        **figures,
        "log": str(log_path.relative_to(REPO)),
    }
    print(write_result("demo", rounded(result, 3)))
    report = REPO / "bench" / "results" / "demo_report"
    shutil.rmtree(report, ignore_errors=True)
    shutil.copytree(clone / "bmseg-data" / "demo" / "report", report)
    if not args.keep:
        shutil.rmtree(clone.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
