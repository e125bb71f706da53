"""The recipe options as settings: bmseg's defaults, the study's recipe by name, checks, weighted losses,
job params, the command line.

Training with them end to end, and inference honouring them, is in ``test_recipe_train.py``.
"""

from __future__ import annotations

import math
import re

import click
import pytest
import torch
import typer
from typer.testing import CliRunner

from bmcore.cli import app
from bmcore.cli.options import TRAIN_OPTIONS, train_config, with_train_options
from bmcore.jobs.errors import JobParamsError
from bmcore.jobs.params import validate_job
from bmcore.training.config import TrainConfig, parse_class_weights
from bmcore.training.losses import build_loss, cross_entropy_loss, dice_ce_loss, resolve_class_weights

RECIPE = {
    "class_weights": "inverse_frequency",
    "crop": 96,
    "context_slices": 2,
    "min_component_voxels": 10,
    "tta": True,
}

# One sample, four classes, one row of four voxels (one of each class): logits (1, 4, 1, 4).
LOGITS = torch.tensor(
    [[2.0, 0.0, 0.5, 1.0], [0.0, 1.0, 0.0, -1.0], [1.0, 0.0, 2.0, 0.0], [-1.0, 3.0, 0.0, 0.5]]
).reshape(1, 4, 1, 4)
TARGET = torch.tensor([[[0, 1, 2, 3]]])
WEIGHTS = (1.0, 10.0, 2.0, 5.0)


def test_the_defaults_are_bmsegs_recipe_and_the_study_recipe_is_one_name_away():
    config = TrainConfig()
    assert config.recipe == "bmseg"
    assert (config.loss, config.class_weights, config.crop, config.context_slices) == (
        "dice_ce",
        "none",
        64,
        0,
    )
    assert (config.min_component_voxels, config.tta, config.lesion_balance) == (0, False, False)
    assert config.preprocess_settings()["native"] and config.model_args()["in_channels"] == 4
    study = TrainConfig.from_dict({"recipe": "study"})
    assert (study.loss, study.class_weights, study.crop, study.context_slices) == ("ce", "none", 0, 0)
    assert (study.min_component_voxels, study.tta, study.size) == (0, False, 256)
    assert study.preprocess_settings() == {
        "size": 256,
        "modalities": ["t1", "t1ce", "t2", "flair"],
        "context_slices": 0,
        "native": False,
    }
    assert study.postprocess_settings() == {"min_component_voxels": 0, "tta": False}
    assert study.model_args()["in_channels"] == 4 and study.cache_size == 256
    # a field given beside the recipe wins; a stored config reads back as it was
    assert TrainConfig.from_dict({"recipe": "study", "size": 128, "tta": True}).size == 128
    assert TrainConfig.from_dict(study.to_dict()) == study
    stored_before_names = {k: v for k, v in study.to_dict().items() if k not in ("recipe", "val_slices")}
    assert TrainConfig.from_dict(stored_before_names).recipe == "study"  # labelled by what it holds
    partial = TrainConfig.from_dict({"loss": "ce", "crop": 0})  # a job's params: bmseg fills the rest
    assert (partial.recipe, partial.context_slices, partial.tta) == ("bmseg", 0, False)
    with pytest.raises(ValueError, match="unknown recipe 'nnunet'; choose from bmseg, study"):
        TrainConfig.from_dict({"recipe": "nnunet"})


def test_the_options_shape_the_model_and_the_cache():
    config = TrainConfig(**RECIPE)
    assert config.model_args()["in_channels"] == 4 * 5 and config.cache_size == 0  # native grid
    assert config.preprocess_settings()["native"] and config.postprocess_settings()["tta"]
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig(arch="fcn", crop=64).input_multiple == 32 and TrainConfig(depth=3).input_multiple == 8
    assert TrainConfig(modalities=("t1ce", "flair"), context_slices=1).in_channels == 6


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"crop": 40}, "crop must be 0 (whole resized slices) or a multiple of 16"),
        ({"arch": "fcn", "crop": 48}, "crop must be 0 (whole resized slices) or a multiple of 32"),
        ({"context_slices": 5}, "context_slices must be from 0 to 4, got 5"),
        ({"min_component_voxels": -1}, "min_component_voxels must be 0"),
        ({"class_weights": "1,2"}, "class_weights must be none, inverse_frequency or 4 comma-separated"),
        ({"class_weights": "0,0,0,0"}, "class_weights must be"),
        ({"class_weights": "heavy"}, "class_weights must be"),
        ({"val_slices": -1}, "val_slices must be 0 (all) or more, got -1"),
    ],
)
def test_the_config_refuses_options_that_make_no_sense(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**values)


def test_class_weights_read_as_data():
    assert parse_class_weights("none") is None
    assert parse_class_weights("inverse_frequency") == "inverse_frequency"
    assert parse_class_weights("1, 10, 2,5") == WEIGHTS
    assert resolve_class_weights(None) is None
    assert resolve_class_weights(WEIGHTS) == list(WEIGHTS)
    weights = resolve_class_weights("inverse_frequency", [9000, 0, 900, 100])
    assert weights[1] == 0.0 and math.isclose(sum(weights) / 3, 1.0)  # mean 1 over the present classes
    assert weights[3] / weights[2] == pytest.approx(9.0) and weights[2] / weights[0] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="class voxel counts"):
        resolve_class_weights("inverse_frequency")


def _weighted_nll(logits: torch.Tensor, target: torch.Tensor, weights) -> float:
    """Σ w[t] · (−log p_t) / Σ w[t], voxel by voxel."""
    log_p = torch.log_softmax(logits, dim=1)[0, :, 0]
    terms = [(weights[t], -float(log_p[t, i])) for i, t in enumerate(target[0, 0].tolist())]
    return sum(w * nll for w, nll in terms) / sum(w for w, _ in terms)


def test_class_weights_change_the_cross_entropy_on_a_known_batch():
    plain = build_loss("ce")(LOGITS, TARGET).item()
    weighted = build_loss("ce", WEIGHTS)(LOGITS, TARGET).item()
    assert plain == pytest.approx(_weighted_nll(LOGITS, TARGET, (1, 1, 1, 1)), rel=1e-6)
    assert weighted == pytest.approx(_weighted_nll(LOGITS, TARGET, WEIGHTS), rel=1e-6)
    assert abs(weighted - plain) > 0.1


def test_dice_ce_takes_the_weights_in_its_cross_entropy_only():
    weight = torch.tensor(WEIGHTS)
    dice_term = dice_ce_loss(LOGITS, TARGET).item() - cross_entropy_loss(LOGITS, TARGET).item()
    weighted = build_loss("dice_ce", WEIGHTS)(LOGITS, TARGET).item()
    assert weighted == pytest.approx(cross_entropy_loss(LOGITS, TARGET, weight=weight).item() + dice_term)
    assert weighted != pytest.approx(dice_ce_loss(LOGITS, TARGET).item())


def test_partial_samples_weigh_not_enhancing_as_background():
    target = torch.tensor([[[0, 3, 0, 3]]])
    partial = torch.tensor([True])
    log_p = torch.log_softmax(LOGITS, dim=1)[0, :, 0]
    not_enhancing = torch.logsumexp(log_p[:3], dim=0)
    nll = [-float(not_enhancing[0]), -float(log_p[3, 1]), -float(not_enhancing[2]), -float(log_p[3, 3])]
    w = [WEIGHTS[0], WEIGHTS[3], WEIGHTS[0], WEIGHTS[3]]
    expected = sum(a * b for a, b in zip(w, nll, strict=True)) / sum(w)
    loss = build_loss("ce", WEIGHTS)(LOGITS, target, partial)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_a_train_job_takes_the_options_and_refuses_out_of_bounds_values_by_name():
    params = {"data": "/data/cohort", "loss": "dice_ce", **RECIPE}
    assert validate_job("train", params) == params
    assert validate_job("train", {"data": "/d", "class_weights": "1,20,5,20"})["class_weights"] == "1,20,5,20"
    refused = {
        "crop": (1024, "crop must be from 0 to 512 (BMSEG_MAX_IMAGE_SIZE), got 1024"),
        "context_slices": (9, "context_slices must be from 0 to 4, got 9"),
        "min_component_voxels": (10**7, "min_component_voxels must be from 0 to 100000"),
        "class_weights": ("heavy", "class_weights must be none, inverse_frequency"),
        "tta": ("yes", "tta must be true or false"),
    }
    for name, (value, message) in refused.items():
        with pytest.raises(JobParamsError) as caught:
            validate_job("train", {"data": "/data/cohort", name: value})
        assert message in str(caught.value), name
    with pytest.raises(JobParamsError, match="crop must be 0 .* or a multiple of 16"):
        validate_job("train", {"data": "/data/cohort", "crop": 40})
    with pytest.raises(JobParamsError, match="unknown recipe 'paper'; choose from bmseg, study"):
        validate_job("train", {"data": "/data/cohort", "recipe": "paper"})


def test_the_command_line_takes_the_recipe_under_the_options_given():
    """``--recipe study`` sets the fields it names unless they are given beside it; the rest stay."""
    seen = []
    probe = typer.Typer()

    @probe.command()
    @with_train_options()
    def train(train_options: dict = TRAIN_OPTIONS) -> None:
        seen.append(train_config(train_options))

    def run(*args: str) -> TrainConfig:
        result = CliRunner().invoke(probe, list(args))
        assert result.exit_code == 0, result.output
        return seen[-1]

    assert run() == TrainConfig()
    study = run("--recipe", "study", "--epochs", "3")
    assert (study.recipe, study.loss, study.crop, study.context_slices, study.tta) == (
        "study",
        "ce",
        0,
        0,
        False,
    )
    assert study.size == 256 and study.epochs == 3
    mixed = run("--recipe", "study", "--loss", "dice_ce", "--tta")
    assert (mixed.loss, mixed.tta, mixed.crop) == ("dice_ce", True, 0)
    assert run("--crop", "128").crop == 128 and run("--crop", "128").loss == "dice_ce"


def test_train_and_compare_offer_the_options_at_the_config_defaults():
    root = typer.main.get_command(app)
    ctx = click.Context(root)
    defaults = TrainConfig()
    for command in ("train", "compare"):
        offered = {p.name: p for p in root.get_command(ctx, command).params}
        for name in RECIPE:
            assert offered[name].default == getattr(defaults, name), (command, name)
            assert offered[name].help
    shown = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).output
    for option in ("--class-weights", "--crop", "--context-slices", "--min-component-voxels", "--tta"):
        assert option in shown
