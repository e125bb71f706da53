"""bmcore.tracking against a real local MLflow store (SQLite + files) under a temporary data dir, with the
bmseg database beside it (where every alias move is recorded).

Creating a fresh MLflow SQLite store runs its migrations (seconds), so one store serves the module;
tests that need a registry state build it in module-scoped fixtures.
"""

from __future__ import annotations

import json
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
from bmcore.db import AliasMove, Job, dispose_engines, init_db, session_scope
from bmcore.models import build_model, load_checkpoint, save_checkpoint
from bmcore.tracking.alias_moves import alias_history, os_user
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
        patch.delenv("BMSEG_DATABASE_URL", raising=False)
        get_settings.cache_clear()
        try:
            tracking.configure()
            init_db()  # the bmseg database: alias moves are recorded there
            yield get_settings()
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
            get_settings.cache_clear()
            dispose_engines()
    get_settings.cache_clear()


def _moves(model_name: str) -> list[dict]:
    """The recorded moves of ``model_name``'s aliases, oldest first, without their times."""
    with session_scope() as session:
        history = alias_history(session, model_name)
    return [{k: v for k, v in move.items() if k != "at"} for move in reversed(history)]


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
    # each move of champion is recorded: who (the command's OS user), from which version, why
    by = f"cli:{os_user()}"
    assert _moves("bmseg-unet") == [
        {
            "model": "bmseg-unet",
            "alias": "champion",
            "from_version": None,
            "to_version": 1,
            "moved_by": by,
            "reason": "val_lesion_dice 0.5; no champion yet",
            "job_id": None,
        },
        {
            "model": "bmseg-unet",
            "alias": "champion",
            "from_version": 1,
            "to_version": 3,
            "moved_by": by,
            "reason": "val_lesion_dice 0.7 > 0.5 of v1",
            "job_id": None,
        },
    ]


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
    assert _moves("bmseg-fcn") == []


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


def test_a_checkpoint_files_warnings_come_from_the_provenance_its_run_wrote(tmp_path):
    from bmcore.tracking.registry import SYNTHETIC_WARNING, model_warnings, write_provenance

    run = tmp_path / "run"
    run.mkdir()
    checkpoint = run / "best.pt"
    checkpoint.write_bytes(b"")
    assert model_warnings(checkpoint) == []  # nothing known
    write_provenance(run, {"data": "/data/cohort", "synthetic": True})
    assert model_warnings(checkpoint) == [SYNTHETIC_WARNING]
    write_provenance(run, {"data": "/data/brats", "synthetic": False})
    assert model_warnings(str(checkpoint)) == []
    (run / "provenance.json").write_text("{not json")
    assert model_warnings(checkpoint) == []


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


# ------------------------------------------------------------------------------------------ alias moves


def _cnn_version(store, experiment, seed: int, dice: float, **register) -> dict:
    torch.manual_seed(seed)
    path = store.data_dir / f"cnn-{seed}" / "best.pt"
    save_checkpoint(path, build_model("cnn", base_channels=4).eval(), "cnn", {"epoch": 1})
    run_id = tracking.start_run(experiment, f"train-cnn-{seed}", {"arch": "cnn"})
    registered = tracking.register_model(
        run_id, "cnn", log_model(run_id, path, "cnn"), {"val_lesion_dice": dice}, **register
    )
    tracking.end_run(run_id)
    return registered


def _champion(name: str) -> int | None:
    return {entry["name"]: entry for entry in tracking.registry_overview()}[name]["champion"]


def test_every_move_of_champion_is_recorded_and_only_eligible_runs_move_it(store, experiment):
    """A run on a data set not registered as promotable (champion_eligible False) keeps the alias where it
    is and records nothing, however well it scores; an eligible one moves it and records why."""
    with session_scope() as session:
        job = Job(type="train", params={"data": "/d"}, status="running")
        session.add(job)
        session.flush()
        job_id = job.id
    assert _cnn_version(store, experiment, 1, 0.4)["champion"] is True
    assert _cnn_version(store, experiment, 2, 0.9, champion_eligible=False) == {
        "name": "bmseg-cnn",
        "version": 2,
        "champion": False,
    }
    assert _champion("bmseg-cnn") == 1 and len(_moves("bmseg-cnn")) == 1
    assert _cnn_version(store, experiment, 3, 0.5, job_id=job_id)["champion"] is True
    assert _champion("bmseg-cnn") == 3
    moved = _moves("bmseg-cnn")[-1]
    assert moved["moved_by"] == f"job {job_id}" and moved["job_id"] == job_id
    assert (moved["from_version"], moved["to_version"], moved["reason"]) == (
        1,
        3,
        "val_lesion_dice 0.5 > 0.4 of v1",
    )


def test_set_champion_records_who_and_why(store, experiment):
    assert _champion("bmseg-cnn") == 3  # after the test above
    assert tracking.set_champion("bmseg-cnn", 2, moved_by="root@example.org", reason="reviewed") is True
    assert _champion("bmseg-cnn") == 2
    assert _moves("bmseg-cnn")[-1] | {"job_id": None} == {
        "model": "bmseg-cnn",
        "alias": "champion",
        "from_version": 3,
        "to_version": 2,
        "moved_by": "root@example.org",
        "reason": "reviewed",
        "job_id": None,
    }
    count = len(_moves("bmseg-cnn"))
    assert tracking.set_champion("bmseg-cnn", 2, moved_by="root@example.org") is False  # no move
    for name, version in (("bmseg-cnn", 99), ("bmseg-nope", 1)):
        with pytest.raises(LookupError, match=f"no model version {name}/{version}"):
            tracking.set_champion(name, version)
    assert len(_moves("bmseg-cnn")) == count and _champion("bmseg-cnn") == 2


def test_a_move_mlflow_refuses_records_nothing(store, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise ConnectionError("tracking server went away")

    before = len(_moves("bmseg-cnn"))
    client = tracking.mlflow_client()
    monkeypatch.setattr(type(client), "set_registered_model_alias", refuse)
    with pytest.raises(ConnectionError):
        tracking.set_champion("bmseg-cnn", 1, moved_by="root@example.org", reason="x")
    with session_scope() as session:
        assert session.query(AliasMove).filter_by(model_name="bmseg-cnn").count() == before


def test_promote_and_models_commands(store):
    from typer.testing import CliRunner

    from bmcore.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["promote", "bmseg-cnn", "1", "--reason", "back to the first"])
    assert done.exit_code == 0, done.output
    assert f"bmseg-cnn@champion is now version 1 (moved by cli:{os_user()})" in done.output
    assert "nothing moved" in runner.invoke(app, ["promote", "bmseg-cnn", "1", "--reason", "again"]).output
    refused = runner.invoke(app, ["promote", "bmseg-cnn", "1", "--reason", " "])
    assert refused.exit_code != 0 and "--reason must say why" in str(refused.exception)
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0, listed.output
    cnn = {entry["name"]: entry for entry in json.loads(listed.output)}["bmseg-cnn"]
    assert cnn["champion"] == 1
    assert [(m["from_version"], m["to_version"]) for m in cnn["history"]] == [
        (2, 1),
        (3, 2),
        (1, 3),
        (None, 1),
    ]
    assert cnn["history"][0]["reason"] == "back to the first"


# ------------------------------------------------------------ promotion rules and training provenance


def _fcn_version(store, experiment, seed: int, metrics: dict, provenance: dict | None = None) -> dict:
    torch.manual_seed(seed)
    path = store.data_dir / f"fcn-{seed}" / "best.pt"
    save_checkpoint(path, build_model("fcn", base_channels=4).eval(), "fcn", {"epoch": 1})
    run_id = tracking.start_run(experiment, f"train-fcn-{seed}", {"arch": "fcn"})
    model_uri = log_model(run_id, path, "fcn")
    registered = tracking.register_model(run_id, "fcn", model_uri, metrics, provenance=provenance)
    tracking.end_run(run_id)
    return registered


def _tags(name: str, version: int) -> dict:
    entry = {e["name"]: e for e in tracking.registry_overview()}[name]
    return next(v for v in entry["versions"] if v["version"] == version)["tags"]


def test_a_validation_set_too_small_never_takes_champion(store, experiment, tmp_path):
    """3 validation lesions (< min_val_lesions 5): registered, flagged, never champion, however good;
    5 lesions: takes champion; a version with no validation lesions never does either."""
    from bmcore.tracking.registry import (
        SYNTHETIC_WARNING,
        model_warnings,
        training_provenance,
        version_warnings,
    )

    assert get_settings().min_val_lesions == 5
    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    (synthetic / "cohort.json").write_text("{}")
    small = {"val_lesion_dice": 0.99, "val_lesions": 3, "val_patients": 2}
    first = _fcn_version(store, experiment, 11, small, training_provenance(synthetic))
    assert first["champion"] is False and _champion("bmseg-fcn") is None
    tags = _tags("bmseg-fcn", first["version"])
    assert tags["too_small_to_promote"] == "true" and "champion_eligible" not in tags
    assert (tags["val_lesions"], tags["val_patients"]) == ("3", "2")
    assert (tags["training_data"], tags["training_data_synthetic"]) == (str(synthetic), "true")
    warnings = version_warnings(tags)
    assert warnings[0] == SYNTHETIC_WARNING == "trained on synthetic data: not for clinical use"
    assert "too small to promote on (3 lesions" in warnings[1]
    assert model_warnings(f"models:/bmseg-fcn/{first['version']}") == warnings  # what segmenting shows

    none = _fcn_version(store, experiment, 12, {"val_lesion_dice": 0.9, "val_lesions": 0})
    assert none["champion"] is False and _champion("bmseg-fcn") is None

    real = training_provenance(tmp_path / "real", dataset="brats-mets")
    enough = _fcn_version(store, experiment, 13, {"val_lesion_dice": 0.5, "val_lesions": 5}, real)
    assert enough["champion"] is True and _champion("bmseg-fcn") == enough["version"]
    tags = _tags("bmseg-fcn", enough["version"])
    assert (tags["training_data"], tags["training_data_synthetic"]) == ("brats-mets", "false")
    assert "too_small_to_promote" not in tags and version_warnings(tags) == []
    assert model_warnings("models:/bmseg-fcn@champion") == []
    assert _moves("bmseg-fcn")[-1]["reason"] == "val_lesion_dice 0.5; no champion yet"

    worse = _fcn_version(store, experiment, 14, {"val_lesion_dice": 0.4, "val_lesions": 8})
    better = _fcn_version(store, experiment, 15, {"val_lesion_dice": 0.6, "val_lesions": 8})
    assert (worse["champion"], better["champion"]) == (False, True)


def test_brats2025_figure_decides_when_both_versions_have_it(store, experiment):
    """``val_lesion_dice_tc_brats2025`` is preferred over ``val_lesion_dice`` once the champion has it."""
    from bmcore.tracking.registry import champion_metric

    assert champion_metric({"val_lesion_dice_tc_brats2025": "0.1"}, {}) == "val_lesion_dice_tc_brats2025"
    assert champion_metric({"val_lesion_dice_tc_brats2025": "0.1"}, {"val_lesion_dice": "0.2"}) == (
        "val_lesion_dice"
    )
    # The champion (0.6 above) has no brats2025 figure: val_lesion_dice decides; then brats2025 does.
    first = _fcn_version(
        store, experiment, 16, {"val_lesions": 9, "val_lesion_dice": 0.9, "val_lesion_dice_tc_brats2025": 0.7}
    )
    assert first["champion"] is True
    second = _fcn_version(
        store, experiment, 17, {"val_lesions": 9, "val_lesion_dice": 0.1, "val_lesion_dice_tc_brats2025": 0.8}
    )
    assert second["champion"] is True
    assert _moves("bmseg-fcn")[-1]["reason"].startswith("val_lesion_dice_tc_brats2025 0.8 > 0.7")


def test_validation_counts_and_the_models_command_warnings(store):
    from typer.testing import CliRunner

    from bmcore.cli import app
    from bmcore.experiments.tracked import validation_counts

    assert validation_counts(None) == {"val_lesions": 0, "val_patients": 0}
    assert validation_counts({"summary": {"n_gt_TC": 6}, "cases": [{"patient_id": "p"}]}) == {
        "val_lesions": 6,
        "val_patients": 1,
    }
    validation = {
        "summary": {"n_gt_TC": 3, "brats2025_n_gt_TC": 4, "brats2025_lesion_dice_TC": 0.3},
        "cases": [{"patient_id": "p1"}, {"patient_id": "p1"}, {"patient_id": "p2"}],
    }
    assert validation_counts(validation) == {
        "val_lesions": 4,
        "val_patients": 2,
        "val_lesion_dice_tc_brats2025": 0.3,
    }
    listed = CliRunner().invoke(app, ["models"])
    assert listed.exit_code == 0, listed.output
    fcn = {entry["name"]: entry for entry in json.loads(listed.output)}["bmseg-fcn"]
    flagged = next(v for v in fcn["versions"] if v["tags"].get("training_data_synthetic") == "true")
    assert "trained on synthetic data: not for clinical use" in flagged["warnings"]
    assert any("too small to promote on" in w for w in flagged["warnings"])
