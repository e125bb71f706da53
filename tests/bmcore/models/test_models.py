"""Tests for bmcore.models: shapes, gradients, registry, checkpoints, attention gates, a tiny overfit."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from bmcore.models import (
    MODELS,
    AttentionUNet,
    FCN8s,
    SegmentationCNN,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from bmcore.models.blocks import ConvBlock
from bmcore.models.unet import AttentionGate
from bmcore.training.config import ARCHS
from bmcore.training.losses import cross_entropy_loss

# (arch, small constructor arguments) covering a couple of widths and depths each.
CONFIGS = [
    ("unet", {"base_channels": 4, "depth": 2}),
    ("unet", {"base_channels": 8, "depth": 4}),
    ("cnn", {"base_channels": 4, "depth": 2}),
    ("cnn", {"base_channels": 8, "depth": 5}),
    ("fcn", {"base_channels": 4}),
    ("fcn", {"base_channels": 6, "dropout": 0.0}),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_registry_names_the_three_architectures() -> None:
    assert {"unet": AttentionUNet, "cnn": SegmentationCNN, "fcn": FCN8s} == MODELS


def test_the_registry_follows_the_one_list_of_architecture_names() -> None:
    assert tuple(MODELS) == ARCHS


def test_models_pickled_before_the_blocks_moved_still_find_conv_block() -> None:
    """MLflow's pickled models name ConvBlock by the module it used to live in, bmcore.models.unet."""
    assert pickle.loads(b"cbmcore.models.unet\nConvBlock\n.") is ConvBlock


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize(("arch", "kwargs"), CONFIGS)
def test_forward_returns_logits_of_input_size(arch: str, kwargs: dict, size: int) -> None:
    model = build_model(arch, **kwargs).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, 4, size, size))
    assert logits.shape == (2, 4, size, size)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    # Logits, not probabilities: no softmax in forward.
    assert not torch.allclose(logits.sum(dim=1), torch.ones(2, size, size))


@pytest.mark.parametrize("size", [32, 64])
def test_non_square_input(size: int) -> None:
    for arch in MODELS:
        model = build_model(arch, base_channels=4).eval()
        with torch.inference_mode():
            assert model(torch.randn(1, 4, size, 2 * size)).shape == (1, 4, size, 2 * size)


@pytest.mark.parametrize(("arch", "kwargs"), CONFIGS)
def test_backward_gives_finite_gradients_on_every_parameter(arch: str, kwargs: dict) -> None:
    model = build_model(arch, **kwargs).train()
    logits = model(torch.randn(2, 4, 32, 32))
    cross_entropy_loss(logits, torch.randint(0, 4, (2, 32, 32))).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize(("arch", "size"), [("unet", 40), ("cnn", 40), ("fcn", 48)])
def test_input_not_divisible_is_a_clear_error(arch: str, size: int) -> None:
    model = build_model(arch, base_channels=4)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 4, size, size))
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        model(torch.randn(1, 3, 64, 64))


def test_build_model_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'; valid names: cnn, fcn, unet"):
        build_model("resnet")


def test_build_model_unknown_argument() -> None:
    with pytest.raises(ValueError, match="unknown argument.*'fcn': depth; valid: in_channels"):
        build_model("fcn", depth=3)
    with pytest.raises(ValueError, match="unknown argument.*width"):
        build_model("unet", width=3)


@pytest.mark.parametrize("kwargs", [{"depth": 0}, {"base_channels": 0}, {"dropout": 1.0}, {"num_classes": 0}])
def test_constructor_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        build_model("unet", **kwargs)


@pytest.mark.parametrize(("arch", "kwargs"), CONFIGS[::2])
def test_init_args_store_every_constructor_argument(arch: str, kwargs: dict) -> None:
    model = build_model(arch, **kwargs)
    assert model.init_args == {**model.init_args, **kwargs}
    assert set(model.init_args) == {
        "in_channels",
        "num_classes",
        "base_channels",
        "dropout",
        *(("depth",) if arch != "fcn" else ()),
    }
    assert build_model(arch, **model.init_args).init_args == model.init_args


@pytest.mark.parametrize(("arch", "kwargs"), CONFIGS[::2])
def test_checkpoint_round_trip_is_bit_exact(tmp_path, arch: str, kwargs: dict) -> None:
    model = build_model(arch, **kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = torch.randn(2, 4, 32, 32)
    cross_entropy_loss(model(batch), torch.randint(0, 4, (2, 32, 32))).backward()
    optimizer.step()  # moves weights and BN running statistics away from their initial values
    path = tmp_path / "run" / "model.pt"
    extra = {"epoch": 3, "best_dice": 0.5, "optimizer": optimizer.state_dict(), "history": [1.0, 0.5]}
    save_checkpoint(path, model, arch, extra=extra)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind

    loaded, checkpoint = load_checkpoint(path)
    assert type(loaded) is type(model)
    assert not loaded.training
    assert checkpoint["arch"] == arch
    assert checkpoint["init_args"] == model.init_args
    assert checkpoint["extra"]["epoch"] == 3
    model.eval()
    with torch.inference_mode():
        assert torch.equal(loaded(batch), model(batch))
    resumed = torch.optim.Adam(loaded.parameters(), lr=1e-3)
    resumed.load_state_dict(checkpoint["extra"]["optimizer"])


def test_checkpoint_loads_with_weights_only(tmp_path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model("unet", base_channels=4, depth=2), "unet")
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["format_version"] == 1
    assert checkpoint["arch"] == "unet"
    assert checkpoint["extra"] == {}
    assert all(isinstance(value, torch.Tensor) for value in checkpoint["state_dict"].values())


def test_checkpoint_overwrite_replaces_the_file(tmp_path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model("cnn", base_channels=4, depth=2), "cnn", extra={"epoch": 1})
    save_checkpoint(path, build_model("cnn", base_channels=4, depth=2), "cnn", extra={"epoch": 2})
    assert load_checkpoint(path)[1]["extra"]["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_save_checkpoint_refuses_what_weights_only_cannot_load(tmp_path) -> None:
    model = build_model("cnn", base_channels=4, depth=2)
    with pytest.raises(TypeError, match=r"extra\['dice'\]: float64"):
        save_checkpoint(tmp_path / "a.pt", model, "cnn", extra={"dice": np.float64(0.5)})
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(tmp_path / "a.pt", model, "cnn", extra={"x": [object()]})
    with pytest.raises(ValueError, match="is AttentionUNet, but the model is SegmentationCNN"):
        save_checkpoint(tmp_path / "a.pt", model, "unet")
    with pytest.raises(ValueError, match="valid names"):
        save_checkpoint(tmp_path / "a.pt", model, "vgg")
    assert list(tmp_path.iterdir()) == []


def test_load_checkpoint_rejects_other_files(tmp_path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a bmseg model checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("depth", [1, 3, 4])
def test_unet_has_one_attention_gate_per_level(depth: int) -> None:
    model = AttentionUNet(base_channels=4, depth=depth)
    assert sum(isinstance(module, AttentionGate) for module in model.modules()) == depth


def test_attention_gates_change_the_output() -> None:
    model = AttentionUNet(base_channels=4, depth=3).eval()
    batch = torch.randn(1, 4, 32, 32)
    seen = []
    for module in model.modules():
        if isinstance(module, AttentionGate):
            module.register_forward_hook(lambda _m, args, out: seen.append((args[1], out)))
    with torch.inference_mode():
        gated = model(batch)
    assert len(seen) == 3
    for skip, out in seen:
        assert out.shape == skip.shape
        ratio = out[skip != 0] / skip[skip != 0]  # the attention map, broadcast over channels
        assert ((ratio > 0) & (ratio < 1)).all()
    for module in model.modules():
        if isinstance(module, AttentionGate):
            module.forward = lambda gate, skip: skip  # bypass: ungated skip
    with torch.inference_mode():
        ungated = model(batch)
    assert not torch.allclose(gated, ungated)


def test_fcn_upsampling_starts_bilinear() -> None:
    model = FCN8s(base_channels=4)
    scores = torch.ones(1, 4, 4, 4)
    upsampled = model.up_output(scores)
    assert upsampled.shape == (1, 4, 32, 32)
    assert torch.allclose(upsampled[:, :, 4:-4, 4:-4], torch.ones(1, 4, 24, 24))


def test_unet_overfits_one_sample() -> None:
    image = torch.randn(1, 4, 32, 32)
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[0, 8:20, 8:20] = 2
    target[0, 10:18, 10:18] = 3
    target[0, 12:16, 12:16] = 1
    image[:, 1] += (target == 3).float()  # enhancing tumour is bright on T1ce
    model = AttentionUNet(base_channels=8, depth=2, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = cross_entropy_loss(model(image), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1])
    assert losses[-1] < 0.5 * losses[0]
