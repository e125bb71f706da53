"""The TrainConfig fields as command-line options, declared once for ``train``, ``compare``, ``submit train``.

An option takes its type and default from :class:`~bmcore.training.config.TrainConfig` and its help from
:data:`HELP`. A command picks the fields it offers with :func:`with_train_options`, in the order its
``--help`` lists them, and may word a help or change a default for itself (``compare --epochs`` is 30).
The options stand where the command's ``train_options`` parameter stands, and the command receives their
values in it, as one dict, ``--recipe`` applied: the fields its recipe sets take the recipe's values
unless given on the command line.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import fields
from typing import Any

import typer

from bmcore.cli.console import parse_modalities
from bmcore.training.config import RECIPES, TrainConfig

HELP: dict[str, str] = {  # every field a command offers, in the order of ``bmseg train --help``
    "arch": "unet, cnn or fcn.",
    "recipe": "bmseg (Dice + CE on native 64² crops) or study (the paper's: "
    "CE on whole slices resized to 256²); options given beside it win.",
    "epochs": "Maximum epochs (early stopping may end sooner).",
    "batch_size": "Slices per batch.",
    "lr": "Adam learning rate.",
    "loss": "ce (the study's) or dice_ce.",
    "class_weights": "CE class weights: none, inverse_frequency or w0,w1,w2,w3 (bg, NETC, SNFH, ET).",
    "size": "In-plane input size (multiple of 32).",
    "crop": "0: whole slices resized to --size (the study's); N: NxN crops at native resolution.",
    "context_slices": "2.5D: neighbouring slices on each side as extra input channels (0: 2D).",
    "base_channels": "Width of the first level.",
    "depth": "Pooling levels (unet, cnn).",
    "dropout": "Dropout rate.",
    "lesion_fraction": "Share of sampled slices that show a lesion.",
    "lesion_balance": "Draw every lesion as often, whatever its size (else lesion slices alike).",
    "samples_per_epoch": "Slices per epoch (0: one pass over the training slices).",
    "val_slices": "Validation slices scored each epoch, evenly spaced (0: all).",
    "augment": "Flips, small rotations, intensity scale/shift, noise.",
    "min_component_voxels": "Inference drops predicted tumour components under this many voxels (0: none).",
    "tta": "Inference averages with the left-right mirrored prediction by default.",
    "early_stopping_patience": "Epochs without validation improvement before stopping.",
    "seed": "Seed for the split, the weights and the sampling.",
    "num_workers": "DataLoader worker processes.",
    "device": "auto, cpu, cuda or cuda:N.",
    "modalities": "Comma-separated subset of t1,t1ce,t2,flair.",
}
# The terser wording of the commands that train for someone else (``compare``, ``submit train``).
SHORT_HELP: dict[str, str] = {
    "loss": "ce or dice_ce.",
    "size": "In-plane input size.",
    "samples_per_epoch": "Slices per epoch (0: one pass).",
    "seed": "Split and training seed.",
}
# Fields typed differently on the command line than in the config: name → (type, default).
COMMAND_LINE_FORM: dict[str, tuple[Any, Any]] = {"modalities": (str | None, None)}
FIELD_TYPES = typing.get_type_hints(TrainConfig)
FIELD_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}

TRAIN_OPTIONS: Any = None  # the default of a command's ``train_options`` parameter (the decorator fills it)
CONTEXT = "_train_options_context"  # the click context the decorator asks typer for
GIVEN = ("COMMANDLINE", "ENVIRONMENT")  # parameter sources that count as given (typer vendors click's enum)


def with_train_options(
    names: Sequence[str] = tuple(HELP),
    *,
    without: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
    helps: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: the command's ``train_options`` parameter becomes one option per field in ``names``
    (by default all of :data:`HELP`, in its order) but those ``without``."""
    names = [name for name in names if name not in without]
    options = [_option(name, (defaults or {}).get(name), (helps or {}).get(name)) for name in names]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        parameters = list(signature.parameters.values())
        if "train_options" not in signature.parameters:
            raise TypeError(f"{command.__name__} needs a train_options parameter for its training options")
        at = [p.name for p in parameters].index("train_options")
        parameters[at : at + 1] = options
        parameters.append(
            inspect.Parameter(CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        )

        @functools.wraps(command)
        def run(**values: Any) -> None:
            context = values.pop(CONTEXT)
            given = {n for n in names if getattr(context.get_parameter_source(n), "name", None) in GIVEN}
            chosen = with_recipe({name: values.pop(name) for name in names}, given)
            command(**values, train_options=chosen)

        run.__signature__ = signature.replace(parameters=parameters)
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


def _option(name: str, default: Any, help_text: str | None) -> inspect.Parameter:
    kind, config_default = COMMAND_LINE_FORM.get(name, (FIELD_TYPES[name], FIELD_DEFAULTS[name]))
    option = typer.Option(config_default if default is None else default, help=help_text or HELP[name])
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=kind)


def with_recipe(values: Mapping[str, Any], given: Collection[str]) -> dict[str, Any]:
    """The option values with ``--recipe`` applied: a field the recipe sets takes the recipe's value
    unless it is in ``given`` (on the command line, or in its environment variable)."""
    preset = RECIPES.get(values.get("recipe", "bmseg"), {})
    return {
        name: preset[name] if name in preset and name not in given else value
        for name, value in values.items()
    }


def train_config(values: Mapping[str, Any]) -> TrainConfig:
    """The chosen option values as a TrainConfig (``--modalities`` parsed; fields not offered at the
    recipe's values, then the defaults)."""
    return TrainConfig.from_dict({**values, "modalities": parse_modalities(values.get("modalities"))})
