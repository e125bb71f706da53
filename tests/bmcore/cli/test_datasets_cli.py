"""``bmseg datasets add|list|remove`` and ``bmseg submit … --dataset`` through typer's CliRunner, on a real
SQLite database (and a real Redis for the queued jobs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bmcore.cli import app
from bmcore.db import Job, dispose_engines, session_scope
from bmcore.db.groups import group_named


@pytest.fixture
def database(sqlite_url, monkeypatch) -> Iterator[str]:
    from bmcore.config import get_settings

    monkeypatch.setenv("BMSEG_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    try:
        yield sqlite_url
    finally:
        get_settings.cache_clear()
        dispose_engines()


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_add_list_remove(database, tmp_path):
    folder = tmp_path / "brats"
    folder.mkdir()
    assert "no data sets registered" in invoke("datasets", "list").output
    added = invoke("datasets", "add", "brats", str(folder), "--promotable")
    assert added.exit_code == 0, added.output
    assert added.output.strip() == f"added data set brats: {folder} (every researcher, promotable)"
    with session_scope() as session:
        group_named(session, "lab-a")
    assert invoke("datasets", "add", "lab", str(folder), "--group", "lab-a").exit_code == 0
    listed = invoke("datasets", "list")
    assert listed.exit_code == 0 and listed.output.splitlines() == [
        f"brats: {folder} (every researcher, promotable)",
        f"lab: {folder} (group lab-a, not promotable)",
    ]
    removed = invoke("datasets", "remove", "brats")
    assert removed.exit_code == 0 and removed.output.strip() == "removed data set brats"
    assert invoke("datasets", "list").output.splitlines() == [f"lab: {folder} (group lab-a, not promotable)"]


def test_a_relative_path_is_made_absolute(database, tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path)
    assert invoke("datasets", "add", "here", "here").exit_code == 0
    assert invoke("datasets", "list").output.strip().startswith(f"here: {tmp_path / 'here'} (")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "x", "{tmp}/missing"), "no such folder or manifest"),
        (("add", "a/b", "{tmp}"), "not a data set name"),
        (("add", "x", "{tmp}", "--group", "nobody"), "no group named 'nobody'"),
        (("add", "taken", "{tmp}"), "a data set named 'taken' exists"),
        (("remove", "nope"), "no data set named 'nope'"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(database, tmp_path, args, message):
    assert invoke("datasets", "add", "taken", str(tmp_path)).exit_code == 0
    result = invoke("datasets", *(arg.format(tmp=tmp_path) for arg in args))
    assert result.exit_code != 0
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert invoke("datasets", "list").output.splitlines() == [
        f"taken: {tmp_path} (every researcher, not promotable)"
    ]


def _stored_params() -> list[dict]:
    with session_scope() as session:
        return [job.params for job in session.scalars(select(Job).order_by(Job.created_at))]


def test_submit_names_a_data_set_or_a_path(database, tmp_path, redis_test_url):
    folder = tmp_path / "cohort"
    folder.mkdir()
    assert invoke("datasets", "add", "cohort", str(folder), "--promotable").exit_code == 0
    assert invoke("datasets", "add", "plain", str(folder)).exit_code == 0
    for args in (("--dataset", "cohort"), ("--dataset", "plain"), ("--data", str(folder))):
        done = invoke("submit", "train", *args, "--epochs", "1")
        assert done.exit_code == 0, done.output
    evaluated = invoke("submit", "evaluate", "--dataset", "cohort")
    assert evaluated.exit_code == 0, evaluated.output
    swept = invoke("submit", "sweep", "--data", str(folder), "--grid", "lr=1e-3,3e-4", "--base", "epochs=1")
    assert swept.exit_code == 0, swept.output
    promotable, plain, raw, evaluate, sweep = _stored_params()
    assert promotable["data"] == str(folder) and promotable["dataset"] == "cohort"
    assert promotable["champion_eligible"] is True
    assert plain["dataset"] == "plain" and plain["champion_eligible"] is False
    assert "dataset" not in raw and raw["champion_eligible"] is False  # a raw path never promotes
    assert evaluate["data"] == str(folder) and evaluate["dataset"] == "cohort"
    assert sweep["champion_eligible"] is False  # its children inherit it: none takes champion on its own

    unknown = invoke("submit", "train", "--dataset", "nope")
    assert unknown.exit_code != 0 and "no data set named 'nope'" in str(unknown.exception)
    both = invoke("submit", "train", "--dataset", "cohort", "--data", str(folder))
    assert both.exit_code == 2 and "not both" in both.output
    neither = invoke("submit", "train")
    assert neither.exit_code == 2 and "give --data or --dataset" in neither.output
    assert len(_stored_params()) == 5
