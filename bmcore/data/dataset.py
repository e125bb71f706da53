"""Memory-bounded data feeding: preprocessed studies cached on disk, axial slices read a window at a time.

``prepare_case`` preprocesses a study once and stores it under ``cache_dir/<content hash>/`` as raw
little-endian arrays laid out slice-major (``image.f16``: ``(Z, C, X, Y)`` float16; ``label.u8``:
``(Z, X, Y)``), in-plane resized to ``size × size`` or, with ``size`` 0, at the native in-plane grid (for
crop training). A read takes only what a sample needs with ``pread``: one contiguous read for a whole
slice and its 2.5D neighbours (adjacent in the file), and for a crop the rows it spans of each plane.
Nothing is memory-mapped on purpose: mapped pages a process has touched count in its resident memory,
which would grow towards the whole cache over an epoch; reads keep an epoch's resident memory flat
however large the cohort. The cache key is a SHA-256 over the input files' contents and the
preprocessing parameters.

:class:`SliceDataset` serves whole slices (padded to a common shape that is a multiple of the model's
``multiple``) or, with ``crop``, ``crop × crop`` windows: a lesion item (see :func:`lesion_sampler`) is
centred on a random lesion voxel of its slice, any other on a random point of the brain's bounding box,
the window shifted to stay inside the slice where it fits and zero-padded where it does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from bmcore import imaging
from bmcore.data.augment import augment_slice
from bmcore.data.lesion_balance import lesion_centre, slice_weights
from bmcore.data.preprocess import DEFAULT_CLIP, DEFAULT_SIZE, preprocess_image, resize_label

CACHE_VERSION = 2
Window = tuple[int, int, int, int]  # x0, y0, height, width (may reach beyond the slice: zeros there)


@dataclass(frozen=True)
class CachedCase:
    """A preprocessed study on disk; ``shape`` is the stored in-plane grid, ``spacing`` its voxel size."""

    directory: Path
    study_id: str
    patient_id: str
    channels: int
    size: int  # 0: native in-plane grid
    depth: int
    partial: bool
    has_label: bool
    brain_slices: tuple[int, ...]
    lesion_slices: tuple[int, ...]
    shape: tuple[int, int]
    brain_box: tuple[int, int, int, int]  # in-plane x0, x1, y0, y1 (ends exclusive) over all slices
    spacing: tuple[float, float, float]

    def read_slice(self, z: int, fds: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """One axial slice: image ``(C, X, Y)`` float32 and label ``(X, Y)`` uint8 (or None)."""
        return self.read(z, fds=fds)

    def read(
        self, z: int, context: int = 0, window: Window | None = None, fds: dict | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Slice ``z`` with ``context`` neighbours on each side, in ``window`` (default: the whole slice).

        Returns image ``((2k + 1) · C, h, w)`` float32 (channels slice-major, as
        :func:`bmcore.data.preprocess.context_stack`) and the centre slice's label ``(h, w)`` (or None);
        what lies beyond the volume reads as zeros.
        """
        x0, y0, height, width = window or (0, 0, *self.shape)
        planes = self._block("image.f16", self.channels, (z - context, z + context + 1), (x0, height), fds)
        image = _columns(planes, y0, width).astype(np.float32).reshape(-1, height, width)
        return image, self.read_label(z, window, fds) if self.has_label else None

    def read_labels(self) -> np.ndarray:
        """Every slice's label, ``(Z, X, Y)`` uint8, in one read."""
        return np.fromfile(self.directory / "label.u8", dtype=np.uint8).reshape(self.depth, *self.shape)

    def read_label(self, z: int, window: Window | None = None, fds: dict | None = None) -> np.ndarray:
        """The label of slice ``z`` in ``window`` (default: the whole slice), ``(h, w)`` uint8."""
        x0, y0, height, width = window or (0, 0, *self.shape)
        return _columns(self._block("label.u8", 1, (z, z + 1), (x0, height), fds), y0, width)[0, 0]

    def _block(
        self, name: str, channels: int, z_range: tuple[int, int], rows: tuple[int, int], fds: dict | None
    ) -> np.ndarray:
        """Planes ``z_range`` of ``channels`` each, rows ``x0 … x0 + height`` (``rows``) at full width:
        ``(nz, channels, height, Y)``, zeros where they lie beyond the volume."""
        dtype = np.dtype("<f2" if name == "image.f16" else np.uint8)
        (x0, height), (extent, columns) = rows, self.shape
        out = np.zeros((z_range[1] - z_range[0], channels, height, columns), dtype=dtype)
        z0, z1 = max(z_range[0], 0), min(z_range[1], self.depth)
        r0, r1 = max(x0, 0), min(x0 + height, extent)
        if z0 >= z1 or r0 >= r1:
            return out
        row_bytes = columns * dtype.itemsize
        first, planes = z0 * channels, (z1 - z0) * channels  # (z, channel) planes, in file order
        target = out[z0 - z_range[0] : z1 - z_range[0]].reshape(planes, height, columns)[:, r0 - x0 : r1 - x0]
        if (r0, r1) == (0, extent):  # whole planes: adjacent in the file, one read
            raw = self._pread(name, planes * extent * row_bytes, first * extent * row_bytes, fds)
            target[:] = np.frombuffer(raw, dtype).reshape(planes, extent, columns)
            return out
        for plane in range(planes):  # the rows of each plane are adjacent: one read a plane
            raw = self._pread(name, (r1 - r0) * row_bytes, ((first + plane) * extent + r0) * row_bytes, fds)
            target[plane] = np.frombuffer(raw, dtype).reshape(r1 - r0, columns)
        return out

    def _pread(self, name: str, nbytes: int, offset: int, fds: dict | None) -> bytes:
        path = str(self.directory / name)
        if fds is None:
            with open(path, "rb") as handle:
                return os.pread(handle.fileno(), nbytes, offset)
        if path not in fds:
            fds[path] = os.open(path, os.O_RDONLY)
        return os.pread(fds[path], nbytes, offset)


def _columns(block: np.ndarray, y0: int, width: int) -> np.ndarray:
    """Columns ``y0 … y0 + width`` of the last axis, zeros beyond it."""
    columns = block.shape[-1]
    if (y0, width) == (0, columns):
        return block
    out = np.zeros((*block.shape[:-1], width), dtype=block.dtype)
    c0, c1 = max(y0, 0), min(y0 + width, columns)
    if c0 < c1:
        out[..., c0 - y0 : c1 - y0] = block[..., c0:c1]
    return out


def content_key(ref: imaging.StudyRef, modalities: tuple[str, ...], size: int, clip: float) -> str:
    """Hash of the input files' contents, the preprocessing parameters and what the cached meta records
    about the study (its ids and label kind: two copies of one scan under different ids stay apart)."""
    identity = f"{ref.study_id}|{ref.patient_id}|{ref.label_kind}|{sorted(ref.label_map.items())}"
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{modalities}|{size}|{clip}|{identity}".encode())
    for path in [ref.images[m] for m in modalities] + ([ref.label] if ref.label else []):
        digest.update(imaging.file_sha256(path).encode())
    return digest.hexdigest()[:32]


def _brain_box(mask: np.ndarray, shape: tuple[int, int]) -> list[int]:
    """The in-plane bounding box of the native brain ``mask``, on a grid of ``shape`` (x0, x1, y0, y1)."""
    xs, ys = np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(mask.any(axis=(0, 2)))
    box = []
    for found, native, stored in ((xs, mask.shape[0], shape[0]), (ys, mask.shape[1], shape[1])):
        box += [int(found[0] * stored // native), int(-(-(found[-1] + 1) * stored // native))]
    return box


def _write_case(ref: imaging.StudyRef, temp: Path, modalities: tuple[str, ...], size: int, clip: float):
    """Preprocess ``ref`` and write its arrays and ``meta.json`` into the folder ``temp``."""
    volume = imaging.load_study(ref, modalities=modalities)
    image, mask = preprocess_image(volume.image, size, clip)
    brain = mask.any(axis=(0, 1))
    label = volume.label
    if label is not None and size:
        label = resize_label(label, size)
    lesion = (label > 0).any(axis=(0, 1)) if label is not None else np.zeros_like(brain)
    np.ascontiguousarray(image.transpose(3, 0, 1, 2), dtype="<f2").tofile(temp / "image.f16")
    if label is not None:
        np.ascontiguousarray(label.transpose(2, 0, 1), dtype=np.uint8).tofile(temp / "label.u8")
    shape = [int(image.shape[1]), int(image.shape[2])]
    native = volume.image.shape[1:3]
    spacing = [float(s) * n / m for s, n, m in zip(volume.spacing[:2], native, shape, strict=True)]
    meta = {
        "study_id": ref.study_id,
        "patient_id": ref.patient_id,
        "channels": len(modalities),
        "size": size,
        "depth": int(image.shape[3]),
        "partial": ref.label_kind == "enhancing",
        "has_label": label is not None,
        "brain_slices": np.flatnonzero(brain).tolist(),
        "lesion_slices": np.flatnonzero(lesion).tolist(),
        "shape": shape,
        "brain_box": _brain_box(mask, tuple(shape)),
        "spacing": [*spacing, float(volume.spacing[2])],
    }
    (temp / "meta.json").write_text(json.dumps(meta))


def prepare_case(
    ref: imaging.StudyRef,
    cache_dir: str | Path,
    modalities: tuple[str, ...] = imaging.MODALITIES,
    size: int = DEFAULT_SIZE,
    clip: float = DEFAULT_CLIP,
) -> CachedCase:
    """Preprocess a study into the cache (once; later calls find it by content hash); ``size`` 0 keeps
    the native in-plane grid."""
    cache_dir = Path(cache_dir)
    directory = cache_dir / content_key(ref, modalities, size, clip)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".tmp-"))
        try:
            _write_case(ref, temp, modalities, size, clip)
            try:
                os.replace(temp, directory)
            except OSError:  # another process cached the same study first
                shutil.rmtree(temp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    meta = json.loads(meta_path.read_text())
    tuples = ("brain_slices", "lesion_slices", "shape", "brain_box", "spacing")
    return CachedCase(directory, **{key: tuple(v) if key in tuples else v for key, v in meta.items()})


def class_voxel_counts(cases: list[CachedCase], num_classes: int = 4) -> np.ndarray:
    """Voxels of each label over the brain slices of labelled ``cases`` (inverse-frequency class weights)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for case in cases:
        if case.has_label and case.brain_slices:
            brain = case.read_labels()[list(case.brain_slices)].ravel()
            counts += np.bincount(brain, minlength=num_classes)[:num_classes]
    return counts


def crop_start(centre: int, crop: int, extent: int) -> int:
    """Where a ``crop``-long window centred on ``centre`` starts: shifted to lie inside ``[0, extent)``
    when it fits, else centred on the extent (zero-padded on both sides)."""
    if extent < crop:
        return (extent - crop) // 2
    return int(np.clip(centre - crop // 2, 0, extent - crop))


class SliceDataset(Dataset):
    """Axial slices (inside the brain) of cached cases: ``(image ((2k+1)·C, H, W), label (H, W), partial)``.

    Whole slices are zero-padded (bottom and right) to the largest stored shape rounded up to a multiple
    of ``multiple``; with ``crop``, ``crop × crop`` windows as the module docstring says. Only labelled
    cases are accepted. File descriptors are opened lazily in the process that reads, so the dataset is
    safe to hand to ``DataLoader`` workers.
    """

    def __init__(
        self,
        cases: list[CachedCase],
        augment: bool = False,
        seed: int = 0,
        context: int = 0,
        crop: int = 0,
        multiple: int = 1,
        lesion_balance: bool = False,
    ):
        unlabelled = [c.study_id for c in cases if not c.has_label]
        if unlabelled:
            raise ValueError(f"studies without labels cannot be used for training: {', '.join(unlabelled)}")
        self.cases = cases
        self.items = [(i, z) for i, case in enumerate(cases) for z in case.brain_slices]
        lesion_slices = [set(case.lesion_slices) for case in cases]
        self.lesion_items = np.array([z in lesion_slices[i] for i, z in self.items], dtype=bool)
        self.augment, self.seed, self.context, self.crop = augment, seed, context, crop
        self.lesion_balance = lesion_balance
        # how often lesion_sampler draws each lesion item relative to the others (see lesion_balance.py)
        self.lesion_weights = self._lesion_weights() if lesion_balance else self.lesion_items.astype(float)
        largest = np.max([case.shape for case in cases], axis=0) if cases else np.zeros(2, int)
        self.pad_shape = tuple(int(-(-side // multiple) * multiple) for side in largest)
        self._fds: dict[str, int] = {}
        self._pid = os.getpid()
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _lesion_weights(self) -> np.ndarray:
        """Per item, its slice's share of the lesions it shows (:func:`lesion_balance.slice_weights`)."""
        per_case = []
        for case in self.cases:
            per_case.append(slice_weights(case.read_labels().transpose(1, 2, 0)))
        return np.array([per_case[i][z] for i, z in self.items], dtype=np.float64)

    def _state(self) -> tuple[dict, np.random.Generator]:
        if self._pid != os.getpid() or self._rng is None:
            self._fds, self._pid = {}, os.getpid()
            info = torch.utils.data.get_worker_info()
            self._rng = np.random.default_rng(
                [self.seed, info.id if info else 0, torch.initial_seed() % 2**32]
            )
        return self._fds, self._rng

    def crop_window(self, index: int, rng: np.random.Generator, fds: dict | None = None) -> Window:
        """The crop of item ``index``: on a random lesion voxel of a lesion item's slice, else on a random
        point of the case's brain bounding box."""
        case_index, z = self.items[index]
        case = self.cases[case_index]
        if self.lesion_items[index] and self.lesion_balance:
            cx, cy = lesion_centre(case.read_label(z, fds=fds), rng)
        elif self.lesion_items[index]:
            label = case.read_label(z, fds=fds)
            cx, cy = np.unravel_index(rng.choice(np.flatnonzero(label)), label.shape)
        else:
            x0, x1, y0, y1 = case.brain_box
            cx, cy = rng.integers(x0, max(x1, x0 + 1)), rng.integers(y0, max(y1, y0 + 1))
        x0, y0 = (crop_start(int(c), self.crop, n) for c, n in zip((cx, cy), case.shape, strict=True))
        return x0, y0, self.crop, self.crop

    def __getitem__(self, index: int):
        fds, rng = self._state()
        case_index, z = self.items[index]
        case = self.cases[case_index]
        window = self.crop_window(index, rng, fds) if self.crop else (0, 0, *self.pad_shape)
        image, label = case.read(z, self.context, window, fds)
        if self.augment:
            image, label = augment_slice(image, label, rng, modalities=case.channels)
        return (
            torch.from_numpy(np.ascontiguousarray(image)),
            torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)),
            torch.tensor(case.partial),
        )

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)


def lesion_sampler(
    dataset: SliceDataset, lesion_fraction: float, num_samples: int | None = None, seed: int = 0
) -> WeightedRandomSampler:
    """Draw slices so that about ``lesion_fraction`` of each epoch shows a lesion (balanced batches); with
    crops, a lesion slice's crop is centred on one of its lesion voxels, so the share holds for crops too.
    Lesion slices are drawn in proportion to ``dataset.lesion_weights`` (alike, or lesion-balanced)."""
    if not 0.0 <= lesion_fraction <= 1.0:
        raise ValueError("lesion oversampling fraction must be within [0, 1]")
    has = dataset.lesion_items
    n_lesion, n_other = int(has.sum()), int((~has).sum())
    weights = np.ones(len(has), dtype=np.float64)
    if n_lesion and n_other:
        lesion_weights = dataset.lesion_weights[has]
        weights[has] = lesion_fraction * lesion_weights / lesion_weights.sum()
        weights[~has] = (1.0 - lesion_fraction) / n_other
    elif n_lesion:  # every slice shows a lesion: only the lesion weights shape the draws
        weights = dataset.lesion_weights / dataset.lesion_weights.sum()
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        torch.as_tensor(weights), num_samples or len(has), replacement=True, generator=generator
    )
