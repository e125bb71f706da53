"""Segmentation losses on logits (N, 4, H, W) and integer labels (N, H, W), with partial labels.

Labels follow docs/design.md §2: 0 background, 1 necrotic core, 2 edema, 3 enhancing tumour.
A *partial* sample (``partial[n]`` true) has only a binary enhancing mask: 3 = enhancing,
0 = "not enhancing" (background, necrosis or edema alike). For those samples the probabilities of
classes 0, 1 and 2 are summed into one class before the likelihood is taken, computed in log space as
``logsumexp(logits[:, 0:3]) - logsumexp(logits)``, so the model is never taught that edema or
necrosis is background; the Dice term of such a sample scores the enhancing class alone.
Every loss is a mean over all voxels of full and partial samples alike.

Class weights (``weight``, one per class, ``TrainConfig.class_weights``) make the cross-entropy a weighted
mean, as ``F.cross_entropy(weight=...)``: ``Σ w[t] · nll / Σ w[t]`` over the voxels; a partial sample's
"not enhancing" voxels take the background's weight. The Dice term is never weighted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bmcore.training.config import LOSSES as LOSS_NAMES

ENHANCING = 3
NUM_CLASSES = 4

LossFunction = Callable[..., torch.Tensor]


def cross_entropy_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    partial: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Categorical cross-entropy (the study's loss), averaged over every voxel (weighted by ``weight``).

    ``partial`` (bool, shape (N,)) marks samples with binary enhancing-only labels (0 or 3); for
    them the loss is the two-class cross-entropy of enhancing versus classes 0-2 merged.
    """
    logits, target, partial = _check_inputs(logits, target, partial)
    return _cross_entropy(logits, target, partial, weight)


def _cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, partial: torch.Tensor | None, weight: torch.Tensor | None
) -> torch.Tensor:
    if weight is not None:
        weight = weight.to(logits.device, logits.dtype)
    if partial is None:
        return F.cross_entropy(logits, target, weight=weight)
    nll = -_log_likelihood(logits, target, partial)
    if weight is None:
        return nll.mean()
    voxel_weight = weight[target]  # partial samples hold 0 ("not enhancing": background's weight) or 3
    return (voxel_weight * nll).sum() / voxel_weight.sum()


def dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    partial: torch.Tensor | None = None,
    smooth: float = 1.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft Dice loss over foreground classes 1-3 plus cross-entropy.

    Dice is computed per class over the whole batch (sums over samples and voxels, as nnU-Net's
    ``batch_dice``), then averaged over the classes that have at least one sample to score them:
    classes 1 and 2 count full samples only, class 3 counts all. ``smooth`` is added to numerator
    and denominator, so a class absent from target and prediction scores 1. ``weight`` (class weights)
    weights the cross-entropy term only.
    """
    logits, target, partial = _check_inputs(logits, target, partial)
    cross_entropy = _cross_entropy(logits, target, partial, weight)
    foreground = torch.softmax(logits, dim=1)[:, 1:]
    truth = F.one_hot(target, NUM_CLASSES).permute(0, 3, 1, 2)[:, 1:].to(foreground.dtype)
    intersection = (foreground * truth).sum(dim=(2, 3))
    total = foreground.sum(dim=(2, 3)) + truth.sum(dim=(2, 3))
    counted = torch.ones_like(intersection)  # which (sample, class) pairs the Dice term scores
    if partial is not None:
        counted[:, : ENHANCING - 1] = (~partial).to(counted.dtype)[:, None]
    dice = (2 * (counted * intersection).sum(0) + smooth) / ((counted * total).sum(0) + smooth)
    scored = counted.sum(0) > 0
    dice_loss = 1 - (dice * scored).sum() / scored.sum()
    return cross_entropy + dice_loss


_FUNCTIONS: dict[str, LossFunction] = {"ce": cross_entropy_loss, "dice_ce": dice_ce_loss}
assert set(_FUNCTIONS) == set(LOSS_NAMES), (
    f"LOSSES {LOSS_NAMES} and the loss functions {sorted(_FUNCTIONS)} disagree"
)
LOSSES: dict[str, LossFunction] = {name: _FUNCTIONS[name] for name in LOSS_NAMES}


def build_loss(name: str, class_weights: Sequence[float] | None = None) -> LossFunction:
    """Return the loss registered as ``name``: ``loss(logits, target, partial=None) -> scalar``, its
    cross-entropy weighted by ``class_weights`` (one per class) when given."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    if class_weights is None:
        return LOSSES[name]
    if len(class_weights) != NUM_CLASSES:
        raise ValueError(f"class weights need {NUM_CLASSES} values, got {len(class_weights)}")
    return functools.partial(LOSSES[name], weight=torch.tensor(list(class_weights), dtype=torch.float32))


def resolve_class_weights(
    spec: str | tuple[float, ...] | None, class_voxels: Sequence[int] | None = None
) -> list[float] | None:
    """The weights a parsed ``TrainConfig.class_weights`` means (None: unweighted).

    ``inverse_frequency`` needs the voxel count of each class over the training slices: each present
    class gets ``1 / frequency``, normalised to a mean of 1 over the present classes; absent classes 0.
    """
    if spec is None or isinstance(spec, tuple):
        return None if spec is None else [float(w) for w in spec]
    if spec != "inverse_frequency":
        raise ValueError(f"unknown class weighting {spec!r}")
    if class_voxels is None:
        raise ValueError("inverse_frequency class weights need the training slices' class voxel counts")
    counts = np.asarray(class_voxels, dtype=np.float64)
    present = counts > 0
    weights = np.zeros(NUM_CLASSES)
    weights[present] = counts.sum() / counts[present]
    weights[present] /= weights[present].mean()
    return [float(w) for w in weights]


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
