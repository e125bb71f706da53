"""``bmseg user|group|token``: passwords from a prompt or stdin (never argv), roles, disabling, groups and
token terms change the database; unknown names and refused values exit 1 with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from bmcore.accounts import authenticate, check_token, create_user, get_user, session_user, start_session
from bmcore.cli import app
from bmcore.config import get_settings
from bmcore.db import ApiToken, dispose_engines, init_db, session_factory, utcnow

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "correct-horse-battery"


@pytest.fixture
def cli_db(sqlite_url, monkeypatch):
    """BMSEG_DATABASE_URL at a fresh, migrated SQLite file; a session on it."""
    monkeypatch.setenv("BMSEG_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    init_db(sqlite_url)
    try:
        with session_factory(sqlite_url)() as session:
            yield session
    finally:
        get_settings.cache_clear()
        dispose_engines()


def bmseg(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def test_user_create_takes_no_password_on_the_command_line(cli_db, sqlite_url):
    env = os.environ | {"BMSEG_DATABASE_URL": sqlite_url}
    command = [sys.executable, "-m", "bmcore.cli", "user", "create", "ann@example.org"]

    refused = subprocess.run(
        [*command, "--password", PASSWORD], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "No such option" in refused.stderr
    assert get_user(cli_db, "ann@example.org") is None

    done = subprocess.run(
        [*command, "--password-stdin", "--role", "clinician"],
        input=PASSWORD + "\nignored second line\n",
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in " ".join(command) and PASSWORD not in done.stdout + done.stderr
    assert authenticate(cli_db, "ann@example.org", PASSWORD).role == "clinician"


def test_user_create_prompts_for_a_hidden_confirmed_password(cli_db):
    result = bmseg("user", "create", "bo@example.org", "--admin", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "created admin bo@example.org" in result.stdout and PASSWORD not in result.stdout
    assert authenticate(cli_db, "bo@example.org", PASSWORD).is_admin


def test_set_password_set_role_disable_and_enable_change_the_database(cli_db):
    user = create_user(cli_db, "cy@example.org", PASSWORD)
    key = start_session(cli_db, user)

    result = bmseg("user", "set-password", "CY@example.org", "--password-stdin", input="another-password\n")
    assert result.exit_code == 0, result.output
    cli_db.expire_all()
    assert authenticate(cli_db, "cy@example.org", "another-password") is not None
    assert session_user(cli_db, key) is None  # the password change signed them out

    assert bmseg("user", "set-role", "cy@example.org", "clinician").exit_code == 0
    cli_db.expire_all()
    assert get_user(cli_db, "cy@example.org").role == "clinician"

    key = start_session(cli_db, get_user(cli_db, "cy@example.org"))
    assert bmseg("user", "disable", "cy@example.org").exit_code == 0
    cli_db.expire_all()
    assert get_user(cli_db, "cy@example.org").disabled and session_user(cli_db, key) is None
    assert authenticate(cli_db, "cy@example.org", "another-password") is None
    listed = bmseg("user", "list").stdout.splitlines()
    assert listed[0].split() == ["email", "role", "status", "groups"]
    assert listed[1].split() == ["cy@example.org", "clinician", "disabled", "-"]

    assert bmseg("user", "enable", "cy@example.org").exit_code == 0
    cli_db.expire_all()
    assert authenticate(cli_db, "cy@example.org", "another-password") is not None


def test_group_commands_change_membership(cli_db):
    create_user(cli_db, "di@example.org", PASSWORD)
    create_user(cli_db, "ed@example.org", PASSWORD)
    assert bmseg("group", "create", "lab-a").exit_code == 0
    assert bmseg("group", "add", "lab-a", "di@example.org").exit_code == 0
    assert bmseg("group", "add", "lab-a", "ed@example.org").exit_code == 0
    assert bmseg("group", "list").stdout.splitlines() == ["lab-a: di@example.org, ed@example.org"]
    assert bmseg("user", "list").stdout.splitlines()[1].split() == [
        "di@example.org",
        "researcher",
        "enabled",
        "lab-a",
    ]

    assert bmseg("group", "remove", "lab-a", "di@example.org").exit_code == 0
    cli_db.expire_all()
    assert [g.name for g in get_user(cli_db, "di@example.org").groups] == []
    assert [g.name for g in get_user(cli_db, "ed@example.org").groups] == ["lab-a"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("user", "disable", "nobody@example.org"), "no user nobody@example.org"),
        (("user", "enable", "nobody@example.org"), "no user nobody@example.org"),
        (("user", "set-role", "nobody@example.org", "admin"), "no user nobody@example.org"),
        (("user", "set-role", "fi@example.org", "nurse"), "unknown role 'nurse'"),
        (("user", "create", "new@example.org", "--role", "nurse"), "unknown role 'nurse'"),
        (("user", "create", "fi@example.org", "--password-stdin"), "a user fi@example.org already exists"),
        (("user", "set-password", "nobody@example.org", "--password-stdin"), "no user nobody@example.org"),
        (("user", "set-password", "fi@example.org", "--password-stdin"), "password too short"),
        (("group", "add", "lab-z", "fi@example.org"), "no group 'lab-z'"),
        (("group", "add", "lab-a", "nobody@example.org"), "no user nobody@example.org"),
        (("group", "remove", "lab-z", "fi@example.org"), "no group 'lab-z'"),
        (("group", "create", "lab-a"), "a group lab-a already exists"),
        (("group", "create", "bad name"), "not a group name"),
        (("token", "create", "nobody@example.org"), "no user nobody@example.org"),
    ],
)
def test_unknown_names_and_refused_values_exit_1_with_one_line(cli_db, args, message):
    create_user(cli_db, "fi@example.org", PASSWORD)
    assert bmseg("group", "create", "lab-a").exit_code == 0
    result = bmseg(*args, input="short\n")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [result.stderr.strip()] and message in result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    cli_db.expire_all()
    assert authenticate(cli_db, "fi@example.org", PASSWORD) is not None
    assert get_user(cli_db, "new@example.org") is None


def test_token_create_prints_the_token_and_its_expiry(cli_db):
    create_user(cli_db, "gil@example.org", PASSWORD)
    result = bmseg("token", "create", "gil@example.org", "--name", "laptop", "--days", "30")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert check_token(cli_db, token).email == "gil@example.org"
    expires = (utcnow() + timedelta(days=30)).strftime("%Y-%m-%d")
    assert f"expires {expires}" in result.stderr


def test_token_create_beyond_the_maximum_term_exits_1(cli_db):
    create_user(cli_db, "hal@example.org", PASSWORD)
    most = get_settings().token_max_days
    result = bmseg("token", "create", "hal@example.org", "--days", str(most + 1))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: a token lasts at most {most} days (BMSEG_TOKEN_MAX_DAYS)"
    assert result.stdout == ""
    assert cli_db.scalar(select(func.count()).select_from(ApiToken)) == 0
