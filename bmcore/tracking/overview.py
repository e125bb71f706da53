"""The registry at a glance, as plain dicts: ``bmseg registry`` prints it and the web's API serves it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bmcore.architectures import ARCHS
from bmcore.config import get_settings
from bmcore.tracking.client import is_missing, mlflow_client
from bmcore.tracking.registry import CHAMPION_ALIAS, finite, registered_model_name


def registry_overview() -> list[dict[str, Any]]:
    """The three registered models, each with its champion and its versions (newest first), as plain dicts.

    ``[{"name", "champion": version | None, "versions": [{"version", "run_id", "created", "status",
    "aliases", "tags", "metrics"}]}]``; ``metrics`` are the numeric tags. Read-only: a SQLite store
    that does not exist yet is left uncreated.
    """
    settings = get_settings()
    uri = settings.mlflow_tracking_uri
    store_missing = uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()
    client = None if store_missing else mlflow_client(settings)
    overview = []
    for arch in ARCHS:
        name = registered_model_name(arch)
        entry: dict[str, Any] = {"name": name, "champion": None, "versions": []}
        overview.append(entry)
        if client is None:
            continue
        try:
            aliases = client.get_registered_model(name).aliases or {}
        except Exception as error:
            if not is_missing(error):
                raise
            continue
        if CHAMPION_ALIAS in aliases:
            entry["champion"] = int(aliases[CHAMPION_ALIAS])
        versions = client.search_model_versions(f"name='{name}'")
        entry["versions"] = sorted(
            (_version_entry(version, aliases) for version in versions),
            key=lambda item: item["version"],
            reverse=True,
        )
    return overview


def _version_entry(version: Any, aliases: dict[str, Any]) -> dict[str, Any]:
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
    tags = dict(version.tags)
    return {
        "version": int(version.version),
        "run_id": version.run_id,
        "created": created.isoformat(timespec="seconds"),
        "status": version.status,
        "aliases": sorted(alias for alias, number in aliases.items() if str(number) == str(version.version)),
        "tags": tags,
        "metrics": {key: number for key, value in tags.items() if (number := finite(value)) is not None},
    }
