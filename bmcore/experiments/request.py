"""What a training run is asked to do, as data (torch-free): the run itself and how MLflow tracks it.

One :class:`TrainRequest` travels from the caller (``bmseg train``, the worker's train task, ``bmseg
compare``, the benchmarks) through :func:`bmcore.experiments.tracked.tracked_train` to
:func:`bmcore.experiments.training.train_run`, instead of a long list of keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bmcore.imaging import StudyRef
from bmcore.training.config import TrainConfig

if TYPE_CHECKING:  # type hints only: these modules import torch, and this one stays torch-free
    from bmcore.data.dataset import CachedCase
    from bmcore.training.loop import EpochCallback

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Tracking:
    """How a run is tracked: ``enabled`` false leaves MLflow alone (``run_id`` is still reported).

    ``run_id``: continue this MLflow run instead of starting one (a job's retry); ``parent_run_id``: nest
    the new run under this one (a sweep or cross-validation parent); ``champion_eligible`` false: the new
    version never takes ``champion`` (cross-validation folds); ``on_run`` is told the run's id first.
    """

    enabled: bool = True
    run_id: str | None = None
    run_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    champion_eligible: bool = True
    on_run: Callable[[str], None] | None = None


UNTRACKED = Tracking(enabled=False)


@dataclass
class PreparedData:
    """Studies split by patient, training and validation studies cached (test studies untouched)."""

    refs: list[StudyRef]
    split: dict
    train_cases: list[CachedCase]
    val_cases: list[CachedCase]
    test_refs: list[StudyRef] = field(default_factory=list)
    val_refs: list[StudyRef] = field(default_factory=list)


@dataclass(frozen=True)
class TrainRequest:
    """One training run: ``config`` on ``data`` into ``out_dir``.

    ``split``: an explicit split (as split.json; e.g. a cross-validation fold) instead of one drawn with
    ``split_seed``; ``prepared``: studies already split and cached (``bmseg compare`` trains several
    models on one); ``callbacks`` are called after every epoch; ``progress`` gets the job's share done
    and a message, ``show_progress`` draws the terminal's progress bars.
    """

    data: str | Path
    config: TrainConfig
    out_dir: str | Path
    resume: bool = False
    split_seed: int = 0
    split: dict | None = None
    prepared: PreparedData | None = None
    callbacks: tuple[EpochCallback, ...] = ()
    should_stop: Callable[[], bool] | None = None
    progress: Progress | None = None
    show_progress: bool = True
    tracking: Tracking = UNTRACKED
