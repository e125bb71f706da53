"""``bmseg up`` and ``bmseg demo --quick`` as real processes: Redis, web, worker, MLflow UI."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(argv: list[str], env: dict) -> tuple[subprocess.Popen, queue.Queue]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bmcore.cli", *argv],
        cwd=REPO,
        env=os.environ | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return process, lines


def wait_for_line(lines: queue.Queue, text: str, timeout: float) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not printed within {timeout} s; got:\n{''.join(seen)}")


def stack_env(tmp_path: Path, redis_url: str) -> dict:
    return {"BMSEG_DATA_DIR": str(tmp_path / "data"), "BMSEG_REDIS_URL": redis_url}


def test_up_starts_its_own_redis_when_none_answers_and_stops_everything(tmp_path):
    redis_port, web_port = free_port(), free_port()
    env = stack_env(tmp_path, f"redis://127.0.0.1:{redis_port}/0")
    process, lines = start(["up", "--web-port", str(web_port), "--no-mlflow"], env)
    try:
        output = "".join(wait_for_line(lines, "bmseg is up", 120))
        assert "started by bmseg" in output
        assert redis.Redis(port=redis_port).ping()
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=10) as response:
            assert response.status == 200 and json.loads(response.read())["status"] == "ok"
        second = subprocess.run(
            [sys.executable, "-m", "bmcore.cli", "up", "--web-port", str(free_port()), "--no-mlflow"],
            cwd=REPO,
            env=os.environ | env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert "already running" in second.stderr and "Traceback" not in second.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert not port_open(web_port) and not port_open(redis_port)


def test_up_uses_the_external_redis_and_leaves_it_running(tmp_path):
    web_port = free_port()
    external = "redis://127.0.0.1:6379/10"
    process, lines = start(["up", "--web-port", str(web_port), "--no-mlflow"], stack_env(tmp_path, external))
    try:
        output = "".join(wait_for_line(lines, "bmseg is up", 120))
        assert "(external)" in output
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert not port_open(web_port)
    assert redis.Redis(port=6379).ping()


def test_quick_demo_trains_and_evaluates_three_models_through_the_queue(tmp_path):
    env = stack_env(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmcore.cli",
            "demo",
            "--quick",
            "--no-serve",
            "--web-port",
            str(free_port()),
            "--mlflow-port",
            str(free_port()),
        ],
        cwd=REPO,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Table IV" in done.stdout and "lesion-wise Dice TC" in done.stdout
    report = json.loads((tmp_path / "data" / "demo-quick" / "report" / "report.json").read_text())
    assert set(report["models"]) == {"unet", "cnn", "fcn"}
    assert {m["registered"]["name"] for m in report["models"].values()} == {
        "bmseg-unet",
        "bmseg-cnn",
        "bmseg-fcn",
    }
    check = subprocess.run(
        [sys.executable, "-m", "bmcore.cli", "jobs"],
        cwd=REPO,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = [
        line.split("│") for line in check.stdout.splitlines() if "│ train" in line or "│ evaluate" in line
    ]
    assert len(rows) == 6 and all(row[3].strip() == "succeeded" for row in rows), check.stdout
