"""Segmentation losses on logits (N, 4, H, W) and integer labels (N, H, W), with partial labels.

Labels follow docs/design.md §2: 0 background, 1 necrotic core, 2 edema, 3 enhancing tumour.
A *partial* sample (``partial[n]`` true) has only a binary enhancing mask: 3 = enhancing,
0 = "not enhancing" (background, necrosis or edema alike). For those samples the probabilities of
classes 0, 1 and 2 are summed into one class before the likelihood is taken, computed in log space as
``logsumexp(logits[:, 0:3]) - logsumexp(logits)``, so the model is never taught that edema or
necrosis is background; the Dice term of such a sample scores the enhancing class alone.
Every loss is a mean over all voxels of full and partial samples alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bmcore.training.config import LOSSES as LOSS_NAMES

ENHANCING = 3
NUM_CLASSES = 4

LossFunction = Callable[..., torch.Tensor]


def cross_entropy_loss(
    logits: torch.Tensor, target: torch.Tensor, partial: torch.Tensor | None = None
) -> torch.Tensor:
    """Categorical cross-entropy (the study's loss), averaged over every voxel.

    ``partial`` (bool, shape (N,)) marks samples with binary enhancing-only labels (0 or 3); for
    them the loss is the two-class cross-entropy of enhancing versus classes 0-2 merged.
    """
    logits, target, partial = _check_inputs(logits, target, partial)
    if partial is None:
        return F.cross_entropy(logits, target)
    return -_log_likelihood(logits, target, partial).mean()


def dice_ce_loss(
    logits: torch.Tensor, target: torch.Tensor, partial: torch.Tensor | None = None, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Dice loss over foreground classes 1-3 plus cross-entropy.

    Dice is computed per class over the whole batch (sums over samples and voxels, as nnU-Net's
    ``batch_dice``), then averaged over the classes that have at least one sample to score them:
    classes 1 and 2 count full samples only, class 3 counts all. ``smooth`` is added to numerator
    and denominator, so a class absent from target and prediction scores 1.
    """
    logits, target, partial = _check_inputs(logits, target, partial)
    if partial is None:
        cross_entropy = F.cross_entropy(logits, target)
    else:
        cross_entropy = -_log_likelihood(logits, target, partial).mean()
    foreground = torch.softmax(logits, dim=1)[:, 1:]
    truth = F.one_hot(target, NUM_CLASSES).permute(0, 3, 1, 2)[:, 1:].to(foreground.dtype)
    intersection = (foreground * truth).sum(dim=(2, 3))
    total = foreground.sum(dim=(2, 3)) + truth.sum(dim=(2, 3))
    weight = torch.ones_like(intersection)
    if partial is not None:
        weight[:, : ENHANCING - 1] = (~partial).to(weight.dtype)[:, None]
    dice = (2 * (weight * intersection).sum(0) + smooth) / ((weight * total).sum(0) + smooth)
    scored = weight.sum(0) > 0
    dice_loss = 1 - (dice * scored).sum() / scored.sum()
    return cross_entropy + dice_loss


_FUNCTIONS: dict[str, LossFunction] = {"ce": cross_entropy_loss, "dice_ce": dice_ce_loss}
assert set(_FUNCTIONS) == set(LOSS_NAMES), (
    f"LOSSES {LOSS_NAMES} and the loss functions {sorted(_FUNCTIONS)} disagree"
)
LOSSES: dict[str, LossFunction] = {name: _FUNCTIONS[name] for name in LOSS_NAMES}


def build_loss(name: str) -> LossFunction:
    """Return the loss registered as ``name``: ``loss(logits, target, partial=None) -> scalar``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def _log_likelihood(logits: torch.Tensor, target: torch.Tensor, partial: torch.Tensor) -> torch.Tensor:
    """Per-voxel log-likelihood (N, H, W); partial samples use classes 0-2 merged."""
    log_probs = F.log_softmax(logits, dim=1)
    full = log_probs.gather(1, target[:, None]).squeeze(1)
    # log P(class 0, 1 or 2) = logsumexp(logits[:, 0:3]) - logsumexp(logits), taken from log_probs.
    not_enhancing = torch.logsumexp(log_probs[:, :ENHANCING], dim=1)
    merged = torch.where(target == ENHANCING, log_probs[:, ENHANCING], not_enhancing)
    return torch.where(partial[:, None, None], merged, full)


def _check_inputs(
    logits: torch.Tensor, target: torch.Tensor, partial: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate shapes; return float32 logits, int64 target, and ``partial`` or None when all false."""
    if logits.ndim != 4 or logits.shape[1] != NUM_CLASSES:
        raise ValueError(f"logits must be (N, {NUM_CLASSES}, H, W), got {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must be {expected} for logits {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    if target.is_floating_point():
        raise ValueError(f"target must hold integer labels, got {target.dtype}")
    logits, target = logits.float(), target.long()
    if partial is None:
        return logits, target, None
    if partial.shape != (logits.shape[0],) or partial.dtype != torch.bool:
        raise ValueError(
            f"partial must be a bool tensor of shape ({logits.shape[0]},), "
            f"got {partial.dtype} of shape {tuple(partial.shape)}"
        )
    partial = partial.to(logits.device)
    if not partial.any():
        return logits, target, None
    if (partial[:, None, None] & (target != 0) & (target != ENHANCING)).any():
        raise ValueError("partial (enhancing-only) samples must have labels 0 or 3 only")
    return logits, target, partial
