"""The MLflow server of docker-compose.yml, started for real (its command, environment and
deploy/mlflow-auth.ini; SQLite and a folder instead of PostgreSQL and the volume): anonymous requests are
refused, the bmseg services' credentials from the environment log runs and move ``champion``, and an
engineer's account (MLflow's default READ) browses but can neither move ``champion`` nor replace the model.
Issue 16, item 10: the published MLflow server let anyone on the network do both."""

from __future__ import annotations

import configparser
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from .compose_file import env_example, interpolate, services

STARTUP_SECONDS = 120
# Options the test replaces: a local port and stores; everything else is the compose command's.
LOCAL = {"--host": "127.0.0.1", "--workers": "1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_command(port: int, tmp_path: Path) -> list[str]:
    line = services()["mlflow"]["command"][2].replace("$$", "$")
    words = shlex.split(line.split("exec ", 1)[1])
    assert words[:2] == ["mlflow", "server"]
    replace = {
        **LOCAL,
        "--port": str(port),
        "--backend-store-uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination": str(tmp_path / "artifacts"),
    }
    for option, value in replace.items():
        words[words.index(option) + 1] = value
    return [sys.executable, "-m", "mlflow", *words[1:]]


def _server_environment(port: int, tmp_path: Path, secrets_: dict[str, str]) -> dict[str, str]:
    """The compose environment of the service, resolved with ``secrets_`` as the .env, pointed at a copy
    of deploy/mlflow-auth.ini whose only change is where the account database lives."""
    compose_env = services()["mlflow"]["environment"]
    environment = {key: interpolate(str(value), secrets_) for key, value in compose_env.items()}
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[2] / "deploy" / "mlflow-auth.ini")
    config["mlflow"]["database_uri"] = f"sqlite:///{tmp_path / 'basic_auth.db'}"
    with (tmp_path / "auth.ini").open("w") as handle:
        config.write(handle)
    environment["MLFLOW_AUTH_CONFIG_PATH"] = str(tmp_path / "auth.ini")
    environment["MLFLOW_SERVER_ALLOWED_HOSTS"] += f",127.0.0.1:{port}"  # this test's address
    keep = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    return {**keep, **environment, "MLFLOW_DISABLE_TELEMETRY": "true"}


def _wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mlflow server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)  # polling for readiness, not synchronising on time
    raise AssertionError(f"mlflow server not healthy within {STARTUP_SECONDS} s")


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch) -> Iterator[SimpleNamespace]:
    from bmcore.config import get_settings

    port = _free_port()
    dotenv = {**env_example(), "MLFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(24)}
    dotenv.update(MLFLOW_SECRET_KEY=secrets.token_urlsafe(32), POSTGRES_PASSWORD="unused-here")
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        _server_command(port, tmp_path),
        env=_server_environment(port, tmp_path, dotenv),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield SimpleNamespace(
            url=url, admin=dotenv["MLFLOW_ADMIN_USERNAME"], password=dotenv["MLFLOW_ADMIN_PASSWORD"]
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
        get_settings.cache_clear()  # the test pointed the settings at this server


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _client_as(monkeypatch, server, username: str, password: str):
    """bmseg's own MLflow client, signed in the way the compose services are: MLFLOW_TRACKING_* env."""
    from bmcore.config import get_settings
    from bmcore.tracking.client import mlflow_client

    monkeypatch.setenv("BMSEG_MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    get_settings.cache_clear()
    return mlflow_client()


@pytest.mark.slow
def test_the_composed_mlflow_server_needs_an_account_and_only_grants_write(
    mlflow_server, monkeypatch, tmp_path
):
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    monkeypatch.setenv("BMSEG_DATA_DIR", str(tmp_path / "data"))
    search = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert _status(search) == 401  # anonymous
    assert _status(search, {"Host": "mlflow:5000"}) == 401  # the services' host name, still an account
    assert _status(search, {"Host": "evil.example"}) == 403  # DNS rebinding: unknown Host refused

    service = _client_as(monkeypatch, mlflow_server, mlflow_server.admin, mlflow_server.password)
    run = service.create_run(service.create_experiment("bmseg-unet"))
    model = tmp_path / "model.pkl"
    model.write_bytes(b"the trained model")
    service.log_artifact(run.info.run_id, str(model))
    service.create_registered_model("bmseg-unet")
    version = service.create_model_version(
        "bmseg-unet", f"runs:/{run.info.run_id}/model.pkl", run.info.run_id, await_creation_for=0
    )
    service.set_registered_model_alias("bmseg-unet", "champion", version.version)
    get_app_client("basic-auth", tracking_uri=mlflow_server.url).create_user("engineer", "engineer-pass-0123")

    engineer = _client_as(monkeypatch, mlflow_server, "engineer", "engineer-pass-0123")
    assert engineer.get_model_version_by_alias("bmseg-unet", "champion").version == version.version
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
        engineer.set_registered_model_alias("bmseg-unet", "champion", version.version)
    forged = tmp_path / "forged" / "model.pkl"
    forged.parent.mkdir()
    forged.write_bytes(b"someone else's model")
    with pytest.raises(requests.HTTPError, match="403"):
        engineer.log_artifact(run.info.run_id, str(forged))  # replacing the pickled model
    kept = engineer.download_artifacts(run.info.run_id, "model.pkl", str(tmp_path))
    assert Path(kept).read_bytes() == b"the trained model"
    with pytest.raises(MlflowException, match="401|Unauthenticated|UNAUTHENTICATED"):
        _client_as(monkeypatch, mlflow_server, mlflow_server.admin, "not-the-password").search_experiments()
