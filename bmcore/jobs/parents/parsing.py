"""The command-line spelling of sweep parameters (``bmseg submit sweep``, the dashboard's form); torch-free.

``'epochs=2,size=64'`` → training parameters, ``'lr=1e-3,3e-4;arch=unet,cnn'`` → a grid,
``'lr=1e-4:1e-2;arch=unet,cnn'`` → a random-search space.
"""

from __future__ import annotations

import math
from typing import Any

from bmcore.jobs.errors import JobParamsError
from bmcore.jobs.parent_params import LOG_UNIFORM


def parse_value(text: str) -> Any:
    """``true``/``false``, an integer, a finite number, else the text itself."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if kind is int or math.isfinite(value):
            return value
    return text


def _entries(text: str, separators: str) -> list[tuple[str, str]]:
    entries = []
    for item in (part.strip() for part in _split(text, separators)):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise JobParamsError(f"{item!r}: expected NAME=VALUE")
        entries.append((name.strip(), value.strip()))
    return entries


def _split(text: str, separators: str) -> list[str]:
    for separator in separators[1:]:
        text = text.replace(separator, separators[0])
    return text.split(separators[0])


def parse_assignments(text: str) -> dict[str, Any]:
    """``'epochs=2,size=64'`` (commas, semicolons or new lines between) → ``{"epochs": 2, "size": 64}``."""
    return {name: parse_value(value) for name, value in _entries(text or "", ",;\n")}


def parse_grid(text: str) -> dict[str, list[Any]]:
    """``'lr=1e-3,3e-4;arch=unet,cnn'`` (semicolons or new lines between names) → a sweep grid."""
    grid = {
        name: [parse_value(v) for v in values.split(",") if v.strip()]
        for name, values in _entries(text, ";\n")
    }
    if not grid:
        raise JobParamsError("the grid is empty; expected e.g. 'lr=1e-3,3e-4;arch=unet,cnn'")
    return grid


def parse_random(text: str) -> dict[str, Any]:
    """``'lr=1e-4:1e-2;arch=unet,cnn'`` → ranges (``low:high``; log-uniform for lr) and choices."""
    space: dict[str, Any] = {}
    for name, values in _entries(text, ";\n"):
        low, colon, high = values.partition(":")
        if colon:
            bounds = [parse_value(low), parse_value(high)]
            space[name] = {"log_uniform" if name in LOG_UNIFORM else "uniform": bounds}
        else:
            space[name] = {"choice": [parse_value(v) for v in values.split(",") if v.strip()]}
    if not space:
        raise JobParamsError("the random search space is empty; expected e.g. 'lr=1e-4:1e-2;arch=unet,cnn'")
    return space
