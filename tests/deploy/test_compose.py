"""The production compose file: it validates, and it has what ops rely on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_validates(tmp_path):
    command = compose_command()
    if command is None:
        pytest.skip(
            "neither `docker compose` nor `docker-compose` is installed (.ci/run installs docker-compose)"
        )
    for name in ("docker-compose.yml", ".env.example"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    (tmp_path / ".env").write_text((REPO / ".env.example").read_text())
    done = subprocess.run([*command, "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (tmp_path / ".env").write_text("")  # no secrets: refused with the name of what is missing
    refused = subprocess.run([*command, "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode != 0 and "in .env" in refused.stderr + refused.stdout


def test_compose_has_durable_broker_health_checks_and_one_gpu_per_worker():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "mlflow", "web", "worker-gpu", "worker-cpu"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    for name in ("redis", "postgres", "mlflow", "web"):
        assert "healthcheck" in services[name], name
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["worker-gpu"]["command"] == ["bmseg", "worker", "--queues", "gpu"]
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION" in services["mlflow"]["environment"]
    assert set(compose["volumes"]) >= {"redis-data", "postgres-data", "mlflow-artifacts", "bmseg-data"}
