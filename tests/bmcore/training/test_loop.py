"""The training loop: early stopping, resume, checkpoints, partial labels, and train → segment → evaluate."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch

from bmcore import imaging
from bmcore.data.dataset import prepare_case
from bmcore.data.synth import synth_cohort
from bmcore.evaluation.evaluate import evaluate_studies
from bmcore.experiments.request import TrainRequest
from bmcore.experiments.training import train_run
from bmcore.inference import LESION_COLUMNS, load_predictor, segment_study
from bmcore.training.config import TrainConfig
from bmcore.training.loop import fit
from bmcore.training.parts import build_training_parts


@pytest.fixture(scope="module")
def brats_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("brats")
    synth_cohort(root, 5, seed=21, layout="brats", shape=(64, 64, 24), spacing=(3.5, 3.5, 6.0), workers=1)
    return root


@pytest.fixture(scope="module")
def cached_cases(brats_cohort, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return [prepare_case(ref, cache, size=64) for ref in imaging.find_studies(brats_cohort)]


def constant_loss(logits, target, partial=None):
    """A loss that can never improve: early stopping must end the run after `patience` epochs."""
    return (logits * 0.0).sum() + 1.0


def test_early_stopping_ends_the_run_after_patience_epochs_without_improvement(
    cached_cases, tmp_path, tiny_train
):
    config = TrainConfig(epochs=10, early_stopping_patience=2, **tiny_train)
    parts = build_training_parts(config, cached_cases[:3], cached_cases[3:])
    parts.loss_fn = constant_loss
    result = fit(parts, config, tmp_path, progress=False)
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    assert [h["epoch"] for h in result.history] == [1, 2, 3]


def test_resume_continues_from_the_last_epoch_with_the_same_history(cached_cases, tmp_path, tiny_train):
    first = TrainConfig(epochs=2, seed=3, **tiny_train)
    run = fit(
        build_training_parts(first, cached_cases[:3], cached_cases[3:]), first, tmp_path, progress=False
    )
    assert [h["epoch"] for h in run.history] == [1, 2]
    seen = []
    longer = TrainConfig(epochs=4, seed=3, **tiny_train)
    resumed = fit(
        build_training_parts(longer, cached_cases[:3], cached_cases[3:]),
        longer,
        tmp_path,
        resume=True,
        progress=False,
        callbacks=[lambda epoch, figures: seen.append(epoch)],
    )
    assert seen == [3, 4]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == run.history
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    assert checkpoint["extra"]["epoch"] == 4 and checkpoint["extra"]["preprocess"]["size"] == 64


def test_a_mixed_cohort_trains_with_partial_labels(tmp_path, tiny_train):
    cohort = tmp_path / "ucsf"
    synth_cohort(
        cohort,
        6,
        seed=4,
        layout="ucsf",
        shape=(64, 64, 24),
        spacing=(3.5, 3.5, 6.0),
        multiclass_fraction=0.5,
        workers=1,
    )
    refs = imaging.find_studies(cohort)
    kinds = {r.label_kind for r in refs}
    assert kinds == {"multiclass", "enhancing"}
    cases = [prepare_case(ref, tmp_path / "cache", size=64) for ref in refs]
    assert {c.partial for c in cases} == {True, False}
    config = TrainConfig(epochs=1, **tiny_train)
    result = fit(build_training_parts(config, cases, []), config, tmp_path / "run", progress=False)
    assert np.isfinite(result.history[0]["train_loss"])


def test_one_epoch_train_then_segment_then_evaluate(brats_cohort, tmp_path, monkeypatch, tiny_train):
    from bmcore.config import get_settings

    monkeypatch.setenv("BMSEG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    request = TrainRequest(
        brats_cohort, TrainConfig(epochs=1, **tiny_train), tmp_path / "run", show_progress=False
    )
    outcome = train_run(request)
    get_settings.cache_clear()
    assert outcome.best_checkpoint.is_file() and outcome.validation is not None
    predictor = load_predictor(outcome.best_checkpoint, device="cpu")
    ref = imaging.find_studies(brats_cohort)[0]
    result = segment_study(predictor, ref, tmp_path / "out")
    mask, source = nib.load(result.mask_path), nib.load(ref.images["t1ce"])
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    with open(result.lesions_path) as handle:
        header, *rows = list(csv.reader(handle))
    assert tuple(header) == LESION_COLUMNS
    assert len(rows) == len(result.lesions)
    evaluation = evaluate_studies(predictor, imaging.find_studies(brats_cohort)[:2])
    for key in ("paper_mean_iou", "dice_TC", "lesion_dice_TC", "hd95_TC", "detection_sensitivity_TC"):
        assert key in evaluation["summary"]
    for key in ("brats2023_lesion_dice_TC", "brats2025_n_gt_TC", "patients", "lesions", "dice_TC_ci95"):
        assert key in evaluation["summary"]
    assert all("brats2025_lesion_dice_TC" in case for case in evaluation["cases"])


def test_resuming_with_other_model_settings_is_refused_before_loading(cached_cases, tmp_path, tiny_train):
    """A job queued before a recipe change and redelivered after it must not load 4-channel weights into
    a 12-channel model (or the reverse): one clear error names both settings."""
    study = TrainConfig(epochs=1, **tiny_train | {"context_slices": 0})
    fit(build_training_parts(study, cached_cases[:3], cached_cases[3:]), study, tmp_path, progress=False)
    bmseg = TrainConfig(epochs=2, **tiny_train | {"context_slices": 1})
    with pytest.raises(
        ValueError, match="holds a model of other settings.*'in_channels': 4.*'in_channels': 12"
    ):
        fit(
            build_training_parts(bmseg, cached_cases[:3], cached_cases[3:]),
            bmseg,
            tmp_path,
            resume=True,
            progress=False,
        )
