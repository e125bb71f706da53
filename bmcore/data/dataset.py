"""Memory-bounded data feeding: preprocessed studies cached on disk, axial slices read one at a time.

``prepare_case`` preprocesses a study once and stores it under ``cache_dir/<content hash>/`` as raw
little-endian arrays laid out slice-major (``image.f16``: ``(Z, C, S, S)`` float16; ``label.u8``:
``(Z, S, S)``), so one axial slice is one contiguous ``pread``. Nothing is memory-mapped and nothing
holds a whole study, so an epoch's resident memory stays flat however large the cohort.
The cache key is a SHA-256 over the input files' contents and the preprocessing parameters.
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
from bmcore.data.preprocess import DEFAULT_CLIP, DEFAULT_SIZE, preprocess_image, resize_label

CACHE_VERSION = 1


@dataclass(frozen=True)
class CachedCase:
    """A preprocessed study on disk."""

    directory: Path
    study_id: str
    patient_id: str
    channels: int
    size: int
    depth: int
    partial: bool
    has_label: bool
    brain_slices: tuple[int, ...]
    lesion_slices: tuple[int, ...]

    def read_slice(self, z: int, fds: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """One axial slice: image ``(C, S, S)`` float32 and label ``(S, S)`` uint8 (or None)."""
        plane = self.size * self.size
        image = np.frombuffer(self._pread("image.f16", self.channels * plane * 2, z, fds), dtype="<f2")
        image = image.reshape(self.channels, self.size, self.size).astype(np.float32)
        label = None
        if self.has_label:
            label = np.frombuffer(self._pread("label.u8", plane, z, fds), dtype=np.uint8)
            label = label.reshape(self.size, self.size).copy()
        return image, label

    def _pread(self, name: str, nbytes: int, z: int, fds: dict | None) -> bytes:
        path = str(self.directory / name)
        if fds is None:
            with open(path, "rb") as handle:
                return os.pread(handle.fileno(), nbytes, z * nbytes)
        if path not in fds:
            fds[path] = os.open(path, os.O_RDONLY)
        return os.pread(fds[path], nbytes, z * nbytes)


def content_key(ref: imaging.StudyRef, modalities: tuple[str, ...], size: int, clip: float) -> str:
    """Hash of the input files' contents, the preprocessing parameters and what the cached meta records
    about the study (its ids and label kind: two copies of one scan under different ids stay apart)."""
    identity = f"{ref.study_id}|{ref.patient_id}|{ref.label_kind}|{sorted(ref.label_map.items())}"
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{modalities}|{size}|{clip}|{identity}".encode())
    for path in [ref.images[m] for m in modalities] + ([ref.label] if ref.label else []):
        digest.update(imaging.file_sha256(path).encode())
    return digest.hexdigest()[:32]


def prepare_case(
    ref: imaging.StudyRef,
    cache_dir: str | Path,
    modalities: tuple[str, ...] = imaging.MODALITIES,
    size: int = DEFAULT_SIZE,
    clip: float = DEFAULT_CLIP,
) -> CachedCase:
    """Preprocess a study into the cache (once; later calls find it by content hash)."""
    cache_dir = Path(cache_dir)
    directory = cache_dir / content_key(ref, modalities, size, clip)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        volume = imaging.load_study(ref, modalities=modalities)
        image, mask = preprocess_image(volume.image, size, clip)
        brain = mask.any(axis=(0, 1))
        label = resize_label(volume.label, size) if volume.label is not None else None
        lesion = (label > 0).any(axis=(0, 1)) if label is not None else np.zeros_like(brain)
        cache_dir.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".tmp-"))
        try:
            np.ascontiguousarray(image.transpose(3, 0, 1, 2), dtype="<f2").tofile(temp / "image.f16")
            if label is not None:
                np.ascontiguousarray(label.transpose(2, 0, 1), dtype=np.uint8).tofile(temp / "label.u8")
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
                "spacing": list(volume.spacing),
            }
            (temp / "meta.json").write_text(json.dumps(meta))
            try:
                os.replace(temp, directory)
            except OSError:  # another process cached the same study first
                shutil.rmtree(temp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    meta = json.loads(meta_path.read_text())
    return CachedCase(
        directory,
        meta["study_id"],
        meta["patient_id"],
        meta["channels"],
        meta["size"],
        meta["depth"],
        meta["partial"],
        meta["has_label"],
        tuple(meta["brain_slices"]),
        tuple(meta["lesion_slices"]),
    )


class SliceDataset(Dataset):
    """Axial slices (inside the brain) of cached cases: ``(image (C,S,S), label (S,S), partial)``.

    Only labelled cases are accepted. File descriptors are opened lazily in the process that reads, so
    the dataset is safe to hand to ``DataLoader`` workers.
    """

    def __init__(self, cases: list[CachedCase], augment: bool = False, seed: int = 0):
        unlabelled = [c.study_id for c in cases if not c.has_label]
        if unlabelled:
            raise ValueError(f"studies without labels cannot be used for training: {', '.join(unlabelled)}")
        self.cases = cases
        self.items = [(i, z) for i, case in enumerate(cases) for z in case.brain_slices]
        lesion_slices = [set(case.lesion_slices) for case in cases]
        self.lesion_items = np.array([z in lesion_slices[i] for i, z in self.items], dtype=bool)
        self.augment = augment
        self.seed = seed
        self._fds: dict[str, int] = {}
        self._pid = os.getpid()
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _state(self) -> tuple[dict, np.random.Generator]:
        if self._pid != os.getpid() or self._rng is None:
            self._fds, self._pid = {}, os.getpid()
            info = torch.utils.data.get_worker_info()
            self._rng = np.random.default_rng(
                [self.seed, info.id if info else 0, torch.initial_seed() % 2**32]
            )
        return self._fds, self._rng

    def __getitem__(self, index: int):
        fds, rng = self._state()
        case_index, z = self.items[index]
        case = self.cases[case_index]
        image, label = case.read_slice(z, fds)
        if self.augment:
            image, label = augment_slice(image, label, rng)
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
    """Draw slices so that about ``lesion_fraction`` of each epoch shows a lesion (balanced batches)."""
    if not 0.0 <= lesion_fraction <= 1.0:
        raise ValueError("lesion oversampling fraction must be within [0, 1]")
    has = dataset.lesion_items
    n_lesion, n_other = int(has.sum()), int((~has).sum())
    weights = np.ones(len(has), dtype=np.float64)
    if n_lesion and n_other:
        weights[has] = lesion_fraction / n_lesion
        weights[~has] = (1.0 - lesion_fraction) / n_other
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        torch.as_tensor(weights), num_samples or len(has), replacement=True, generator=generator
    )
