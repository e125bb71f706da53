"""Tests of bmcore.inference's fast path (folded batch norms, batch-by-batch volumes, bfloat16) and of the
recipe a checkpoint carries (2.5D context, flip TTA by default, small components removed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bmcore import imaging, inference
from bmcore.data.postprocess import remove_small_components
from bmcore.data.preprocess import (
    brain_mask,
    context_stack,
    normalize,
    preprocess_image,
    probabilities_to_native,
)
from bmcore.models import build_model, save_checkpoint

TINY = {
    "unet": {"base_channels": 4, "depth": 2},
    "cnn": {"base_channels": 4, "depth": 2},
    "fcn": {"base_channels": 4},
}


def _randomise_batch_norms(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.randn(shape, generator=generator))
            module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(shape, generator=generator))
            module.bias.data.copy_(torch.randn(shape, generator=generator))


@pytest.mark.parametrize("arch", sorted(TINY))
def test_fold_batch_norm_keeps_the_function(arch):
    torch.manual_seed(0)
    model = build_model(arch, **TINY[arch]).eval()
    _randomise_batch_norms(model)
    x = torch.randn(2, 4, 64, 64)
    with torch.inference_mode():
        expected = model(x)
        folded = inference.fold_batch_norm(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-4)


def test_fold_batch_norm_refuses_a_training_model():
    with pytest.raises(ValueError, match="eval mode"):
        inference.fold_batch_norm(build_model("unet", **TINY["unet"]))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    model = build_model("unet", **TINY["unet"]).eval()
    _randomise_batch_norms(model, seed=1)
    path = tmp_path_factory.mktemp("model") / "unet.pt"
    save_checkpoint(path, model, "unet", {"preprocess": {"size": 64, "modalities": list(imaging.MODALITIES)}})
    return path


def test_predict_volume_equals_the_whole_volume_pipeline(brats_cohort, tiny_checkpoint):
    """Batch-by-batch prediction gives exactly what preprocessing the whole volume first gives."""
    predictor = inference.load_predictor(tiny_checkpoint, device="cpu", precision="fp32")
    volume = imaging.load_study(imaging.find_studies(brats_cohort)[0], with_label=False)
    image, mask = preprocess_image(volume.image, predictor.size)
    brain = np.flatnonzero(mask.any(axis=(0, 1)))
    probabilities = inference.predict_probabilities(predictor, image[..., brain].transpose(3, 0, 1, 2), 7)
    expected = np.zeros(mask.shape, dtype=np.uint8)
    expected[..., brain] = probabilities_to_native(probabilities.transpose(1, 2, 3, 0), mask.shape[:2])
    expected[~mask] = 0
    batches = []
    labels = inference.predict_volume(
        predictor, volume, batch_size=7, on_batch=lambda i, n: batches.append((i, n))
    )
    np.testing.assert_array_equal(labels, expected)
    assert batches[-1][0] == batches[-1][1] == -(-len(brain) // 7)


def test_bf16_predictor_agrees_with_fp32(brats_cohort, tiny_checkpoint):
    volume = imaging.load_study(imaging.find_studies(brats_cohort)[1], with_label=False)
    fp32 = inference.load_predictor(tiny_checkpoint, device="cpu", precision="fp32")
    bf16 = inference.load_predictor(tiny_checkpoint, device="cpu", precision="bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    agreement = (inference.predict_volume(fp32, volume) == inference.predict_volume(bf16, volume)).mean()
    assert agreement >= 0.99


def test_load_predictor_precision_choices(tiny_checkpoint):
    predictor = inference.load_predictor(tiny_checkpoint, device="cpu")
    assert predictor.precision == ("bf16" if inference.cpu_has_native_bf16() else "fp32")
    with pytest.raises(ValueError, match="unknown precision"):
        inference.load_predictor(tiny_checkpoint, device="cpu", precision="fp16")


# ----------------------------------------------------------------- the recipe of issue #15 at inference


def test_an_older_checkpoint_reads_with_the_studys_recipe(tiny_checkpoint):
    predictor = inference.load_predictor(tiny_checkpoint, device="cpu", precision="fp32")
    assert (predictor.size, predictor.context_slices, predictor.native) == (64, 0, False)
    assert (predictor.multiple, predictor.min_component_voxels, predictor.tta) == (4, 0, False)


@pytest.fixture(scope="module")
def context_checkpoint(tmp_path_factory):
    """A 2.5D model (one neighbour on each side: 12 input channels) that post-processes by default; its
    head has no bias, so that what it predicts varies with the input."""
    torch.manual_seed(1)
    model = build_model("unet", in_channels=12, **TINY["unet"]).eval()
    with torch.no_grad():
        model.head.bias.zero_()
    path = tmp_path_factory.mktemp("context") / "unet.pt"
    preprocess = {"size": 64, "modalities": list(imaging.MODALITIES), "context_slices": 1, "native": False}
    postprocess = {"min_component_voxels": 20, "tta": True}
    save_checkpoint(path, model, "unet", {"preprocess": preprocess, "postprocess": postprocess})
    return path


def test_a_context_model_sees_each_slice_with_its_neighbours(brats_cohort, context_checkpoint):
    """Batch-by-batch 2.5D prediction equals stacking the neighbours of the whole volume first."""
    predictor = inference.load_predictor(context_checkpoint, device="cpu", precision="fp32")
    assert (predictor.context_slices, predictor.min_component_voxels, predictor.tta) == (1, 20, True)
    bare = dataclasses.replace(predictor, min_component_voxels=0, tta=False)
    volume = imaging.load_study(imaging.find_studies(brats_cohort)[0], with_label=False)
    mask = brain_mask(volume.image)
    brain = np.flatnonzero(mask.any(axis=(0, 1)))
    stack = torch.from_numpy(context_stack(normalize(volume.image, mask), brain, 1))
    resized = torch.nn.functional.interpolate(stack, size=(64, 64), mode="bilinear", align_corners=False)
    probabilities = inference.predict_probabilities(bare, resized.numpy(), 7)
    expected = np.zeros(mask.shape, dtype=np.uint8)
    expected[..., brain] = probabilities_to_native(probabilities.transpose(1, 2, 3, 0), mask.shape[:2])
    expected[~mask] = 0
    np.testing.assert_array_equal(inference.predict_volume(bare, volume, batch_size=7), expected)
    assert len(np.unique(expected[mask])) > 1
    flipped = inference.predict_volume(dataclasses.replace(bare, tta=True), volume)  # the default: TTA
    assert (flipped != expected).any()
    np.testing.assert_array_equal(flipped, inference.predict_volume(bare, volume, tta=True))
    kept = inference.predict_volume(predictor, volume)
    np.testing.assert_array_equal(kept, remove_small_components(flipped, 20))
    assert (kept != flipped).any()


def test_small_components_are_removed_and_large_ones_kept():
    labels = np.zeros((40, 40, 20), np.uint8)
    labels[5:15, 5:15, 5:10] = 2  # a lesion: edema around an enhancing core
    labels[8:12, 8:12, 6:9] = 3
    labels[30, 30, 15] = 3  # a speck: one voxel
    labels[25:27, 5:7, 3:5] = 1  # eight voxels
    labels[33, 33, 2] = 3  # diagonal neighbours (26-connected): one component of two voxels
    labels[34, 34, 3] = 3
    out = remove_small_components(labels, 9)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:20, :20], labels[:20, :20])  # the lesion, every label kept
    assert not out[20:].any()
    assert remove_small_components(labels, 8)[25:27, 5:7, 3:5].all()  # 8 voxels: not under 8
    np.testing.assert_array_equal(remove_small_components(labels, 0), labels)
    np.testing.assert_array_equal(remove_small_components(labels, 2)[33:35, 33:35], labels[33:35, 33:35])
