"""Sweep parameters (bmcore.jobs.parent_params, bmcore.jobs.parents.parsing): search spaces expanded
deterministically, and the configuration hash that finds reusable children."""

from __future__ import annotations

from bmcore.jobs.parent_params import config_hash, sweep_children, sweep_configs
from bmcore.jobs.parents.parsing import parse_assignments, parse_grid, parse_random


def test_grid_and_random_searches_expand_deterministically():
    grid = {
        "data": "/d",
        "grid": parse_grid("lr=1e-3,3e-4;arch=unet,cnn"),
        "base": parse_assignments("epochs=2"),
    }
    assert sweep_configs(grid) == [
        {"lr": 1e-3, "arch": "unet"},
        {"lr": 1e-3, "arch": "cnn"},
        {"lr": 3e-4, "arch": "unet"},
        {"lr": 3e-4, "arch": "cnn"},
    ]
    assert sweep_configs(grid | {"budget": 3}) == sweep_configs(grid)[:3]
    children = sweep_children(grid)
    assert all(child["epochs"] == 2 and child["split_seed"] == 0 for _values, child in children)
    assert len({child["config_hash"] for _values, child in children}) == 4

    space = {"data": "/d", "random": parse_random("lr=1e-4:1e-2;dropout=0:0.5;arch=unet,cnn"), "budget": 6}
    first, again = sweep_configs(space | {"seed": 3}), sweep_configs(space | {"seed": 3})
    assert first == again and first != sweep_configs(space | {"seed": 4}) and len(first) == 6
    for values in first:
        assert (
            1e-4 <= values["lr"] <= 1e-2
            and 0 <= values["dropout"] <= 0.5
            and values["arch"] in ("unet", "cnn")
        )
    # A plain list: a float field's two numbers are a range (log-uniform for lr), anything else choices.
    listed = sweep_configs({"data": "/d", "random": {"lr": [1e-4, 1e-2], "loss": ["ce"]}, "budget": 4})
    assert len({v["lr"] for v in listed}) == 4 and {v["loss"] for v in listed} == {"ce"}


def test_config_hash_ignores_bookkeeping_and_spelled_out_defaults():
    child = {"data": "/d", "split_seed": 0, "arch": "unet", "lr": 1e-3}
    same = {
        **child,
        "epochs": 50,
        "num_workers": 0,
        "lr": 0.001,
        "mlflow_parent_run_id": "abc",
        "config_hash": "x",
    }
    assert config_hash(child) == config_hash(same)
    for changed in (
        {"lr": 3e-4},
        {"split_seed": 1},
        {"data": "/e"},
        {"evaluate_test": True},
        {"num_workers": 2},
    ):
        assert config_hash(child | changed) != config_hash(child), changed
