"""Job parameter validation (bmcore.jobs.params, bmcore.jobs.train_params): every field typed and bounded by
one table (limits from the settings), unknown params refused by name, internal params only from the server.

Pure validation, no database: the API's answers to the same values are in tests/web/test_web_job_limits.py.
"""

from __future__ import annotations

from dataclasses import fields

import pytest

from bmcore.config import get_settings
from bmcore.jobs.errors import JobParamsError
from bmcore.jobs.params import INTERNAL_PARAMS, JOB_PARAMS, validate_job
from bmcore.jobs.parent_params import sweep_children
from bmcore.jobs.train_params import TRAIN_RULES, split_internal
from bmcore.training.config import TrainConfig

DATA = "/data/cohort"

# Issue #16, item 7: each of these was accepted (202) before; each must be refused naming its field.
UNBOUNDED = {
    "epochs 1e9": ({"epochs": 1e9}, "epochs must be a positive integer"),
    "epochs 10**9": ({"epochs": 10**9}, "epochs must be from 1 to 1000 (BMSEG_MAX_EPOCHS)"),
    "batch_size 1e9": ({"batch_size": 1e9}, "batch_size must be a positive integer"),
    "batch_size 10**9": ({"batch_size": 10**9}, "batch_size must be from 1 to 256 (BMSEG_MAX_BATCH_SIZE)"),
    "size 1e6": ({"size": 1e6}, "size must be a whole number"),
    "size 10**6": ({"size": 32 * 31250}, "size must be from 32 to 512 (BMSEG_MAX_IMAGE_SIZE)"),
    "base_channels 1e6": ({"base_channels": 1e6}, "base_channels must be a positive integer"),
    "base_channels 10**6": ({"base_channels": 10**6}, "base_channels must be from 1 to 128"),
    "depth 1000": ({"depth": 1000}, "depth must be from 1 to 6 (BMSEG_MAX_DEPTH)"),
    "num_workers 10000": ({"num_workers": 10000}, "num_workers must be from 0 to 16 (BMSEG_MAX_NUM_WORKERS)"),
    "samples_per_epoch 1e12": ({"samples_per_epoch": 1e12}, "samples_per_epoch must be a whole number"),
    "samples_per_epoch 10**12": (
        {"samples_per_epoch": 10**12},
        "samples_per_epoch must be from 0 to 1000000",
    ),
    "samples_per_epoch -5": ({"samples_per_epoch": -5}, "samples_per_epoch must be from 0 to 1000000"),
    "early_stopping_patience -1": ({"early_stopping_patience": -1}, "early_stopping_patience must be from 1"),
    "device cuda:99": ({"device": "cuda:99"}, "device must be auto, cpu, cuda or cuda:N with N from 0 to 15"),
    "device meta": ({"device": "meta"}, "device must be auto, cpu, cuda or cuda:N"),
    "2.0 for an integer": ({"depth": 2.0}, "depth must be a positive integer, got 2.0"),
    "a bool for a number": ({"lr": True}, "lr must be a number, got True"),
    "a bool for an integer": ({"seed": False}, "seed must be a whole number, got False"),
    "lr infinite": ({"lr": float("inf")}, "lr must be a number"),
    "plateau_factor 1": ({"plateau_factor": 1}, "plateau_factor must be from 0.01 to 0.99"),
    "duplicate modalities": ({"modalities": ["t1", "t1"]}, "modalities must be a list of distinct names"),
    "split_seed negative": ({"split_seed": -1}, "split_seed must be from 0 to 4294967295"),
    "evaluate_test not a bool": ({"evaluate_test": 1}, "evaluate_test must be true or false"),
}


def test_the_table_covers_every_training_field():
    assert set(TRAIN_RULES) == {f.name for f in fields(TrainConfig)}


@pytest.mark.parametrize("case", list(UNBOUNDED), ids=list(UNBOUNDED))
def test_out_of_bounds_and_mistyped_training_values_are_refused_by_name(case):
    params, message = UNBOUNDED[case]
    with pytest.raises(JobParamsError) as caught:
        validate_job("train", {"data": DATA, **params})
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "params",
    [
        {"device": "cpu"},
        {"device": "cuda"},
        {"device": "cuda:0"},
        {"device": "cuda:15"},
        {"device": "auto"},
        {"samples_per_epoch": 0},  # one pass over the training slices
        {"epochs": 1000, "batch_size": 256, "size": 512, "base_channels": 128, "depth": 6, "num_workers": 16},
        {"samples_per_epoch": 1_000_000, "early_stopping_patience": 1, "plateau_patience": 0},
        {"lr": 1, "dropout": 0, "lesion_fraction": 1, "seed": 2**32 - 1, "modalities": ["flair", "t1"]},
    ],
)
def test_values_within_the_bounds_pass_unchanged(params):
    assert validate_job("train", {"data": DATA, **params}) == {"data": DATA, **params}


def test_the_limits_are_the_settings(monkeypatch):
    monkeypatch.setenv("BMSEG_MAX_EPOCHS", "5")
    monkeypatch.setenv("BMSEG_MAX_DEPTH", "3")
    get_settings.cache_clear()
    try:
        assert validate_job("train", {"data": DATA, "epochs": 5, "depth": 3})["epochs"] == 5
        with pytest.raises(JobParamsError, match=r"epochs must be from 1 to 5 \(BMSEG_MAX_EPOCHS\), got 6"):
            validate_job("train", {"data": DATA, "epochs": 6})
        with pytest.raises(JobParamsError, match="depth must be from 1 to 3"):
            validate_job("train", {"data": DATA, "depth": 4})
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("job_type", "params", "message"),
    [
        (
            "sweep",
            {"data": DATA, "grid": {"depth": [2, 1000]}},
            "sweep child 2 (depth=1000): depth must be from 1 to 6",
        ),
        (
            "sweep",
            {"data": DATA, "grid": {"device": ["cpu", "meta"]}},
            "sweep child 2 (device=meta): device must be",
        ),
        (
            "sweep",
            {"data": DATA, "grid": {"lr": [1e-3]}, "base": {"epochs": 10**9}},
            "sweep child 1 (lr=0.001): epochs must be from 1 to 1000",
        ),
        (
            "sweep",
            {"data": DATA, "random": {"epochs": {"uniform": [1, 5]}}, "budget": 2},
            "epochs must be a positive integer, got",
        ),
        ("sweep", {"data": DATA, "grid": {"lr": [1e-3]}, "seed": -1}, "seed must be an integer from 0"),
        (
            "crossval",
            {"data": DATA, "folds": 3, "base": {"num_workers": 10000}},
            "crossval base: num_workers",
        ),
        ("crossval", {"data": DATA, "folds": 3, "base": {"batch_size": 8.0}}, "crossval base: batch_size"),
    ],
)
def test_every_child_of_a_sweep_or_crossval_obeys_the_same_table(job_type, params, message):
    with pytest.raises(JobParamsError) as caught:
        validate_job(job_type, params)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("job_type", "params", "message"),
    [
        (
            "segment",
            {"study_dir": DATA, "epochs": 3},
            "unknown segment parameter(s): epochs; expected study_dir",
        ),
        ("segment", {"study_dir": DATA, "b": 1, "a": 2}, "unknown segment parameter(s): a, b"),
        (
            "evaluate",
            {"data": DATA, "batch_size": 8},
            "unknown evaluate parameter(s): batch_size; expected data",
        ),
        ("evaluate", {"data": DATA, "tta": "yes"}, "params.tta must be true or false"),
        ("segment", {"study_dir": "x" * 5000}, "params.study_dir must be a non-empty string of at most 4096"),
        ("train", {"data": DATA, "optimizer": "sgd"}, "unknown training parameter(s): optimizer"),
    ],
)
def test_unknown_params_are_refused_by_name(job_type, params, message):
    with pytest.raises(JobParamsError) as caught:
        validate_job(job_type, params)
    assert message in str(caught.value)


def test_segment_and_evaluate_take_what_their_runners_read():
    assert JOB_PARAMS == {
        "segment": ("study_dir", "model", "tta", "dicom"),
        "evaluate": ("data", "study_dir", "split", "model", "tta"),
    }
    every = {"study_dir": DATA, "model": "models:/bmseg-unet@champion", "tta": True}
    assert validate_job("segment", every) == every
    assert validate_job("evaluate", every | {"data": DATA, "split": "/s.json"})["split"] == "/s.json"


@pytest.mark.parametrize("name", INTERNAL_PARAMS)
@pytest.mark.parametrize("job_type", ["train", "segment", "evaluate"])
def test_internal_params_from_a_client_are_refused(job_type, name):
    params = {"data": DATA, "study_dir": DATA} if job_type != "train" else {"data": DATA}
    if job_type == "segment":
        params.pop("data")
    with pytest.raises(JobParamsError) as caught:
        validate_job(job_type, params | {name: "x"})
    assert str(caught.value) == f"params.{name} is set by the server; do not send it"


def test_internal_params_in_a_sweep_or_crossval_base_are_refused():
    sweep = {"data": DATA, "grid": {"lr": [1e-3]}, "base": {"champion_eligible": True}}
    with pytest.raises(JobParamsError, match=r"params.base.champion_eligible is set by the server"):
        validate_job("sweep", sweep)
    with pytest.raises(JobParamsError, match=r"params.config_hash, params.dataset are set by the server"):
        validate_job("crossval", {"data": DATA, "folds": 3, "config_hash": "ab", "dataset": "d"})
    with pytest.raises(JobParamsError, match="cannot sweep unknown parameter"):
        validate_job("sweep", {"data": DATA, "grid": {"config_hash": ["ab", "cd"]}})


def test_server_code_gives_internal_params_apart_checked_for_type():
    internal = {"config_hash": "0123abcd", "mlflow_parent_run_id": "run-1", "champion_eligible": False}
    stored = validate_job("train", {"data": DATA}, internal=internal | {"dataset": "cohort"})
    assert stored == {"data": DATA, **internal, "dataset": "cohort"}
    assert split_internal(stored) == ({"data": DATA}, internal | {"dataset": "cohort"})
    assert validate_job("sweep", {"data": DATA, "grid": {"lr": [1e-3]}}, internal={"champion_eligible": True})
    for job_type, bad, message in [
        ("train", {"champion_eligible": "yes"}, "internal parameter champion_eligible must not be 'yes'"),
        ("train", {"config_hash": "not hex"}, "internal parameter config_hash"),
        ("train", {"dataset": ""}, "internal parameter dataset"),
        ("segment", {"config_hash": "ab"}, "do not apply to a segment job"),
        ("sweep", {"mlflow_parent_run_id": "r"}, "do not apply to a sweep job"),
        ("train", {"priority": 1}, "internal parameter(s) priority do not apply"),
    ]:
        params = {"study_dir": DATA} if job_type == "segment" else {"data": DATA}
        if job_type == "sweep":
            params["grid"] = {"lr": [1e-3]}
        with pytest.raises(JobParamsError) as caught:
            validate_job(job_type, params, internal=bad)
        assert message in str(caught.value)


def test_planned_children_carry_their_hash_as_an_internal_param():
    (_values, child), *_ = sweep_children({"data": DATA, "grid": {"lr": [1e-3, 3e-4]}})
    client, internal = split_internal(child)
    assert set(internal) == {"config_hash"} and "config_hash" not in client
    assert validate_job("train", client, internal=internal) == child
