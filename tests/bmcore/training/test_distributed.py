"""Data-parallel training (DDP) on CPUs: two real processes over gloo, launched by torchrun.

The same code path runs NCCL on GPUs; CI has none, so these tests use ``--device cpu``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bmcore.data.synth import synth_cohort
from bmcore.training import distributed
from bmcore.training.config import TrainConfig
from bmcore.training.parts import rank_samples, rank_seed

REPO = Path(__file__).resolve().parents[3]
PROBE = Path(__file__).with_name("scripts") / "ddp_probe.py"
TINY = [
    "--epochs", "2", "--size", "64", "--base-channels", "4", "--depth", "2", "--batch-size", "4",
    "--samples-per-epoch", "32", "--num-workers", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp") / "cohort"
    synth_cohort(root, 5, 0, "brats", shape=(64, 64, 24), spacing=(3.5, 3.5, 6.0), workers=1)
    return root


def run(
    args: list[str], tmp_path: Path, timeout: int = 240, env: dict | None = None
) -> subprocess.CompletedProcess:
    env = os.environ | {"BMSEG_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"} | (env or {})
    env.pop("WORLD_SIZE", None)
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=timeout)


def bmseg(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "bmcore.cli", *args], tmp_path)


def mlflow_runs(tmp_path: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments)


def test_two_processes_end_every_epoch_with_the_same_weights_and_figures(cohort, tmp_path):
    """Each rank draws its own slices, yet gradients are averaged: the ranks' weights (and BatchNorm
    statistics) stay identical, and the epoch figures are the sums over both ranks."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    torchrun.append(f"--log-dir={tmp_path / 'torchrun-logs'}")
    done = run([*torchrun, str(PROBE), str(cohort), str(tmp_path / "probe")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["ddp"] for r in ranks] == [True, True]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["drawn"] != ranks[1]["drawn"]  # the ranks train on different slices
    assert [len(r["drawn"]) for r in ranks] == [16, 16]  # samples_per_epoch 30 in whole batches of 4
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["history"] == ranks[1]["history"]
    assert len(ranks[0]["history"]) == 2
    assert sum(r["val_slices"] for r in ranks) == ranks[0]["val_total"]  # validation sharded, none twice
    assert (tmp_path / "probe" / "run" / "best.pt").exists()


def test_bmseg_train_gpus_2_on_cpu_is_one_tracked_run(cohort, tmp_path):
    args = ["--data", str(cohort), "--gpus", "2", "--device", "cpu", *TINY, "-o", "out"]
    (tmp_path / "tmp").mkdir()
    done = run(
        [sys.executable, "-m", "bmcore.cli", "train", *args], tmp_path, env={"TMPDIR": str(tmp_path / "tmp")}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    left = [path.name for path in (tmp_path / "tmp").iterdir()]
    assert not [name for name in left if name.startswith(("torchelastic_", "bmseg-torchrun-"))], left
    summary = json.loads(done.stdout)  # rank 0 alone reports: stdout is one JSON document
    assert summary["epochs_run"] == 2
    assert summary["registered"]["version"] == 1
    checkpoint = torch.load(tmp_path / "out" / "best.pt", weights_only=True)
    assert checkpoint["extra"]["world_size"] == 2
    assert (tmp_path / "out" / "split.json").exists()
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 1
    assert runs[0].data.params["world_size"] == "2"
    assert runs[0].info.status == "FINISHED"
    assert "train_loss" in runs[0].data.metrics

    resumed = bmseg("train", *args, "--epochs", "3", "--resume", "--no-track", tmp_path=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]  # every rank picked up last.pt at epoch 2


def test_a_corrupt_study_stops_every_process_with_a_one_line_error(cohort, tmp_path):
    broken = tmp_path / "cohort"
    shutil.copytree(cohort, broken)
    image = broken / "BraTS-MET-00001-000" / "BraTS-MET-00001-000-t1c.nii.gz"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    done = bmseg("train", "--data", str(broken), "--gpus", "2", "--device", "cpu", *TINY, tmp_path=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors and all("BraTS-MET-00001-000" in line or "process" in line for line in errors), done.stderr
    assert [run.info.status for run in mlflow_runs(tmp_path)] == ["FAILED"]
    assert_error_lines_stand_alone(done.stderr)


def rank_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the processes torchrun started (children of the launcher), from /proc."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    ranks = {}
    for pid in map(int, children):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for entry in environ:
            if entry.startswith(b"RANK="):
                ranks[int(entry[5:])] = pid
    return ranks


def start_long_training(cohort: Path, tmp_path: Path, env: dict | None = None) -> subprocess.Popen:
    """A 200-epoch run in the background; returns once rank 0 has written its first checkpoint."""
    args = ["--data", str(cohort), "--gpus", "2", "--device", "cpu", *TINY, "--epochs", "200", "-o", "out"]
    env = os.environ | {"BMSEG_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"} | (env or {})
    launcher = subprocess.Popen(
        [sys.executable, "-m", "bmcore.cli", "train", *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not (tmp_path / "out" / "last.pt").exists():
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 3 minutes"
        time.sleep(0.2)
    return launcher


def kill_rank_0_of_a_long_training(cohort: Path, tmp_path: Path, env: dict | None = None) -> tuple[int, str]:
    """SIGKILL rank 0 once it has saved its first checkpoint; the launcher's exit code and stderr."""
    launcher = start_long_training(cohort, tmp_path, env)
    try:
        os.kill(rank_pids(launcher)[0], signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    return launcher.returncode, stderr


def test_rank_0_killed_outright_still_leaves_a_failed_run_and_one_line(cohort, tmp_path):
    """SIGKILL gives rank 0 no chance to end its MLflow run: the launcher marks it FAILED."""
    returncode, stderr = kill_rank_0_of_a_long_training(cohort, tmp_path)
    assert returncode == 2
    assert "Traceback" not in stderr
    assert "error: distributed training failed: process 0 was killed by SIGKILL" in stderr.splitlines()
    assert [run.info.status for run in mlflow_runs(tmp_path)] == ["FAILED"]
    assert_error_lines_stand_alone(stderr)


def test_an_error_line_never_shares_a_line_with_a_progress_bar(cohort, tmp_path):
    """As on a terminal (TTY_COMPATIBLE=1: rich redraws rank 0's bar in place, with no newline after it),
    rank 0 killed outright leaves its bar's line open: every error line after it starts a line of its own."""
    returncode, stderr = kill_rank_0_of_a_long_training(cohort, tmp_path, env={"TTY_COMPATIBLE": "1"})
    assert returncode == 2
    assert "train unet" in stderr  # the bar was drawn live
    assert "error: distributed training failed: process 0 was killed by SIGKILL" in stderr.splitlines()
    assert_error_lines_stand_alone(stderr)


def assert_error_lines_stand_alone(stderr: str) -> None:
    """Every line that holds ``error:`` starts with it: no progress output shares its line."""
    glued = [
        line for line in stderr.splitlines() if "error:" in line and not line.strip().startswith("error:")
    ]
    assert not glued, glued


def test_stopping_the_launcher_stops_every_process_without_a_traceback(cohort, tmp_path):
    launcher = start_long_training(cohort, tmp_path)
    ranks = rank_pids(launcher)
    try:
        launcher.send_signal(signal.SIGTERM)  # as systemd or a container runtime stops it
        _, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode == 130
    assert "Traceback" not in stderr and "interrupted" in stderr, stderr
    assert not any(Path(f"/proc/{pid}").exists() for pid in ranks.values())
    assert [run.info.status for run in mlflow_runs(tmp_path)] == ["KILLED"]  # ended by the launcher


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "0", "--device", "cpu"], "--gpus must be 1 or more"),
        (["--gpus", "2", "--device", "cuda"], "asks for 2 GPUs but this machine has"),
        (["--gpus", "2", "--device", "cuda:1"], "use --device cuda or auto"),
        (["--gpus", "2", "--device", "cpu", "--data", "ONE"], "training needs at least 2 labelled studies"),
    ],
)
def test_a_gpus_request_that_cannot_be_met_is_refused_before_any_process_starts(
    args, message, cohort, tmp_path
):
    if "cuda" in args and torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the GPUs")
    one = tmp_path / "one"  # a cohort of one study
    shutil.copytree(cohort / "BraTS-MET-00001-000", one / "BraTS-MET-00001-000")
    args = [str(one) if arg == "ONE" else arg for arg in args]
    data = [] if "--data" in args else ["--data", str(cohort)]
    done = bmseg("train", *data, *args, *TINY, "-o", "out", tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("samples", "world", "batch", "per_rank"),
    [(6, 2, 4, 4), (30, 2, 4, 16), (200, 8, 16, 32), (256, 2, 16, 128), (0, 2, 8, 48)],
)
def test_an_epoch_is_shared_out_in_whole_batches_and_never_shrinks(samples, world, batch, per_rank):
    """Each rank runs the same number of full batches; the epoch covers at least samples_per_epoch (or,
    with 0, the 90 training slices) — a rank's share below one batch would otherwise train nothing."""
    config = TrainConfig(samples_per_epoch=samples, batch_size=batch)
    assert rank_samples(config, 90, distributed.Rank(world - 1, 0, world)) == per_rank
    assert per_rank % batch == 0 and per_rank * world >= (samples or 90)
    assert rank_samples(config, 90, distributed.Rank()) == (samples or None)  # one process: as before


def test_a_stray_rank_without_a_world_is_a_single_process(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.current() == distributed.Rank()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.current().is_main


def test_rank_seeds_differ_per_rank_and_leave_a_single_process_alone():
    assert rank_seed(7, distributed.Rank()) == 7
    seeds = {rank_seed(7, distributed.Rank(r, r, 4)) for r in range(4)}
    assert len(seeds) == 4


def test_a_process_gets_its_own_gpu_and_the_cpu_stays_the_cpu():
    assert distributed.rank_device("cuda", distributed.Rank(3, 1, 4)) == torch.device("cuda", 1)
    assert distributed.rank_device("cpu", distributed.Rank(3, 1, 4)) == torch.device("cpu")
    assert distributed.rank_device("cuda", distributed.Rank()) == torch.device("cuda")
