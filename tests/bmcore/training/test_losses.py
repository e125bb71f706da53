"""Tests for bmcore.training.losses: hand-computed values, partial (enhancing-only) labels, the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bmcore.training.losses import build_loss, cross_entropy_loss, dice_ce_loss

# One sample, four classes, one row of two voxels: logits (1, 4, 1, 2), labels (1, 1, 2).
LOGITS = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 3.0]]).reshape(1, 4, 1, 2)
TARGET = torch.tensor([[[0, 3]]])
FULL = torch.tensor([False])
PARTIAL = torch.tensor([True])


def _softmax(values: list[float]) -> list[float]:
    exponentials = [math.exp(v) for v in values]
    return [e / sum(exponentials) for e in exponentials]


def _voxel_probabilities() -> tuple[list[float], list[float]]:
    """Class probabilities of the two voxels of LOGITS, computed by hand."""
    return _softmax([2.0, 0.0, 1.0, -1.0]), _softmax([0.0, 1.0, 0.0, 3.0])


def test_uniform_logits_give_ln4() -> None:
    logits = torch.zeros(1, 4, 1, 2)
    assert cross_entropy_loss(logits, TARGET).item() == pytest.approx(math.log(4))
    assert cross_entropy_loss(logits, TARGET, FULL).item() == pytest.approx(math.log(4))
    # Partial: "not enhancing" has probability 3/4, enhancing 1/4.
    expected = (-math.log(3 / 4) - math.log(1 / 4)) / 2
    assert cross_entropy_loss(logits, TARGET, PARTIAL).item() == pytest.approx(expected)


def test_cross_entropy_by_hand() -> None:
    first, second = _voxel_probabilities()
    expected = (-math.log(first[0]) - math.log(second[3])) / 2
    assert cross_entropy_loss(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_partial_loss_is_two_class_cross_entropy_of_merged_probabilities() -> None:
    first, second = _voxel_probabilities()
    expected = (-math.log(first[0] + first[1] + first[2]) - math.log(second[3])) / 2
    assert cross_entropy_loss(LOGITS, TARGET, PARTIAL).item() == pytest.approx(expected, rel=1e-6)
    # The same with torch: merge the probabilities, then a plain 2-class negative log-likelihood.
    probabilities = torch.softmax(LOGITS, dim=1)
    merged = torch.stack([probabilities[:, :3].sum(dim=1), probabilities[:, 3]], dim=1)
    two_class = F.nll_loss(merged.log(), (TARGET == 3).long())
    assert cross_entropy_loss(LOGITS, TARGET, PARTIAL).item() == pytest.approx(two_class.item(), rel=1e-6)


def test_partial_loss_does_not_punish_edema_on_not_enhancing_voxels() -> None:
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    says_edema = torch.tensor([[0.0, 0.0], [0.0, 0.0], [8.0, 8.0], [0.0, 0.0]]).reshape(1, 4, 1, 2)
    says_background = says_edema[:, [2, 1, 0, 3]]
    for loss in (cross_entropy_loss, dice_ce_loss):
        # Full labels: predicting edema where the label says background is a large error.
        assert loss(says_edema, target).item() > 5 * loss(says_background, target).item()
        # Partial labels: background, necrosis and edema are one class, so both are equally right.
        assert loss(says_edema, target, PARTIAL).item() == pytest.approx(
            loss(says_background, target, PARTIAL).item(), abs=1e-6
        )
    assert cross_entropy_loss(says_edema, target, PARTIAL).item() < 1e-3


def test_mixed_batch_is_the_mean_over_all_voxels() -> None:
    logits = torch.randn(3, 4, 4, 4)
    target = torch.randint(0, 4, (3, 4, 4))
    target[1] = torch.where(target[1] == 3, 3, 0)
    partial = torch.tensor([False, True, False])
    mixed = cross_entropy_loss(logits, target, partial)
    per_sample = [
        cross_entropy_loss(logits[i : i + 1], target[i : i + 1], partial[i : i + 1]) for i in range(3)
    ]
    assert mixed.item() == pytest.approx(torch.stack(per_sample).mean().item(), rel=1e-6)
    assert cross_entropy_loss(logits, target, torch.zeros(3, dtype=torch.bool)).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-6
    )


def test_partial_loss_is_stable_for_extreme_logits() -> None:
    logits = torch.tensor([[1e4, -1e4], [-1e4, -1e4], [-1e4, -1e4], [-1e4, 1e4]]).reshape(1, 4, 1, 2)
    logits.requires_grad_(True)
    loss = cross_entropy_loss(logits, TARGET, PARTIAL)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()
    wrong = cross_entropy_loss(logits.detach().flip(-1), TARGET, PARTIAL)
    # Voxel 1: -log(3 e^-1e4 / e^1e4) = 2e4 - ln 3; voxel 2: -log(e^-1e4 / e^1e4) = 2e4.
    assert wrong.item() == pytest.approx(2e4 - math.log(3) / 2, abs=0.01)


def test_dice_ce_by_hand_for_uniform_logits() -> None:
    logits = torch.zeros(1, 4, 1, 2)
    # Each voxel has p = 1/4 per class; smooth = 1. Classes 1 and 2 are absent: (0 + 1) / (0.5 + 1).
    # Class 3 is the second voxel: (2 * 0.25 + 1) / (0.5 + 1 + 1).
    absent, enhancing = 1 / 1.5, 1.5 / 2.5
    expected = math.log(4) + 1 - (2 * absent + enhancing) / 3
    assert dice_ce_loss(logits, TARGET).item() == pytest.approx(expected, rel=1e-6)
    # Partial: only the enhancing class is scored by Dice.
    partial_ce = (-math.log(3 / 4) - math.log(1 / 4)) / 2
    assert dice_ce_loss(logits, TARGET, PARTIAL).item() == pytest.approx(partial_ce + 1 - enhancing, rel=1e-6)


def test_dice_ce_prefers_the_correct_prediction() -> None:
    target = torch.randint(0, 4, (2, 8, 8))
    correct = 6 * F.one_hot(target, 4).permute(0, 3, 1, 2).float()
    wrong = 6 * F.one_hot((target + 1) % 4, 4).permute(0, 3, 1, 2).float()
    assert dice_ce_loss(correct, target).item() < 0.05
    assert dice_ce_loss(correct, target).item() < dice_ce_loss(wrong, target).item()
    assert dice_ce_loss(wrong, target).item() > 1.0


def test_losses_backpropagate_finite_gradients() -> None:
    target = torch.randint(0, 4, (2, 8, 8))
    target[1] = torch.where(target[1] == 3, 3, 0)
    partial = torch.tensor([False, True])
    for name in ("ce", "dice_ce"):
        logits = torch.randn(2, 4, 8, 8, requires_grad=True)
        build_loss(name)(logits, target, partial).backward()
        assert torch.isfinite(logits.grad).all()


def test_integer_label_dtypes_are_accepted() -> None:
    expected = cross_entropy_loss(LOGITS, TARGET).item()
    assert cross_entropy_loss(LOGITS, TARGET.to(torch.uint8)).item() == pytest.approx(expected)


def test_build_loss() -> None:
    assert build_loss("ce") is cross_entropy_loss
    assert build_loss("dice_ce") is dice_ce_loss
    with pytest.raises(ValueError, match="unknown loss 'dice'; valid names: ce, dice_ce"):
        build_loss("dice")


@pytest.mark.parametrize(
    ("logits", "target", "partial", "message"),
    [
        (torch.zeros(1, 3, 1, 2), TARGET, None, "logits must be"),
        (LOGITS, torch.zeros(1, 2, 1, dtype=torch.long), None, "target must be"),
        (LOGITS, TARGET.float(), None, "integer labels"),
        (LOGITS, TARGET, torch.tensor([1]), "bool tensor"),
        (LOGITS, TARGET, torch.tensor([True, False]), "shape"),
        (LOGITS, torch.tensor([[[2, 3]]]), PARTIAL, "labels 0 or 3 only"),
    ],
)
def test_bad_inputs_are_clear_errors(logits, target, partial, message: str) -> None:
    for loss in (cross_entropy_loss, dice_ce_loss):
        with pytest.raises(ValueError, match=message):
            loss(logits, target, partial)
