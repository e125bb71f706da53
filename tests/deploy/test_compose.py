"""The production compose file: it validates, it has what ops rely on, and it is safe by default: only the
TLS proxy publishes ports, MLflow runs its basic-auth app, every secret comes from .env (whose placeholders
are refused), and the web runs in production mode trusting exactly the one proxy in front of it."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from .compose_file import ONLY_INTERPOLATION, REPO, caddy_sites, env_example, interpolate, services

MLFLOW_CLIENTS = ("web", "worker-gpu", "worker-cpu")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")


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
    done = subprocess.run([*command, "config"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    published = {name: service.get("ports") for name, service in resolved.items() if service.get("ports")}
    assert set(published) == {"proxy"}, published  # as compose resolves it: nothing else is reachable
    assert {int(port["published"]) for port in published["proxy"]} >= {80, 443}
    assert resolved["web"]["environment"]["BMSEG_ENV"] == "production"
    (tmp_path / ".env").write_text("")  # no secrets: refused with the name of what is missing
    refused = subprocess.run([*command, "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode != 0 and "in .env" in refused.stderr + refused.stdout


def test_compose_has_durable_broker_health_checks_and_one_gpu_per_worker():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "mlflow", "web", "worker-gpu", "worker-cpu", "proxy"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    for name in ("redis", "postgres", "mlflow", "web"):
        assert "healthcheck" in services[name], name
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["worker-gpu"]["command"] == ["bmseg", "worker", "--queues", "gpu"]
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION" in services["mlflow"]["environment"]
    assert set(compose["volumes"]) >= {
        "redis-data",
        "postgres-data",
        "mlflow-artifacts",
        "mlflow-auth",
        "bmseg-data",
        "caddy-data",
    }


# ------------------------------------------------------------------------------------ safe by default


def _mlflow_command() -> str:
    """The MLflow service's shell line (``sh -c …``), as the container's shell receives it."""
    command = services()["mlflow"]["command"]
    assert command[:2] == ["sh", "-c"], command
    return command[2].replace("$$", "$")


def _environment(name: str) -> dict[str, str]:
    environment = services()[name].get("environment") or {}
    assert isinstance(environment, dict), f"{name}: environment as a mapping"
    return {key: str(value) for key, value in environment.items()}


def test_only_the_tls_proxy_publishes_ports():
    published = {name: service["ports"] for name, service in services().items() if service.get("ports")}
    assert set(published) == {"proxy"}, published  # MLflow and the web are reached through it only
    targets = {int(str(port).split(":")[-1]) for port in published["proxy"]}
    assert targets == {80, 443, 5000}
    assert services()["mlflow"]["expose"] == ["5000"] and services()["web"]["expose"] == ["8000"]


def test_mlflow_runs_its_basic_auth_app_with_the_deployed_config():
    mlflow = services()["mlflow"]
    server = shlex.split(_mlflow_command().split("exec ", 1)[1])
    assert server[:2] == ["mlflow", "server"] and server[server.index("--app-name") + 1] == "basic-auth"
    store = server[server.index("--backend-store-uri") + 1]
    assert store == "postgresql+psycopg://bmseg@postgres:5432/mlflow"  # no password on the command line

    environment = _environment("mlflow")
    config_path = environment["MLFLOW_AUTH_CONFIG_PATH"]
    assert f"./deploy/mlflow-auth.ini:{config_path}:ro" in mlflow["volumes"]
    config = configparser.ConfigParser()
    config.read(REPO / "deploy" / "mlflow-auth.ini")
    assert config["mlflow"]["default_permission"] == "READ"  # engineers browse; only grants write
    assert "admin_password" not in config["mlflow"]
    auth_db = config["mlflow"]["database_uri"].removeprefix("sqlite:///")
    assert "mlflow-auth:/mlflow-auth" in mlflow["volumes"] and auth_db.startswith("/mlflow-auth/")
    for name, setting in (
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_SECRET_KEY"),
        ("PGPASSWORD", "POSTGRES_PASSWORD"),
    ):
        match = ONLY_INTERPOLATION.match(environment[name])
        assert match and match["name"] == setting and match["kind"] == "?", (name, environment[name])
    hosts = environment["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"mlflow:5000", "${BMSEG_PUBLIC_HOST:-localhost}:5000"} <= set(hosts)


def test_the_services_that_talk_to_mlflow_sign_in_with_credentials_from_env():
    for name in MLFLOW_CLIENTS:
        environment = _environment(name)
        assert environment["BMSEG_MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        user = ONLY_INTERPOLATION.match(environment["MLFLOW_TRACKING_USERNAME"])
        password = ONLY_INTERPOLATION.match(environment["MLFLOW_TRACKING_PASSWORD"])
        assert user and user["name"] == "MLFLOW_ADMIN_USERNAME", name
        assert password and password["name"] == "MLFLOW_ADMIN_PASSWORD" and password["kind"] == "?", name


def test_the_web_runs_in_production_behind_one_trusted_proxy():
    web = services()["web"]
    environment = _environment("web")
    assert environment["BMSEG_ENV"] == "production" and environment["BMSEG_TRUSTED_PROXIES"] == "1"
    assert "0.0.0.0:8000" in web["command"]
    assert environment["BMSEG_MLFLOW_UI_URL"] == "https://${BMSEG_PUBLIC_HOST:-localhost}:5000"
    for name in ("worker-gpu", "worker-cpu"):
        assert "BMSEG_TRUSTED_PROXIES" not in _environment(name)  # no HTTP there to trust headers on


def test_the_proxy_terminates_tls_with_a_mounted_or_self_made_certificate():
    proxy = services()["proxy"]
    assert proxy["image"].startswith("caddy:")
    assert {
        "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro",
        "${BMSEG_TLS_DIR:-./deploy/tls}:/tls:ro",  # the operator's certificate
        "caddy-data:/data",  # Caddy's own CA and the certificate it made on the first start
    } <= set(proxy["volumes"])
    assert _environment("proxy") == {
        "BMSEG_PUBLIC_HOST": "${BMSEG_PUBLIC_HOST:-localhost}",
        "BMSEG_TLS": "${BMSEG_TLS:-internal}",
    }

    sites = caddy_sites()
    host = "{$BMSEG_PUBLIC_HOST:localhost}"
    assert sites[f"http://{host}"] == ["redir https://{host}{uri} permanent"]  # port 80 only redirects
    assert sites["(tls-internal)"] == ["tls internal"]
    assert sites["(tls-operator)"] == ["tls /tls/cert.pem /tls/key.pem"]
    for address, upstream in ((host, "web:8000"), (f"{host}:5000", "mlflow:5000")):
        assert "import tls-{$BMSEG_TLS:internal}" in sites[address], address
        assert f"reverse_proxy {upstream}" in sites[address], address
    assert not any("trusted_proxies" in line for lines in sites.values() for line in lines)
    assert (REPO / "deploy" / "tls" / ".gitignore").read_text().splitlines()[1] == "*"  # keys never committed


def test_no_secret_is_written_in_the_compose_file():
    text = (REPO / "docker-compose.yml").read_text()
    for name in services():
        for key, value in _environment(name).items():
            if SECRET_NAME.search(key):
                match = ONLY_INTERPOLATION.match(value)
                assert match and match["kind"] == "?", f"{name}: {key} must come from .env, required"
    for credentials in re.findall(r"://[^/\s@]+:([^/\s@]+)@", text):
        assert ONLY_INTERPOLATION.match(credentials), credentials  # a password in a URL: from .env too


def test_env_example_sets_every_required_value_with_an_obvious_placeholder():
    example = env_example()
    required = set(re.findall(r"\$\{(\w+):\?", (REPO / "docker-compose.yml").read_text()))
    assert required == {"BMSEG_SECRET_KEY", "POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY"}
    for name in required:
        assert example[name].startswith("change-me"), name


def test_the_mlflow_service_refuses_the_placeholders_of_env_example():
    environment = _environment("mlflow")
    guard = _mlflow_command().split("exec ", 1)[0] + "echo started"
    resolved = {
        key: interpolate(environment[key], env_example())
        for key in ("PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
    }
    refused = subprocess.run(["sh", "-c", guard], env=resolved, capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip() == "error: replace the change-me placeholders of .env.example in .env"

    chosen = {key: f"a-real-{key.lower()}-Zx81q" for key in resolved}
    started = subprocess.run(["sh", "-c", guard], env=chosen, capture_output=True, text=True)
    assert started.returncode == 0 and started.stdout == "started\n", started.stderr


def test_the_caddyfile_validates_in_both_tls_modes(tmp_path):
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed (Debian: apt-get install caddy)")
    base = {"PATH": "/usr/bin:/bin", "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    config = ["--adapter", "caddyfile", "--config", str(REPO / "deploy" / "Caddyfile")]

    def run(verb: str, **environment: str) -> subprocess.CompletedProcess:
        env = {**base, **environment}
        return subprocess.run([caddy, verb, *config], env=env, capture_output=True, text=True, timeout=60)

    internal = run("validate", BMSEG_PUBLIC_HOST="bmseg.example.org")  # the default: BMSEG_TLS unset
    assert internal.returncode == 0, internal.stderr
    operator = run("adapt", BMSEG_PUBLIC_HOST="bmseg.example.org", BMSEG_TLS="operator")
    assert operator.returncode == 0, operator.stderr  # (validating would load the operator's files)
    (loaded,) = json.loads(operator.stdout)["apps"]["tls"]["certificates"]["load_files"]
    assert (loaded["certificate"], loaded["key"]) == ("/tls/cert.pem", "/tls/key.pem")
    unknown = run("adapt", BMSEG_TLS="letsencrypt")
    assert unknown.returncode != 0 and "tls-letsencrypt" in unknown.stderr
