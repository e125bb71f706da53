"""Whole-volume inference: a predictor from a checkpoint or registry URI; a study in, a mask out.

Pipeline for one study: load and validate (:mod:`bmcore.imaging`) → brain mask and z-score
(:mod:`bmcore.data.preprocess`) → the axial slices inside the brain, in batches, each with the 2.5D context
the model was trained with (neighbouring slices as channels): resized to the model's input size, or, for a
model trained on native-resolution crops, kept native and zero-padded to a multiple of its stride (run
fully convolutionally) → ``torch.inference_mode`` (optional left–right flip test-time augmentation) →
class probabilities back on the native grid (resized back, or the padding cut off), argmaxed batch by
batch → zero outside the brain → tumour components under the model's ``min_component_voxels`` removed →
mask written in the input's exact shape and affine, plus a lesion table (lesion = 26-connected component
of the tumour core, labels 1 and 3). What the model was trained with comes from its checkpoint
(:func:`bmcore.models.checkpoint.inference_recipe`); ``tta=None`` means the model's own default.

Speed (``bench/bench_inference.py``, ``bench/bench_models.py``): batch norms are folded into the
convolutions before them, activations are channels-last, and the model runs in bfloat16 where the
hardware does bfloat16 natively (CUDA autocast; on CPUs with AVX-512 BF16 or AMX, weights and
activations in bfloat16): argmax agreement with float32 is checked by the benchmark (≥ 99.9 % of
voxels). ``precision="fp32"`` gives the plain float32 path. On the CPU, glibc is told to keep freed
memory (:func:`keep_freed_memory`), so large activations do not fault in fresh pages every batch.
"""

from __future__ import annotations

import csv
import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from bmcore import imaging, metrics
from bmcore.data.postprocess import remove_small_components
from bmcore.data.preprocess import brain_mask, context_stack, normalize, probabilities_to_native
from bmcore.metrics import LESION_COLUMNS
from bmcore.models import load_checkpoint
from bmcore.models.checkpoint import inference_recipe
from bmcore.tracking import resolve_model
from bmcore.training.parts import resolve_device

PRECISIONS = ("auto", "fp32", "bf16")
BatchCallback = Callable[[int, int], None]


class InferenceCancelled(RuntimeError):
    """Raised when ``should_stop`` asks inference to stop between slice batches."""


@dataclass
class Predictor:
    """A model ready for inference, with the input size, modalities and recipe it was trained with."""

    model: torch.nn.Module
    arch: str
    size: int
    modalities: tuple[str, ...]
    device: torch.device
    source: str
    precision: str = "fp32"  # "bf16": bfloat16 autocast on CUDA, bfloat16 weights on CPU
    context_slices: int = 0  # k neighbouring slices on each side as extra channels
    native: bool = False  # crop-trained: native slices padded to ``multiple``, never resized
    multiple: int = 32
    min_component_voxels: int = 0  # smaller predicted tumour components are removed
    tta: bool = False  # flip test-time augmentation when a caller does not say

    def use_tta(self, tta: bool | None) -> bool:
        return self.tta if tta is None else bool(tta)


def load_predictor(ref: str | Path, device: str = "auto", precision: str = "auto") -> Predictor:
    """A predictor from a checkpoint path or a registry URI (``models:/bmseg-unet@champion``).

    ``precision="auto"`` picks bfloat16 on CUDA and on CPUs that do bfloat16 natively, else float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    ref = str(ref)
    if ref.startswith("models:/"):
        path = resolve_model(ref)
    else:
        path = Path(ref)
        if not path.is_file():
            raise FileNotFoundError(f"model {ref}: no such checkpoint file")
    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        keep_freed_memory()
    model, checkpoint = load_checkpoint(path, map_location=torch_device)
    if precision == "auto":
        precision = "bf16" if torch_device.type == "cuda" or cpu_has_native_bf16() else "fp32"
    model = fold_batch_norm(model.eval()).to(memory_format=torch.channels_last)
    if precision == "bf16" and torch_device.type == "cpu":
        model = model.to(torch.bfloat16)  # CPU autocast re-casts weights every call: slower
    recipe = inference_recipe(checkpoint)
    return Predictor(
        model=model,
        arch=checkpoint["arch"],
        size=int(recipe["size"]),
        modalities=recipe["modalities"],
        device=torch_device,
        source=ref,
        precision=precision,
        context_slices=int(recipe["context_slices"]),
        native=bool(recipe["native"]),
        multiple=int(recipe["multiple"]),
        min_component_voxels=int(recipe["min_component_voxels"]),
        tta=bool(recipe["tta"]),
    )


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (x86 AVX-512 BF16 or AMX; read from /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the system.

    By default every allocation over 32 MB gets fresh pages from the kernel, which must be zeroed and
    faulted in: the U-Net's activations at batch 16 (32–134 MB each) then cost ~0.5 ms per MB on every
    forward pass, ~15 % of CPU inference time (``bench/bench_models.py``). The price: the process keeps
    its peak heap. Process-wide and idempotent; returns False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold each batch norm that follows a convolution in an ``nn.Sequential`` into it (eval mode only).

    The same function up to float rounding, one pass over the activations fewer per convolution
    (~15 % of the U-Net's CPU time). Every architecture here builds its conv–BN pairs that way.
    """
    if model.training:
        raise ValueError("fold_batch_norm needs a model in eval mode")
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            for index in range(len(module) - 1):
                conv, norm = module[index], module[index + 1]
                if type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d:
                    module[index] = fuse_conv_bn_eval(conv, norm)
                    module[index + 1] = nn.Identity()
    return model


def _forward(predictor: Predictor, slices: np.ndarray | torch.Tensor, tta: bool) -> torch.Tensor:
    """Softmax probabilities ``(n, K, S, S)`` (float32, CPU) of one batch of ``(n, C, S, S)`` slices."""
    cpu_bf16 = predictor.precision == "bf16" and predictor.device.type == "cpu"
    batch = torch.as_tensor(slices).to(
        predictor.device, torch.bfloat16 if cpu_bf16 else torch.float32, memory_format=torch.channels_last
    )
    autocast = predictor.precision == "bf16" and predictor.device.type == "cuda"
    with torch.autocast(predictor.device.type, dtype=torch.bfloat16, enabled=autocast):
        probabilities = torch.softmax(predictor.model(batch).float(), dim=1)
        if tta:
            flipped = predictor.model(torch.flip(batch, dims=(2,))).float()
            probabilities = 0.5 * (probabilities + torch.flip(torch.softmax(flipped, dim=1), dims=(2,)))
    return probabilities.cpu()


def predict_probabilities(
    predictor: Predictor,
    slices: np.ndarray,
    batch_size: int = 16,
    tta: bool | None = None,
    on_batch: BatchCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Softmax probabilities ``(N, K, S, S)`` for ``(N, C, S, S)`` preprocessed slices."""
    tta = predictor.use_tta(tta)
    outputs = []
    total = max(1, -(-len(slices) // batch_size))
    with torch.inference_mode():
        for index, start in enumerate(range(0, len(slices), batch_size)):
            if should_stop is not None and should_stop():
                raise InferenceCancelled("inference cancelled")
            outputs.append(_forward(predictor, slices[start : start + batch_size], tta))
            if on_batch is not None:
                on_batch(index + 1, total)
    if not outputs:
        return np.zeros((0, 4, predictor.size, predictor.size), dtype=np.float32)
    return torch.cat(outputs).numpy()


def model_input(predictor: Predictor, image: np.ndarray, z: np.ndarray) -> torch.Tensor:
    """The model's input for slices ``z`` of a normalised ``(C, X, Y, Z)`` volume: ``(n, C', H, W)`` with
    the model's 2.5D context, resized to its size, or native and zero-padded (bottom, right) to a
    multiple of its stride for a crop-trained model."""
    stack = torch.from_numpy(context_stack(image, z, predictor.context_slices))
    if not predictor.native:
        size = (predictor.size, predictor.size)
        return torch.nn.functional.interpolate(stack, size=size, mode="bilinear", align_corners=False)
    pad_x, pad_y = (-side % predictor.multiple for side in stack.shape[2:])
    return torch.nn.functional.pad(stack, (0, pad_y, 0, pad_x))


def native_labels(
    predictor: Predictor, probabilities: torch.Tensor, native_xy: tuple[int, int]
) -> np.ndarray:
    """Labels ``(X, Y, n)`` on the native grid from ``(n, K, H, W)`` probabilities of :func:`model_input`."""
    if not predictor.native:
        return probabilities_to_native(probabilities.permute(1, 2, 3, 0), native_xy)
    cut = probabilities[:, :, : native_xy[0], : native_xy[1]]
    return cut.max(1).indices.permute(1, 2, 0).numpy().astype(np.uint8)


def predict_volume(
    predictor: Predictor,
    volume: imaging.Volume,
    batch_size: int = 16,
    tta: bool | None = None,
    on_batch: BatchCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Label map ``(X, Y, Z)`` in canonical orientation for a loaded study.

    The same preprocessing as training (:func:`bmcore.data.preprocess.preprocess_image`), done batch by
    batch on the slices inside the brain only: each batch is resized (or padded), predicted and mapped back
    to the native grid before the next, so no whole-volume probability array is ever held. Then the
    model's post-processing (``min_component_voxels``).
    """
    tta = predictor.use_tta(tta)
    mask = brain_mask(volume.image)
    image = normalize(volume.image, mask)
    brain_slices = np.flatnonzero(mask.any(axis=(0, 1)))
    labels = np.zeros(mask.shape, dtype=np.uint8)
    total = max(1, -(-len(brain_slices) // batch_size))
    with torch.inference_mode():
        for index, start in enumerate(range(0, len(brain_slices), batch_size)):
            if should_stop is not None and should_stop():
                raise InferenceCancelled("inference cancelled")
            z = brain_slices[start : start + batch_size]
            probabilities = _forward(predictor, model_input(predictor, image, z), tta)  # n, K, H, W
            labels[..., z] = native_labels(predictor, probabilities, mask.shape[:2])
            if on_batch is not None:
                on_batch(index + 1, total)
    labels[~mask] = 0
    return remove_small_components(labels, predictor.min_component_voxels)


def lesion_rows(mask: np.ndarray, volume: imaging.Volume) -> list[dict]:
    """The lesion table of a canonical mask, with centroids in the input's scanner coordinates (mm)."""

    def to_world(centroid: np.ndarray) -> np.ndarray:
        return volume.affine @ np.append(_canonical_to_native_voxel(centroid, volume), 1.0)

    return metrics.lesion_rows(mask, volume.spacing, to_world)


def _canonical_to_native_voxel(point: np.ndarray, volume: imaging.Volume) -> np.ndarray:
    """Map a voxel coordinate from canonical (RAS-reoriented) axes back to the file's voxel axes."""
    native = np.empty(3)
    for native_axis, (canonical_axis, direction) in enumerate(volume.orientation.astype(int)):
        coordinate = point[canonical_axis]
        if direction < 0:
            coordinate = volume.native_shape[native_axis] - 1 - coordinate
        native[native_axis] = coordinate
    return native


def write_lesion_table(rows: list[dict], path: str | Path) -> Path:
    """Write the lesion table as CSV (columns :data:`LESION_COLUMNS`), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LESION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    temp.replace(path)
    return path


@dataclass
class SegmentResult:
    """What :func:`segment_study` wrote (mask, lesion table) and the voxel count of each label."""

    study_id: str
    mask_path: Path
    lesions_path: Path
    lesions: list[dict]
    label_voxels: dict[str, int]


def segment_study(
    predictor: Predictor,
    ref: imaging.StudyRef,
    out_dir: str | Path,
    batch_size: int = 16,
    tta: bool | None = None,
    on_batch: BatchCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SegmentResult:
    """Segment one study; writes ``<study>_seg.nii.gz`` and ``<study>_lesions.csv`` into ``out_dir``.

    ``tta`` None: the model's own default (``TrainConfig.tta``, False for older checkpoints)."""
    volume = imaging.load_study(ref, modalities=predictor.modalities, with_label=False)
    mask = predict_volume(predictor, volume, batch_size, tta, on_batch, should_stop)
    out_dir = Path(out_dir)
    rows = lesion_rows(mask, volume)
    mask_path = imaging.save_mask(mask, volume, out_dir / f"{ref.study_id}_seg.nii.gz")
    lesions_path = write_lesion_table(rows, out_dir / f"{ref.study_id}_lesions.csv")
    counts = {metrics.LABELS[k]: int((mask == k).sum()) for k in range(1, 4)}
    return SegmentResult(ref.study_id, mask_path, lesions_path, rows, counts)
