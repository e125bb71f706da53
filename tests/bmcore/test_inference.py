"""Tests of bmcore.inference's fast path: folded batch norms, batch-by-batch volumes, bfloat16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmcore import imaging, inference
from bmcore.data.preprocess import preprocess_image, probabilities_to_native
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
