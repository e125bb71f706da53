"""Modules stay small enough to read: no file in bmcore/ or services/ over 350 lines, no function over 60."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FILE_LIMIT = 350
FUNCTION_LIMIT = 60


def modules() -> list[Path]:
    return sorted(path for package in ("bmcore", "services") for path in (REPO / package).rglob("*.py"))


def test_no_module_is_over_350_lines():
    long = {str(p.relative_to(REPO)): n for p in modules() if (n := p.read_text().count("\n")) > FILE_LIMIT}
    assert long == {}


def test_no_function_is_over_60_lines():
    long = [
        f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > FUNCTION_LIMIT
    ]
    assert long == []
