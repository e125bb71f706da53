"""The deploy files as the deploy tests read them: docker-compose.yml, .env.example, deploy/Caddyfile,
and compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` interpolation (``$$``: a ``$``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
INTERPOLATION = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")
# A value that is nothing but one interpolation; ``required`` when it is ``${NAME:?…}``.
ONLY_INTERPOLATION = re.compile(r"^\$\{(?P<name>\w+)(?::(?P<kind>[-?])[^}]*)?\}$")


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def env_example() -> dict[str, str]:
    """.env.example's NAME=value lines (comments and blanks skipped)."""
    pairs = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def interpolate(text: str, values: dict[str, str]) -> str:
    """``text`` as compose resolves it with ``values`` for the .env; KeyError for a missing ``:?`` one."""

    def one(match: re.Match) -> str:
        name, kind, argument = match.groups()
        if values.get(name):
            return values[name]
        if kind == "?":
            raise KeyError(f"{name}: {argument}")
        return argument if kind == "-" else ""

    return INTERPOLATION.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def caddy_sites() -> dict[str, list[str]]:
    """deploy/Caddyfile's top-level blocks (site addresses, snippets, the global options as ``""``): the
    stripped, non-comment lines of each."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in (REPO / "deploy" / "Caddyfile").read_text().splitlines():
        line = raw.split(" #")[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if current is None and line.endswith("{"):
            current = blocks.setdefault(line[:-1].strip(), [])
        elif current is not None and raw.startswith("}"):
            current = None
        elif current is not None:
            current.append(line)
    return blocks
