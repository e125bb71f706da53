"""The shape of the code in bmcore/ and services/: module and function sizes (the figures of issue #14).

    python bench/code_shape.py [ROOT]

prints the number of modules, their median length, the files over 350 lines, the functions over 50 and
60 lines, and the median / p90 / largest function. The limits themselves are enforced by
``tests/deploy/test_code_shape.py``; this script only reports.
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path

FILE_LIMIT = 350
FUNCTION_LIMIT = 60


def module_paths(root: Path) -> list[Path]:
    return sorted(path for package in ("bmcore", "services") for path in (root / package).rglob("*.py"))


def function_lengths(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, length in lines) of every function and method."""
    return [
        (node.name, node.lineno, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def main(root: Path) -> None:
    paths = module_paths(root)
    lines = {path: path.read_text().count("\n") for path in paths}
    functions = [
        (path.relative_to(root), *function)
        for path in paths
        for function in function_lengths(path.read_text())
    ]
    lengths = sorted(length for *_, length in functions)
    print(f"modules: {len(paths)}, median {statistics.median(lines.values()):.0f} lines")
    for path, count in sorted(lines.items(), key=lambda item: -item[1]):
        if count > FILE_LIMIT:
            print(f"  over {FILE_LIMIT} lines: {path.relative_to(root)} ({count})")
    over_limit = sum(n > FUNCTION_LIMIT for n in lengths)
    print(
        f"functions: {len(lengths)}, median {statistics.median(lengths):.0f}, "
        f"p90 {lengths[int(len(lengths) * 0.9)]}, largest {lengths[-1]} lines; "
        f"over 50: {sum(n > 50 for n in lengths)}, over {FUNCTION_LIMIT}: {over_limit}"
    )
    for path, name, first, length in sorted(functions, key=lambda row: -row[3]):
        if length > 50:
            print(f"  {path}:{first} {name} ({length} lines)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
