"""The architectures by name: the classes that implement the one list of names
(``ARCHS``, torch-free, in :mod:`bmcore.architectures`), built from it."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from bmcore.architectures import ARCHS
from bmcore.models.cnn import SegmentationCNN
from bmcore.models.fcn import FCN8s
from bmcore.models.unet import AttentionUNet

_CLASSES: dict[str, type[nn.Module]] = {"unet": AttentionUNet, "cnn": SegmentationCNN, "fcn": FCN8s}
assert set(_CLASSES) == set(ARCHS), f"ARCHS {ARCHS} and the model classes {sorted(_CLASSES)} disagree"
MODELS: dict[str, type[nn.Module]] = {name: _CLASSES[name] for name in ARCHS}


def check_arch(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a registered architecture."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the architecture registered as ``name`` with constructor arguments ``kwargs``."""
    check_arch(name)
    model_class = MODELS[name]
    valid = list(inspect.signature(model_class).parameters)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown argument(s) for {name!r}: {', '.join(unknown)}; valid: {', '.join(valid)}")
    return model_class(**kwargs)
