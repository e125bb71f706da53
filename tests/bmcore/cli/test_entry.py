"""The ``bmseg`` app: every command group's module is listed, loads on demand, and torch stays out."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import typer

from bmcore.cli import app
from bmcore.cli.entry import COMMAND_MODULES


def test_the_command_table_names_every_command_of_every_module():
    modules = set(COMMAND_MODULES.values())
    defined = {
        name: module
        for module in modules
        for name in typer.main.get_group(importlib.import_module(f"bmcore.cli.{module}").commands).commands
    }
    assert defined == COMMAND_MODULES


def test_train_options_keep_each_commands_defaults():
    root = typer.main.get_command(app)
    ctx = click.Context(root)

    def default(*path: str, option: str):
        command = root
        for name in path:
            command = command.get_command(ctx, name)
        return next(p.default for p in command.params if p.name == option)

    assert default("train", option="epochs") == 50
    assert default("compare", option="epochs") == 30
    assert default("submit", "train", option="epochs") == 50
    assert default("train", option="modalities") is None


def test_queue_commands_load_neither_torch_nor_mlflow():
    code = (
        "import sys; from bmcore.cli.entry import app; import typer, click;"
        "root = typer.main.get_command(app); ctx = click.Context(root);"
        "[root.get_command(ctx, n) for n in ('jobs', 'job', 'cancel', 'submit', 'check', 'user', 'token')];"
        "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
