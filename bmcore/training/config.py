"""Run configuration as data: a frozen dataclass per training run (torch-free).

Stored in every checkpoint, logged as MLflow params, and used by the job service to validate a job's
parameters at submission time (the web process never imports torch). ``LOSSES`` is the one list of loss
names (:mod:`bmcore.training.losses` builds its registry from it); architecture names come from
:mod:`bmcore.architectures`.

A run starts from a named recipe (:data:`RECIPES`): ``bmseg`` (the defaults: Dice + CE on 64² native
crops, 2D, no TTA; chosen by the ablation of ``bench/bench_recipe.py``, where one neighbouring slice
each side did worse and flip TTA did not help at twice the inference time) or ``study`` (the paper's:
categorical CE on whole slices resized to 256²); :meth:`TrainConfig.from_dict` and the command line fill
the fields not given from the recipe. The options:

- ``class_weights``: ``none``, ``inverse_frequency`` (each class weighted by the inverse of its voxel
  frequency over the training slices, normalised to a mean of 1 over the classes present) or four fixed
  weights ``"w0,w1,w2,w3"`` for background, NETC, SNFH, ET; they weight the cross-entropy of ``ce`` and of
  ``dice_ce`` (the Dice term is class-balanced already).
- ``crop``: 0 trains on whole slices resized to ``size × size`` (the study's); N > 0 trains on N × N
  crops at native in-plane resolution inside the brain's bounding box, centred on a random lesion voxel
  for the share ``lesion_fraction`` of the draws. Such a model runs on whole native slices padded to a
  multiple of :attr:`TrainConfig.input_multiple` (``size`` is then unused).
- ``context_slices``: k > 0 feeds the k axial neighbours on each side as extra input channels (2.5D),
  ``(2k + 1) × modalities`` channels ordered slice-major (offset −k … +k, modalities within each), the
  centre slice's modalities at ``k × modalities``; neighbours beyond the volume are zeros (the value
  outside the brain after normalisation).
- ``lesion_balance``: lesion slices are drawn so that every 3D lesion is as likely as any other, and a
  crop is centred on one of its slice's lesions drawn uniformly (:mod:`bmcore.data.lesion_balance`);
  otherwise lesion slices are drawn alike and a crop centres on a random lesion voxel (large lesions win).
- ``val_slices``: the validation pass of every epoch scores N evenly spaced validation slices (0: all);
  a budget knob for CPUs, the whole-volume validation after training is unaffected.
- ``min_component_voxels``: inference drops predicted tumour components (26-connected, labels 1-3) of
  fewer voxels; ``tta``: inference averages with the left-right mirrored prediction unless told otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from bmcore.architectures import ARCHS
from bmcore.imaging import MODALITIES

__all__ = [
    "ARCHS",
    "CLASS_WEIGHTINGS",
    "LOSSES",
    "MAX_CONTEXT_SLICES",
    "MODALITIES",
    "RECIPES",
    "TrainConfig",
]
LOSSES: tuple[str, ...] = ("ce", "dice_ce")
CLASS_WEIGHTINGS: tuple[str, ...] = ("none", "inverse_frequency")  # or four numbers "w0,w1,w2,w3"
NUM_CLASSES = 4
MAX_CONTEXT_SLICES = 4  # 9 slices per modality at most
# The named recipes: the fields each sets (bench/results/recipe_ablation.md measured them). ``bmseg``'s
# are TrainConfig's defaults; ``study`` is the paper's: categorical CE on whole slices resized to 256².
RECIPES: dict[str, dict] = {
    "bmseg": {
        "loss": "dice_ce",
        "class_weights": "none",
        "crop": 64,
        "context_slices": 0,
        "lesion_balance": False,
        "min_component_voxels": 0,
        "tta": False,
    },
    "study": {
        "loss": "ce",
        "class_weights": "none",
        "size": 256,
        "crop": 0,
        "context_slices": 0,
        "lesion_balance": False,
        "min_component_voxels": 0,
        "tta": False,
    },
}


def parse_class_weights(spec: str) -> str | tuple[float, ...] | None:
    """``class_weights`` as data: None (``none``), ``"inverse_frequency"``, or four non-negative weights."""
    if spec in CLASS_WEIGHTINGS:
        return None if spec == "none" else spec
    problem = (
        f"class_weights must be none, inverse_frequency or {NUM_CLASSES} comma-separated non-negative "
        f"numbers (background, NETC, SNFH, ET), got {spec!r}"
    )
    try:
        weights = tuple(float(part) for part in str(spec).split(","))
    except ValueError:
        raise ValueError(problem) from None
    valid = all(math.isfinite(w) and w >= 0 for w in weights) and any(weights)
    if len(weights) != NUM_CLASSES or not valid:
        raise ValueError(problem)
    return weights


def _recipe_of(values: dict) -> str:
    """The recipe of values given without one: for a complete config stored before recipes had names,
    ``study`` when it holds the study's settings, else ``bmseg``; for partial values (a job's params),
    ``bmseg``, whose values then fill the fields not given."""
    study = {k: v for k, v in RECIPES["study"].items() if k not in ("lesion_balance", "size")}
    if all(k in values for k in study) and all(values[k] == v for k, v in study.items()):
        return "study"
    return "bmseg"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs, as data; stored in every checkpoint and logged as MLflow params."""

    arch: str = "unet"
    recipe: str = "bmseg"  # the named recipe the fields below start from (RECIPES)
    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    loss: str = "dice_ce"
    class_weights: str = "none"  # none | inverse_frequency | "w0,w1,w2,w3"
    size: int = 256
    crop: int = 64  # 0: whole slices resized to size; N: N x N native-resolution crops
    context_slices: int = 0  # k neighbouring slices on each side as extra channels (2.5D)
    base_channels: int = 32
    depth: int = 4
    dropout: float = 0.2
    modalities: tuple[str, ...] = MODALITIES
    lesion_fraction: float = 0.5
    lesion_balance: bool = False  # every lesion drawn as often, whatever its size (data/lesion_balance.py)
    samples_per_epoch: int = 0  # 0: one pass over all training slices
    val_slices: int = 0  # 0: every validation slice each epoch; N: N evenly spaced ones
    augment: bool = True
    min_component_voxels: int = 0  # inference: drop predicted tumour components smaller than this
    tta: bool = False  # inference: left-right flip test-time augmentation by default
    early_stopping_patience: int = 10
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"
    mixed_precision: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True
    compile: bool = False

    def __post_init__(self):
        checks = [
            (self.epochs >= 1, f"epochs must be a positive integer, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be positive, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"learning rate must be positive, got {self.lr}"),
            (
                self.size >= 16 and self.size % 32 == 0,
                f"input size must be a multiple of 32, got {self.size}",
            ),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (0.0 <= self.lesion_fraction <= 1.0, "lesion fraction must be in [0, 1]"),
            (self.val_slices >= 0, f"val_slices must be 0 (all) or more, got {self.val_slices}"),
            (self.arch in ARCHS, f"unknown arch {self.arch!r}; choose from {', '.join(ARCHS)}"),
            (self.recipe in RECIPES, f"unknown recipe {self.recipe!r}; choose from {', '.join(RECIPES)}"),
            (self.loss in LOSSES, f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}"),
            (self.depth >= 1 and self.base_channels >= 1, "depth and base channels must be positive"),
            (
                self.crop == 0 or (self.crop >= 16 and self.crop % self.input_multiple == 0),
                f"crop must be 0 (whole resized slices) or a multiple of {self.input_multiple} "
                f"(2**depth; 32 for fcn) of at least 16, got {self.crop}",
            ),
            (
                0 <= self.context_slices <= MAX_CONTEXT_SLICES,
                f"context_slices must be from 0 to {MAX_CONTEXT_SLICES}, got {self.context_slices}",
            ),
            (
                self.min_component_voxels >= 0,
                f"min_component_voxels must be 0 (keep all) or more, got {self.min_component_voxels}",
            ),
            (
                set(self.modalities) <= set(MODALITIES) and len(self.modalities) > 0,
                f"modalities must be a non-empty subset of {', '.join(MODALITIES)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        parse_class_weights(self.class_weights)

    @property
    def input_multiple(self) -> int:
        """What the slice sides must be a multiple of: 2**depth (32 for the FCN's five poolings)."""
        return 32 if self.arch == "fcn" else 2**self.depth

    @property
    def in_channels(self) -> int:
        return len(self.modalities) * (2 * self.context_slices + 1)

    @property
    def cache_size(self) -> int:
        """The in-plane size of the slice cache: ``size``, or 0 (native) for crop training."""
        return 0 if self.crop else self.size

    def preprocess_settings(self) -> dict:
        """What inference must do to a study before the model (the checkpoint's ``preprocess``)."""
        return {
            "size": self.size,
            "modalities": list(self.modalities),
            "context_slices": self.context_slices,
            "native": self.crop > 0,
        }

    def postprocess_settings(self) -> dict:
        """What inference does after the model by default (the checkpoint's ``postprocess``)."""
        return {"min_component_voxels": self.min_component_voxels, "tta": self.tta}

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A config from plain values; fields not given take the values of ``values["recipe"]``'s recipe
        (default ``bmseg``), then TrainConfig's defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training parameter(s): {', '.join(unknown)}")
        recipe = values.get("recipe") or _recipe_of(values)
        values = {**RECIPES.get(recipe, {}), **values, "recipe": recipe}
        if "modalities" in values:
            values["modalities"] = tuple(values["modalities"])
        return cls(**values)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["modalities"] = list(self.modalities)
        return values

    def model_args(self) -> dict:
        args = {
            "in_channels": self.in_channels,
            "num_classes": 4,
            "base_channels": self.base_channels,
            "dropout": self.dropout,
        }
        if self.arch != "fcn":
            args["depth"] = self.depth
        return args
