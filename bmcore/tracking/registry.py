"""The model registry: logged models, registered versions, the ``champion`` alias, and resolving a model.

Three registered models, ``bmseg-unet``, ``bmseg-cnn`` and ``bmseg-fcn``; the alias ``champion`` moves on
its own to a version with a better validation lesion-wise Dice TC (``val_lesion_dice_tc_brats2025`` when
both versions carry it, else ``val_lesion_dice``, the BraTS-METS 2023 rules) only when its run was eligible
(trained on a data set registered as promotable) and its validation set held at least ``min_val_lesions``
lesions (``val_lesions``; fewer: tagged ``too_small_to_promote``), else by ``set_champion`` (an admin, a
sweep's ``promote_best``); every move is an ``AliasMove`` row (:mod:`bmcore.tracking.alias_moves`). Each
version records what it was trained on (``training_data``, ``training_data_synthetic``) and carries
:func:`version_warnings`. Stages are deprecated in MLflow 3 and unused.

A registered version's model is logged by :func:`bmcore.tracking.logged_model.log_model`; its bmseg
checkpoint (``extra_files/bmseg-checkpoint.pt``) is what :func:`resolve_model` hands to
``load_checkpoint``. Torch-free; mlflow is imported inside the functions (the web imports this module).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from bmcore.architectures import ARCHS
from bmcore.config import Settings, get_settings
from bmcore.tracking.alias_moves import mover, recorded_move
from bmcore.tracking.client import already_exists, error_code, import_mlflow, is_missing, mlflow_client

CHAMPION_ALIAS = "champion"
CHAMPION_METRIC = "val_lesion_dice"
# Preferred figure (issue #15): validation lesion-wise Dice TC under the brats2025 convention, used when
# both versions carry it; else ``val_lesion_dice`` (bmseg's lesion-wise Dice TC, BraTS-METS 2023 rules).
CHAMPION_METRICS = ("val_lesion_dice_tc_brats2025", CHAMPION_METRIC)
VAL_LESIONS = "val_lesions"  # ground-truth TC lesions in the validation studies
TOO_SMALL_TAG = "too_small_to_promote"
DATA_TAG, SYNTHETIC_TAG = "training_data", "training_data_synthetic"
SYNTHETIC_WARNING = "trained on synthetic data: not for clinical use"
PROVENANCE_FILE = "provenance.json"  # beside a run's checkpoints: what it was trained on
CHECKPOINT_FILE = "bmseg-checkpoint.pt"
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


# ------------------------------------------------------------------------------ registered models


def registered_model_name(arch: str) -> str:
    """``bmseg-unet``, ``bmseg-cnn`` or ``bmseg-fcn``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown model {arch!r}; valid names: {', '.join(ARCHS)}")
    return f"bmseg-{arch}"


def register_model(
    run_id: str,
    arch: str,
    model_uri: str,
    metrics: dict[str, Any],
    champion_eligible: bool = True,
    moved_by: str | None = None,
    job_id: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Register ``model_uri`` as a new version of ``bmseg-<arch>``, its metrics as version tags.

    The alias ``champion`` moves to the new version when there is no champion yet or when its
    ``val_lesion_dice`` beats the champion's (a version without that figure never dethrones one
    that has it). A version registered with ``champion_eligible`` false (a cross-validation fold, a run
    on a data set not registered as promotable; tagged ``champion_eligible=false``) never takes it on its
    own; ``set_champion`` still can. Nor does a version whose ``val_lesions`` (validation lesions, in
    ``metrics``) is under the ``min_val_lesions`` setting: it is tagged ``too_small_to_promote=true``
    (a version registered without that figure is judged on its score alone). ``provenance``
    (:func:`training_provenance`) becomes the ``training_data`` / ``training_data_synthetic`` tags.
    A move is recorded as an ``AliasMove`` by ``moved_by`` (default:
    ``job <job_id>``, else ``cli:<os user>``) with the figures that decided it.
    Returns ``{"name", "version", "champion"}``.
    """
    name = registered_model_name(arch)
    client = mlflow_client()
    try:
        description = f"bmseg {arch} segmentation models; alias {CHAMPION_ALIAS!r} = best {CHAMPION_METRIC}"
        client.create_registered_model(name, description=description)
    except Exception as error:
        if not already_exists(error):
            raise
    tags = {key: text for key, value in metrics.items() if (text := _tag_number(value)) is not None}
    tags["arch"] = arch
    tags |= _provenance_tags(provenance)
    if not champion_eligible:
        tags["champion_eligible"] = "false"
    if too_small_to_promote(metrics.get(VAL_LESIONS)):
        tags[TOO_SMALL_TAG] = "true"
        champion_eligible = False
    model_id = model_uri.removeprefix("models:/") if re.fullmatch(r"models:/m-[0-9a-f]+", model_uri) else None
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id)
    if not champion_eligible:
        return {"name": name, "version": int(version.version), "champion": False}

    current = (client.get_registered_model(name).aliases or {}).get(CHAMPION_ALIAS)
    current_tags = {} if current is None else client.get_model_version(name, str(current)).tags
    key = champion_metric(tags, current_tags)
    score, current_score = finite(metrics.get(key)), finite(current_tags.get(key))
    champion = current is None or (score is not None and (current_score is None or score > current_score))
    if champion:
        reason = _champion_reason(key, score, current, current_score)
        with recorded_move(
            name, CHAMPION_ALIAS, current, version.version, mover(moved_by, job_id), reason, job_id
        ):
            client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version.version))
    return {"name": name, "version": int(version.version), "champion": champion}


def champion_metric(tags: dict[str, Any], current_tags: dict[str, Any]) -> str:
    """The figure two versions are compared on: the first of ``CHAMPION_METRICS`` the new version has
    (and the champion too, when there is one); ``val_lesion_dice`` otherwise."""
    for key in CHAMPION_METRICS:
        if key in tags and (not current_tags or key in current_tags):
            return key
    return CHAMPION_METRIC


def _champion_reason(key: str, score: float | None, current: Any, current_score: float | None) -> str:
    """Why a new version took ``champion``: ``val_lesion_dice 0.41 > 0.33 of v2``."""
    figure = "no figure" if score is None else f"{score:.4g}"
    if current is None:
        return f"{key} {figure}; no champion yet"
    if current_score is None:
        return f"{key} {figure}; v{current} has none"
    return f"{key} {figure} > {current_score:.4g} of v{current}"


def too_small_to_promote(val_lesions: Any) -> bool:
    """True when a validation set of ``val_lesions`` lesions is too small to promote on (fewer than the
    ``min_val_lesions`` setting, and always when it has none); False when the count is unknown (None)."""
    if val_lesions is None:
        return False
    count = finite(val_lesions)
    return count is None or count < max(1, get_settings().min_val_lesions)


def training_provenance(data: str | os.PathLike[str], dataset: str | None = None) -> dict[str, Any]:
    """What a version was trained on: the data set's name, else its path; synthetic when the data folder
    holds the ``cohort.json`` that :func:`bmcore.data.synth.synth_cohort` writes."""
    path = Path(data)
    folder = path if path.is_dir() else path.parent
    return {"data": dataset or str(data), "synthetic": (folder / "cohort.json").is_file()}


def _provenance_tags(provenance: dict[str, Any] | None) -> dict[str, str]:
    if not provenance:
        return {}
    return {DATA_TAG: str(provenance["data"]), SYNTHETIC_TAG: "true" if provenance["synthetic"] else "false"}


def version_warnings(tags: dict[str, Any]) -> list[str]:
    """The warnings a registered version carries, from its tags (CLI, Models page, job page)."""
    warnings = []
    if str(tags.get(SYNTHETIC_TAG, "")).lower() == "true":
        warnings.append(SYNTHETIC_WARNING)
    if str(tags.get(TOO_SMALL_TAG, "")).lower() == "true":
        lesions = tags.get(VAL_LESIONS, "?")
        warnings.append(
            f"validation set too small to promote on ({lesions} lesions, fewer than "
            f"{get_settings().min_val_lesions}): never takes {CHAMPION_ALIAS} on its own"
        )
    return warnings


def model_warnings(ref: str | os.PathLike[str]) -> list[str]:
    """What a user segmenting with ``ref`` must be told: a registry version's warnings (its tags), or for
    a checkpoint file the synthetic-data warning when the ``provenance.json`` its run wrote beside it says
    so (:func:`write_provenance`); none when nothing is known."""
    text = os.fspath(ref)
    match = _REGISTRY_URI.match(text) if text.startswith("models:/") else None
    if match is not None:
        return version_warnings(dict(_find_version(get_settings(), match, text).tags or {}))
    beside = Path(text).expanduser().parent / PROVENANCE_FILE
    try:
        provenance = json.loads(beside.read_text())
    except (OSError, ValueError):
        return []
    return [SYNTHETIC_WARNING] if isinstance(provenance, dict) and provenance.get("synthetic") else []


def write_provenance(folder: str | os.PathLike[str], provenance: dict[str, Any]) -> Path:
    """``provenance.json`` (:func:`training_provenance`) beside a run's checkpoints."""
    path = Path(folder) / PROVENANCE_FILE
    path.write_text(json.dumps(provenance))
    return path


def set_champion(
    name: str,
    version: int | str,
    moved_by: str | None = None,
    reason: str = "",
    job_id: str | None = None,
) -> bool:
    """Point ``name``'s ``champion`` alias at ``version`` (e.g. a sweep's best child, an admin's choice).

    Recorded as an ``AliasMove`` by ``moved_by`` (default: ``job <job_id>``, else ``cli:<os user>``).
    Returns False, recording nothing, when the alias is there already; ``LookupError`` for an unknown
    model or version.
    """
    client = mlflow_client()
    try:
        client.get_model_version(name, str(version))
        current = (client.get_registered_model(name).aliases or {}).get(CHAMPION_ALIAS)
    except Exception as error:
        if is_missing(error) or error_code(error) == "INVALID_PARAMETER_VALUE":
            raise LookupError(f"no model version {name}/{version}") from None
        raise
    if current is not None and str(current) == str(version):
        return False
    with recorded_move(name, CHAMPION_ALIAS, current, version, mover(moved_by, job_id), reason, job_id):
        client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version))
    return True


def _tag_number(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    number = finite(value)
    return None if number is None else repr(number)


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (text, NaN, infinity, missing)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# -------------------------------------------------------------------------------- resolving models


def resolve_model(ref: str | os.PathLike[str]) -> Path:
    """The local checkpoint file behind ``ref``: a checkpoint path, or ``models:/<name>@<alias>`` /
    ``models:/<name>/<version>`` (``latest`` is allowed as a version).

    Registry checkpoints are cached in ``<data_dir>/models/<name>/<version>/``. Raises
    ``FileNotFoundError`` for a missing path and ``LookupError`` for an unknown model, alias or version.
    """
    text = os.fspath(ref)
    if not text.startswith("models:/"):
        path = Path(text).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model {text}: no such checkpoint file")
        return path
    match = _REGISTRY_URI.match(text)
    if match is None:
        raise LookupError(f"{text} is not a registry URI (models:/bmseg-unet@champion, models:/bmseg-unet/3)")
    settings = get_settings()
    version = _find_version(settings, match, text)
    name = match["name"]
    folder = settings.data_dir / "models" / name / str(version.version)
    checkpoint = folder / CHECKPOINT_FILE
    origin = {"run_id": version.run_id, "source": version.source}
    marker = folder / "origin.json"
    if checkpoint.is_file() and marker.is_file() and json.loads(marker.read_text()) == origin:
        return checkpoint
    _download_checkpoint(settings, name, str(version.version), folder)
    marker.write_text(json.dumps(origin))
    return checkpoint


def _find_version(settings: Settings, match: re.Match[str], text: str) -> Any:
    """The registered version a parsed ``models:/`` URI names; ``LookupError`` when there is none."""
    client = mlflow_client(settings)
    name = match["name"]
    try:
        if match["alias"]:
            return client.get_model_version_by_alias(name, match["alias"])
        if match["version"] == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise LookupError(f"no model version for {text}")
            return max(versions, key=lambda candidate: int(candidate.version))
        if match["version"].isdigit():
            return client.get_model_version(name, match["version"])
        raise LookupError(f"no model version for {text} (a version is a number, or use @alias)")
    except LookupError:
        raise
    except Exception as error:
        if is_missing(error) or error_code(error) == "INVALID_PARAMETER_VALUE":
            raise LookupError(f"no model version for {text}") from None
        raise


def _download_checkpoint(settings: Settings, name: str, version: str, folder: Path) -> None:
    """Fetch the version's checkpoint into ``folder`` atomically (safe when several workers race)."""
    import_mlflow()
    import mlflow.artifacts  # lazy: keeps mlflow out of the web process

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
        uri = settings.mlflow_tracking_uri
        try:
            downloaded = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}/extra_files/{CHECKPOINT_FILE}",
                dst_path=scratch,
                tracking_uri=uri,
                registry_uri=uri,
            )
        except Exception as error:
            raise LookupError(
                f"models:/{name}/{version} holds no bmseg checkpoint (extra_files/{CHECKPOINT_FILE}): {error}"
            ) from None
        os.replace(downloaded, folder / CHECKPOINT_FILE)
