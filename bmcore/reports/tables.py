"""Markdown tables for reports (compare, sweeps, cross-validation, evaluation), drawn by tabulate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tabulate import tabulate


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; cells are used as given (format numbers before calling)."""
    cells = [[str(cell) for cell in row] for row in rows]
    return tabulate(cells, headers=list(header), tablefmt="github", disable_numparse=True)
