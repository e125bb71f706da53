"""Settings: a production secret key that is long, random and no placeholder; errors that name settings
without printing values (the CLI and the web start show one line); a development key no one else knows."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from bmcore.config import DEFAULT_SECRET, SECRET_KEY_FILE, ConfigError, Settings, get_settings

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "hunter2-db-password"
DATABASE_URL = f"postgresql+psycopg://bmseg:{PASSWORD}@db.example.org:5432/bmseg"


def _example_secret() -> str:
    """The BMSEG_SECRET_KEY value .env.example tells people to copy."""
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.startswith("BMSEG_SECRET_KEY="):
            return line.split("=", 1)[1]
    raise AssertionError(".env.example has no BMSEG_SECRET_KEY line")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean BMSEG_ environment in tmp_path (no .env file in the working directory); returns a setter."""
    for name in list(os.environ):
        if name.startswith("BMSEG_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BMSEG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()

    def use(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"BMSEG_{name.upper()}", value)
        get_settings.cache_clear()

    yield use
    get_settings.cache_clear()


UNSAFE_KEYS = {
    "placeholder from .env.example": _example_secret(),
    "default padded by spaces": f"   {DEFAULT_SECRET}  ",
    "1-character key": "x",
    "empty key": "",
    "32 bytes of one character": "a" * 40,
    "change-me variant": "CHANGE_ME_please_to_something_long_enough",
}


@pytest.mark.parametrize("key", list(UNSAFE_KEYS.values()), ids=list(UNSAFE_KEYS))
def test_production_refuses_an_unsafe_secret_key_naming_it_without_values(env, key):
    env(env="production", secret_key=key, database_url=DATABASE_URL)
    with pytest.raises(ConfigError) as caught:
        get_settings()

    message = str(caught.value)
    assert message.startswith("invalid settings: BMSEG_SECRET_KEY ")
    assert "\n" not in message
    rendered = "".join(traceback.format_exception(caught.value))  # what a traceback would show
    assert PASSWORD not in rendered and "input_value" not in rendered
    if key.strip():
        assert key.strip() not in rendered


def test_production_accepts_a_random_key_trimmed(env):
    key = secrets.token_urlsafe(48)
    env(env="production", secret_key=f"  {key}\n", database_url=DATABASE_URL)
    assert get_settings().secret_key == key


def test_a_bad_value_is_named_and_not_printed(env):
    env(max_voxels="lots-hunter2", database_url=DATABASE_URL)
    with pytest.raises(ConfigError) as caught:
        Settings()
    rendered = "".join(traceback.format_exception(caught.value))
    assert "BMSEG_MAX_VOXELS: Input should be a valid integer" in str(caught.value)
    assert "hunter2" not in rendered and "input_value" not in rendered


def test_development_key_is_generated_once_per_data_dir(env, tmp_path):
    env(env="development")
    first = get_settings().secret_key
    get_settings.cache_clear()
    second = get_settings().secret_key

    assert first == second
    assert first != DEFAULT_SECRET and len(first.encode()) >= 32
    path = tmp_path / "data" / SECRET_KEY_FILE
    assert path.read_text().strip() == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == [SECRET_KEY_FILE]  # no temporary file left

    env(secret_key=f"  {DEFAULT_SECRET} ")  # the public default, padded: the same local key
    assert get_settings().secret_key == first
    env(data_dir=str(tmp_path / "other"))  # another data dir, another key
    assert get_settings().secret_key != first


def test_a_chosen_development_key_is_kept(env):
    env(env="development", secret_key="my-own-dev-key")
    assert get_settings().secret_key == "my-own-dev-key"


def _production_env(tmp_path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BMSEG_")}
    return clean | {
        "BMSEG_ENV": "production",
        "BMSEG_SECRET_KEY": " " + DEFAULT_SECRET + " ",
        "BMSEG_DATABASE_URL": DATABASE_URL,
        "BMSEG_DATA_DIR": str(tmp_path / "data"),
    }


def test_the_cli_prints_one_line_without_values(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "from bmcore.cli.entry import main; main()", "jobs"],
        cwd=tmp_path,
        env=_production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: invalid settings: BMSEG_SECRET_KEY is a published placeholder")
    assert done.stderr.count("\n") == 1 and PASSWORD not in done.stderr + done.stdout


def test_the_web_start_prints_one_line_without_values(tmp_path):
    gunicorn = Path(sys.executable).parent / "gunicorn"
    done = subprocess.run(
        [str(gunicorn), "--preload", "--bind", "127.0.0.1:0", "services.web:create_app()"],
        cwd=REPO,
        env=_production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors[-1].startswith("Error: invalid settings: BMSEG_SECRET_KEY is a published placeholder")
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr + done.stdout
