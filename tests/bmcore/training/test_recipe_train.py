"""A tiny model trained with every recipe option of issue #15; its checkpoint keeps them and inference
honours them: native-resolution whole slices (no resize), the 2.5D context, flip TTA, small components.

The cohort's slices are 62 × 58, not a multiple of the model's stride (4), so inference must pad and cut.
"""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
import torch

from bmcore import imaging
from bmcore.data.postprocess import remove_small_components
from bmcore.data.preprocess import brain_mask, context_stack, normalize
from bmcore.data.synth import synth_cohort
from bmcore.experiments.request import TrainRequest
from bmcore.experiments.training import train_run
from bmcore.inference import load_predictor, predict_volume, segment_study
from bmcore.training.config import TrainConfig

SHAPE = (62, 58, 24)
RECIPE = {
    "loss": "dice_ce",
    "class_weights": "inverse_frequency",
    "crop": 32,
    "context_slices": 1,
    "min_component_voxels": 3,
    "tta": True,
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe") / "cohort"
    synth_cohort(root, 5, seed=21, layout="brats", shape=SHAPE, spacing=(3.5, 3.5, 6.0), workers=1)
    return root


def _by_hand(predictor, volume: imaging.Volume, batch_size: int = 16) -> np.ndarray:
    """Native slices with their neighbours, zero-padded to 64 x 60, the model, the padding cut off."""
    mask = brain_mask(volume.image)
    image = normalize(volume.image, mask)
    brain = np.flatnonzero(mask.any(axis=(0, 1)))
    labels = np.zeros(mask.shape, np.uint8)
    with torch.inference_mode():
        for start in range(0, len(brain), batch_size):
            z = brain[start : start + batch_size]
            stack = torch.from_numpy(context_stack(image, z, 1))
            padded = torch.zeros(len(z), stack.shape[1], 64, 60)
            padded[:, :, :62, :58] = stack
            logits = predictor.model(padded.contiguous(memory_format=torch.channels_last))
            labels[..., z] = logits[:, :, :62, :58].argmax(1).permute(1, 2, 0).numpy()
    labels[~mask] = 0
    return labels


def test_a_model_trained_with_every_option_keeps_them_and_inference_honours_them(
    cohort, tmp_path, monkeypatch, tiny_train
):
    from bmcore.config import get_settings

    monkeypatch.setenv("BMSEG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    config = TrainConfig(epochs=1, **{**tiny_train, **RECIPE})
    outcome = train_run(TrainRequest(cohort, config, tmp_path / "run", show_progress=False))
    get_settings.cache_clear()
    assert np.isfinite(outcome.history[0]["val_loss"])  # validated on whole native slices, padded

    checkpoint = torch.load(outcome.best_checkpoint, weights_only=True)
    extra = checkpoint["extra"]
    assert {k: extra["train_config"][k] for k in RECIPE} == RECIPE
    assert extra["preprocess"] == {"size": 64, "modalities": list(imaging.MODALITIES)} | {
        "context_slices": 1,
        "native": True,
    }
    assert extra["postprocess"] == {"min_component_voxels": 3, "tta": True}
    assert checkpoint["init_args"]["in_channels"] == 12

    predictor = load_predictor(outcome.best_checkpoint, device="cpu", precision="fp32")
    assert (predictor.context_slices, predictor.native, predictor.multiple) == (1, True, 4)
    assert (predictor.min_component_voxels, predictor.tta) == (3, True)

    ref = imaging.find_studies(cohort)[0]
    result = segment_study(predictor, ref, tmp_path / "out")
    mask, source = nib.load(result.mask_path), nib.load(ref.images["t1ce"])
    assert mask.shape == source.shape == SHAPE and np.allclose(mask.affine, source.affine)

    volume = imaging.load_study(ref, with_label=False)
    bare = dataclasses.replace(predictor, min_component_voxels=0)
    np.testing.assert_array_equal(predict_volume(bare, volume, tta=False), _by_hand(predictor, volume))
    with_tta = predict_volume(bare, volume)  # the model's own default: flip TTA
    np.testing.assert_array_equal(with_tta, predict_volume(bare, volume, tta=True))
    np.testing.assert_array_equal(predict_volume(predictor, volume), remove_small_components(with_tta, 3))
