"""Model checkpoints: one ``torch.save`` file per model that rebuilds it from the file alone.

Format (read with ``torch.load(..., weights_only=True)``)::

    {"format_version": 1, "arch": "unet", "init_args": {...}, "state_dict": {...}, "extra": {...}}

A trained model's ``extra`` holds ``train_config`` (every TrainConfig field), ``preprocess`` (``size``,
``modalities``, ``context_slices``, ``native``) and ``postprocess`` (``min_component_voxels``, ``tta``);
:func:`inference_recipe` reads the last two, with the defaults of files written before they existed.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bmcore.imaging import MODALITIES
from bmcore.models.registry import MODELS, build_model, check_arch

CHECKPOINT_FORMAT_VERSION = 1
RECIPE_DEFAULTS: dict[str, Any] = {
    "size": 256,
    "modalities": MODALITIES,
    "context_slices": 0,  # 2.5D: neighbouring slices on each side as extra input channels
    "native": False,  # crop-trained: whole native-resolution slices, padded to ``multiple``, never resized
    "min_component_voxels": 0,
    "tta": False,
}


def bare_model(model: nn.Module) -> nn.Module:
    """The model itself, out of its ``torch.compile`` and ``DistributedDataParallel`` wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, arch: str, extra: dict[str, Any] | None = None
) -> None:
    """Write ``model`` (architecture ``arch``) and ``extra`` to ``path`` atomically.

    ``extra`` (optimizer state, epoch, metrics...) may hold only tensors, dicts, lists, tuples, str,
    int, float, bool and None, so that the file loads with ``weights_only=True``. Tensors are stored
    on the CPU. The file is written next to ``path`` and moved into place with ``os.replace``.
    """
    model = bare_model(model)
    check_arch(arch)
    if type(model) is not MODELS[arch]:
        raise ValueError(f"arch {arch!r} is {MODELS[arch].__name__}, but the model is {type(model).__name__}")
    extra = {} if extra is None else extra
    _check_plain(extra, "extra")
    checkpoint = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "arch": arch,
        "init_args": dict(model.init_args),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "extra": extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at ``path``; return it (in eval mode) and the whole checkpoint dict.

    Loads with ``weights_only=True``. When ``map_location`` names a device, the model is moved there.
    """
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    required = {"arch", "init_args", "state_dict"}
    if not isinstance(checkpoint, dict) or not required <= set(checkpoint):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"{os.fspath(path)} is not a bmseg model checkpoint "
            f"(expected keys {sorted(required)}, found {found})"
        )
    version = checkpoint.get("format_version", CHECKPOINT_FORMAT_VERSION)
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)} has checkpoint format {version}; "
            f"this bmseg reads formats up to {CHECKPOINT_FORMAT_VERSION}"
        )
    model = build_model(checkpoint["arch"], **checkpoint["init_args"])
    model.load_state_dict(checkpoint["state_dict"])
    if map_location is not None:
        model.to(map_location)
    return model.eval(), checkpoint


def inference_recipe(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """How inference must feed and finish a model: :data:`RECIPE_DEFAULTS` overridden by the checkpoint's
    ``extra.preprocess`` and ``extra.postprocess``, plus ``multiple`` (what the model's input sides must be
    a multiple of: 2**depth, 32 for the FCN)."""
    extra = checkpoint.get("extra", {})
    recipe = {**RECIPE_DEFAULTS, **extra.get("preprocess", {}), **extra.get("postprocess", {})}
    recipe["modalities"] = tuple(recipe["modalities"])
    depth = checkpoint["init_args"].get("depth")
    recipe["multiple"] = 32 if checkpoint["arch"] == "fcn" or depth is None else 2 ** int(depth)
    return recipe


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` for anything ``torch.load(weights_only=True)`` would refuse.

    Types are matched exactly: subclasses such as ``numpy.float64`` (a ``float``) or ``defaultdict``
    would be pickled as their own class and refused on load.
    """
    if value is None or type(value) in _PLAIN_SCALARS or isinstance(value, torch.Tensor):
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where}: keys must be str or int, got {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"{where}: {type(value).__name__} cannot be stored in a weights-only checkpoint "
        "(use tensors, dicts, lists, tuples, str, int, float, bool or None)"
    )


_PLAIN_SCALARS = (str, int, float, bool)
