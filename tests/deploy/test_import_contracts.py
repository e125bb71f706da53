"""The import contracts (`lint-imports`, configured in pyproject.toml) hold, and they catch a breach.

A contract that cannot fail checks nothing, so each breach below is planted in a copy of the packages
and must be reported by name.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp  # import-linter's graph builder
import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "240"}
    return subprocess.run(
        [str(LINT_IMPORTS), str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def copy_of_packages(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("contracts")
    for name in ("bmcore", "services"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_repository_keeps_every_contract():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("services/web/slices.py", "import torch", "the web never reaches torch"),
        ("bmcore/metrics/__init__.py", "import flask", "bmcore is a library"),
        ("services/web/auth.py", "import services.worker.tasks", "web and worker share bmcore"),
        ("bmcore/config.py", "import bmcore.jobs.lifecycle", "bmcore runs one way"),
    ],
)
def test_a_planted_breach_is_reported(copy_of_packages, module, planted, contract):
    path = copy_of_packages / module
    original = path.read_text()
    path.write_text(original + f"\n{planted}  # planted by the test\n")
    try:
        result = lint_imports(copy_of_packages)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.rstrip().endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout[-3000:]


def import_cycles(graph) -> list[list[str]]:
    """The strongly connected groups of two or more modules (Tarjan), type-checking imports included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("bmcore", "services", cache_dir=None)
    assert import_cycles(graph) == []
    graph.add_import(importer="bmcore.config", imported="bmcore.jobs.lifecycle")  # the check can fail
    assert any("bmcore.config" in group for group in import_cycles(graph))


def imports_without_a_reason(source: str) -> list[int]:
    """Lines of function-level imports with no ``# lazy: <reason>`` on them or on the lines just above."""
    lines = source.splitlines()
    missing = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            above = node.lineno - 1
            while above > 0 and lines[above - 1].strip().startswith(("#", "from ", "import ")):
                above -= 1
            if not any("# lazy:" in line for line in lines[above : node.end_lineno]):
                missing.append(node.lineno)
    return missing


def test_every_function_level_import_says_why_it_is_lazy():
    missing = [
        f"{path.relative_to(REPO)}:{line}"
        for package in ("bmcore", "services")
        for path in sorted((REPO / package).rglob("*.py"))
        for line in imports_without_a_reason(path.read_text())
    ]
    assert missing == []
    assert imports_without_a_reason("def f():\n    import torch\n") == [2]
    assert imports_without_a_reason("def f():\n    import torch  # lazy: keeps the web torch-free\n") == []
