"""Segmentation architectures, the registry that builds them by name, and their checkpoints.

Every model maps (N, 4, H, W) slices (T1, T1ce, T2, FLAIR) to logits (N, 4, H, W) and keeps its
constructor arguments in ``init_args``, so a checkpoint rebuilds the model from the file alone.
Modules: :mod:`.registry` (``MODELS``, :func:`build_model`), :mod:`.checkpoint` (the checkpoint file),
:mod:`.blocks` (pieces the architectures share), one module per architecture.
"""

from bmcore.models.checkpoint import CHECKPOINT_FORMAT_VERSION, bare_model, load_checkpoint, save_checkpoint
from bmcore.models.cnn import SegmentationCNN
from bmcore.models.fcn import FCN8s
from bmcore.models.registry import MODELS, build_model
from bmcore.models.unet import AttentionUNet

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "MODELS",
    "AttentionUNet",
    "FCN8s",
    "SegmentationCNN",
    "bare_model",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
]
