"""bmcore.tracking against a real local MLflow store (SQLite + files) under a temporary data dir.

Creating a fresh MLflow SQLite store runs its migrations (seconds), so one store serves the module;
tests that need a registry state build it in module-scoped fixtures.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bmcore import tracking
from bmcore.config import Settings, get_settings
from bmcore.models import build_model, load_checkpoint, save_checkpoint
from bmcore.tracking.logged_model import log_model

TINY_UNET = {"base_channels": 4, "depth": 2}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[Settings]:
    """A fresh data dir (so a fresh MLflow store) for this module; settings and MLflow URIs restored after."""
    import mlflow

    data_dir = tmp_path_factory.mktemp("mlflow-store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BMSEG_DATA_DIR", str(data_dir))
        for name in ("BMSEG_MLFLOW_TRACKING_URI", "BMSEG_MLFLOW_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI"):
            patch.delenv(name, raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        get_settings.cache_clear()
        try:
            tracking.configure()
            yield get_settings()
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
            get_settings.cache_clear()
    get_settings.cache_clear()


def _checkpoint(path: Path, seed: int, epoch: int = 3) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    model = build_model("unet", **TINY_UNET).eval()
    extra = {"epoch": epoch, "preprocess": {"size": 16}, "optimizer": {"state": {}, "moment": torch.ones(8)}}
    save_checkpoint(path, model, "unet", extra)
    return path, model


@pytest.fixture(scope="module")
def experiment(store) -> str:
    return tracking.get_or_create_experiment(tracking.experiment_name_for(store.data_dir / "data-main"))


@pytest.fixture(scope="module")
def unet_versions(store, experiment) -> list[dict]:
    """Three runs of bmseg-unet with val_lesion_dice 0.5, 0.3 (worse) and 0.7 (better), logged in order."""
    versions = []
    for seed, dice in ((1, 0.5), (2, 0.3), (3, 0.7)):
        path, model = _checkpoint(store.data_dir / f"train-{seed}" / "best.pt", seed)
        run_id = tracking.start_run(experiment, f"train-unet-{seed}", {"arch": "unet", "seed": seed})
        tracking.log_metrics(run_id, {"val_lesion_dice": dice}, step=3)
        model_uri = log_model(run_id, path, "unet")
        registered = tracking.register_model(
            run_id, "unet", model_uri, {"val_lesion_dice": dice, "best_epoch": 3, "val_dice_ET": None}
        )
        tracking.end_run(run_id)
        versions.append({"run_id": run_id, "model_uri": model_uri, "model": model, "registered": registered})
    return versions


def test_experiment_is_created_once_and_reused(store, experiment):
    name = tracking.experiment_name_for(store.data_dir / "data-main")
    assert name == "bmseg/data-main"
    assert tracking.get_or_create_experiment(name) == experiment
    location = tracking.mlflow_client().get_experiment(experiment).artifact_location
    assert Path(location.removeprefix("file://")) == Path(store.mlflow_artifact_root) / "bmseg" / "data-main"


def test_racing_threads_get_the_same_experiment(store):
    name = "bmseg/raced"
    barrier, ids, errors = threading.Barrier(4), [], []

    def create() -> None:
        barrier.wait()
        try:
            ids.append(tracking.get_or_create_experiment(name))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(ids) == 4 and len(set(ids)) == 1


def test_losing_the_creation_race_fetches_the_winner(store, monkeypatch):
    from mlflow import MlflowClient

    winner = tracking.get_or_create_experiment("bmseg/lost-race")
    lookup, calls = MlflowClient.get_experiment_by_name, []

    def stale_first_lookup(self, name):  # as if another process created it just after our lookup
        calls.append(name)
        return None if len(calls) == 1 else lookup(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", stale_first_lookup)
    assert tracking.get_or_create_experiment("bmseg/lost-race") == winner
    assert len(calls) == 2


def test_run_logs_params_and_per_epoch_metrics(store, experiment):
    parent = tracking.start_run(experiment, "compare", {"data": "x"})
    run_id = tracking.start_run(
        experiment,
        "train-cnn",
        {"lr": 1e-3, "modalities": ("t1", "t1ce"), "long": "x" * 7000},
        tags={"job_id": 7},
        parent_run_id=parent,
    )
    for epoch in range(3):
        tracking.log_metrics(run_id, {"loss": 1 / (epoch + 1), "bad": math.nan, "missing": None}, step=epoch)
    tracking.log_dict(run_id, {"train": ["p1"]}, "split.json")
    tracking.end_run(run_id, "KILLED")
    tracking.end_run(parent)

    client = tracking.mlflow_client()
    history = client.get_metric_history(run_id, "loss")
    assert [(point.step, point.value) for point in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    run = client.get_run(run_id)
    assert set(run.data.metrics) == {"loss"}
    assert run.data.params["lr"] == "0.001"
    assert run.data.params["modalities"] == '["t1", "t1ce"]'
    assert len(run.data.params["long"]) == 6000
    assert run.data.tags["job_id"] == "7"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.info.run_name == "train-cnn" and run.info.status == "KILLED"
    assert [artifact.path for artifact in client.list_artifacts(run_id)] == ["split.json"]
    with pytest.raises(ValueError, match="unknown run status"):
        tracking.end_run(run_id, "DONE")


def test_versions_and_champion_alias(unet_versions):
    assert [version["registered"] for version in unet_versions] == [
        {"name": "bmseg-unet", "version": 1, "champion": True},
        {"name": "bmseg-unet", "version": 2, "champion": False},  # lower val_lesion_dice
        {"name": "bmseg-unet", "version": 3, "champion": True},  # higher
    ]
    overview = {entry["name"]: entry for entry in tracking.registry_overview()}
    assert list(overview) == ["bmseg-unet", "bmseg-cnn", "bmseg-fcn"]
    assert overview["bmseg-cnn"] == {"name": "bmseg-cnn", "champion": None, "versions": []}
    unet = overview["bmseg-unet"]
    assert unet["champion"] == 3
    assert [version["version"] for version in unet["versions"]] == [3, 2, 1]
    newest = unet["versions"][0]
    assert newest["aliases"] == ["champion"] and newest["run_id"] == unet_versions[2]["run_id"]
    assert newest["metrics"] == {"val_lesion_dice": 0.7, "best_epoch": 3}
    assert newest["tags"]["arch"] == "unet" and "val_dice_ET" not in newest["tags"]
    assert unet["versions"][1]["aliases"] == []


def test_a_cross_validation_fold_never_takes_champion_on_its_own(store, experiment, unet_versions):
    """Even the first and best-scoring version: a fold model is scored on its own fold only."""
    torch.manual_seed(0)
    path = store.data_dir / "fold-0" / "best.pt"
    save_checkpoint(path, build_model("fcn", base_channels=4).eval(), "fcn", {"epoch": 1})
    run_id = tracking.start_run(experiment, "crossval-fold-0", {"arch": "fcn"})
    model_uri = log_model(run_id, path, "fcn")
    registered = tracking.register_model(
        run_id, "fcn", model_uri, {"val_lesion_dice": 0.99}, champion_eligible=False
    )
    tracking.end_run(run_id)
    assert registered == {"name": "bmseg-fcn", "version": 1, "champion": False}
    fcn = {entry["name"]: entry for entry in tracking.registry_overview()}["bmseg-fcn"]
    assert fcn["champion"] is None
    assert fcn["versions"][0]["tags"]["champion_eligible"] == "false"
    with pytest.raises(LookupError):
        tracking.resolve_model("models:/bmseg-fcn@champion")


def test_model_is_logged_to_the_run_without_an_active_run(unet_versions, experiment):
    import mlflow

    assert mlflow.active_run() is None
    first = unet_versions[0]
    logged = tracking.mlflow_client().get_logged_model(first["model_uri"].removeprefix("models:/"))
    assert logged.experiment_id == experiment
    assert logged.source_run_id == first["run_id"]
    assert logged.name == "model"
    assert {metric.key: metric.value for metric in logged.metrics} == {"val_lesion_dice": 0.5}  # epoch 3


def test_logged_pytorch_model_runs_at_any_batch_size(unet_versions):
    import mlflow.pytorch

    version = unet_versions[0]
    loaded = mlflow.pytorch.load_model(version["model_uri"])
    for batch in (1, 3):
        slices = torch.randn(batch, 4, 16, 16)
        with torch.no_grad():
            assert torch.allclose(loaded(slices), version["model"](slices), atol=1e-6)


def test_resolve_champion_gives_a_loadable_checkpoint(store, unet_versions):
    path = tracking.resolve_model("models:/bmseg-unet@champion")
    assert path == store.data_dir / "models" / "bmseg-unet" / "3" / tracking.CHECKPOINT_FILE
    model, checkpoint = load_checkpoint(path)
    assert checkpoint["arch"] == "unet" and checkpoint["extra"]["preprocess"] == {"size": 16}
    assert "optimizer" not in checkpoint["extra"]  # training-only state stays out of the registry
    slices = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(slices), unet_versions[2]["model"](slices), atol=1e-6)

    modified = path.stat().st_mtime_ns
    assert tracking.resolve_model("models:/bmseg-unet@champion") == path  # cached, not fetched again
    assert path.stat().st_mtime_ns == modified
    assert tracking.resolve_model("models:/bmseg-unet/2").parent.name == "2"
    assert tracking.resolve_model("models:/bmseg-unet/latest") == path


@pytest.mark.parametrize(
    "ref",
    [
        "models:/bmseg-unet@nobody",
        "models:/bmseg-unet/99",
        "models:/bmseg-fcn@champion",
        "models:/bmseg-unet/abc",
        "models:/bmseg-unet",
    ],
)
def test_unknown_registry_reference_is_a_lookup_error(unet_versions, ref):
    with pytest.raises(LookupError) as raised:
        tracking.resolve_model(ref)
    assert ref in str(raised.value) and "\n" not in str(raised.value)


def test_checkpoint_path_is_returned_as_is_or_refused(tmp_path):
    path, _ = _checkpoint(tmp_path / "best.pt", seed=0)
    assert tracking.resolve_model(str(path)) == path
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        tracking.resolve_model(tmp_path / "missing.pt")


def test_log_model_refuses_a_checkpoint_of_another_arch(store, experiment, tmp_path):
    path, _ = _checkpoint(tmp_path / "best.pt", seed=0)
    run_id = tracking.start_run(experiment, "wrong-arch", {})
    with pytest.raises(ValueError, match="not 'cnn'"):
        log_model(run_id, path, "cnn")
    tracking.end_run(run_id, "FAILED")


def test_registry_overview_does_not_create_a_missing_store(tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BMSEG_DATA_DIR", str(tmp_path))
        patch.delenv("BMSEG_MLFLOW_TRACKING_URI", raising=False)
        get_settings.cache_clear()
        try:
            overview = tracking.registry_overview()
        finally:
            get_settings.cache_clear()
    assert [entry["name"] for entry in overview] == ["bmseg-unet", "bmseg-cnn", "bmseg-fcn"]
    assert all(entry["versions"] == [] and entry["champion"] is None for entry in overview)
    assert not (tmp_path / "mlflow.db").exists()


def test_helpers():
    assert tracking.experiment_name_for("/data/ucsf-bmsr/") == "bmseg/ucsf-bmsr"
    assert tracking.registered_model_name("fcn") == "bmseg-fcn"
    with pytest.raises(ValueError):
        tracking.registered_model_name("vit")
    url = tracking.mlflow_ui_run_url("http://127.0.0.1:5000/", "4", "abc")
    assert url == "http://127.0.0.1:5000/#/experiments/4/runs/abc"


def test_import_leaves_torch_and_mlflow_unloaded():
    code = "import sys, bmcore.tracking; print(sorted({'torch', 'mlflow'} & set(sys.modules)))"
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.strip() == "[]"
