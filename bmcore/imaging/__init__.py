"""The one I/O boundary: the only module that imports nibabel.

Axis order and geometry
-----------------------
Files are read as nibabel gives them, ``(i, j, k)`` voxel axes with the file's affine. For processing,
every volume is reoriented to the closest canonical **RAS** orientation (pure axis flips and
permutations, no resampling), so the last axis is always inferior→superior and an axial slice is
``array[..., z]``. :class:`Volume` keeps the native affine, shape and orientation, and
:func:`save_mask` undoes the reorientation exactly, so a written mask has the input's shape and affine.
``spacing`` is given in the canonical axis order, in millimetres, and comes from the affine (the voxel
sizes every other use of the geometry sees), not from ``pixdim``, which an sform-only file may leave stale.

Layouts (DESIGN.md §3)
----------------------
* UCSF-BMSR: ``<root>/<ID>/<ID>_{T1pre,T1post,T2Synth,FLAIR}.nii.gz``; labels ``<ID>_BraTS-seg`` (1/2/3)
  preferred over ``<ID>_seg`` (0/1 enhancing, mapped 1 → 3). Patient = first 6 digits of ``<ID>``.
* BraTS-METS: ``<root>/BraTS-MET-XXXXX-YYY/BraTS-MET-XXXXX-YYY-{t1n,t1c,t2w,t2f,seg}.nii.gz``;
  patient ``XXXXX``.
* CSV manifest: ``patient_id, study_id, t1, t1ce, t2, flair[, seg][, label_map][, label_kind]``, paths
  relative to the CSV; ``label_map`` like ``"3:1 4:3"`` maps source label values onto bmseg's.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
LABEL_VALUES = (0, 1, 2, 3)
UCSF_SUFFIX = {"t1": "T1pre", "t1ce": "T1post", "t2": "T2Synth", "flair": "FLAIR"}
BRATS_SUFFIX = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
UCSF_ID = re.compile(r"^(\d{6})[A-Za-z]*$")
BRATS_ID = re.compile(r"^BraTS-MET-(\d{5})-(\d{3})$")
FREE_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")
AFFINE_TOLERANCE = 1e-3

LabelKind = Literal["multiclass", "enhancing"]


class StudyError(ValueError):
    """A study that cannot be used; the message is one line that says what is wrong and where."""


@dataclass(frozen=True)
class StudyRef:
    """Where a study's files are; nothing is read until :func:`load_study`."""

    study_id: str
    patient_id: str
    layout: str
    images: dict[str, Path]
    label: Path | None = None
    label_kind: LabelKind | None = None
    label_map: dict[int, int] = field(default_factory=dict)
    directory: Path | None = None


@dataclass
class Volume:
    """A loaded study in canonical RAS orientation; ``image`` is ``(C, X, Y, Z)`` float32."""

    ref: StudyRef
    modalities: tuple[str, ...]
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray
    native_shape: tuple[int, int, int]
    orientation: np.ndarray
    header: nib.Nifti1Header

    @property
    def study_id(self) -> str:
        return self.ref.study_id

    @property
    def patient_id(self) -> str:
        return self.ref.patient_id


# ---------------------------------------------------------------------------------------------- finding


def find_studies(root: str | Path) -> list[StudyRef]:
    """Every study under ``root``: a data set folder, one study folder, or a CSV manifest."""
    root = Path(root)
    if not root.exists():
        raise StudyError(f"{root}: no such file or directory")
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return read_manifest(root)
        raise StudyError(f"{root}: expected a data folder, a study folder or a CSV manifest")
    manifest = root / "manifest.csv"
    if manifest.is_file():
        return read_manifest(manifest)
    if _study_layout(root):
        return [study_from_dir(root)]
    studies = [study_from_dir(d) for d in sorted(root.iterdir()) if d.is_dir() and _study_layout(d)]
    if not studies:
        raise StudyError(
            f"{root}: no studies found (expected UCSF-BMSR or BraTS-METS folders, or manifest.csv)"
        )
    return studies


def _study_layout(directory: Path) -> str | None:
    names = [p.name for p in directory.glob("*.nii*")]
    if any(re.search(r"_(T1pre|T1post|T2Synth|FLAIR)\.nii(\.gz)?$", n) for n in names):
        return "ucsf"
    if any(re.search(r"-(t1n|t1c|t2w|t2f)\.nii(\.gz)?$", n) for n in names):
        return "brats"
    return None


def _find_file(directory: Path, stem: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        candidate = directory / f"{stem}{ext}"
        if candidate.exists():
            return candidate
    return None


def study_from_dir(directory: str | Path) -> StudyRef:
    """A study folder in the UCSF-BMSR or BraTS-METS layout; missing files are reported at load time."""
    directory = Path(directory)
    layout = _study_layout(directory)
    study_id = directory.name
    if layout == "ucsf":
        match = UCSF_ID.match(study_id)
        patient_id = match.group(1) if match else study_id
        images = {
            m: _find_file(directory, f"{study_id}_{s}") or directory / f"{study_id}_{s}.nii.gz"
            for m, s in UCSF_SUFFIX.items()
        }
        brats_seg = _find_file(directory, f"{study_id}_BraTS-seg")
        binary_seg = _find_file(directory, f"{study_id}_seg")
        if brats_seg is not None:
            label, kind = brats_seg, "multiclass"
        elif binary_seg is not None:
            label, kind = binary_seg, "enhancing"
        else:
            label, kind = None, None
        return StudyRef(study_id, patient_id, "ucsf", images, label, kind, {}, directory)
    if layout == "brats":
        match = BRATS_ID.match(study_id)
        patient_id = match.group(1) if match else study_id
        images = {
            m: _find_file(directory, f"{study_id}-{s}") or directory / f"{study_id}-{s}.nii.gz"
            for m, s in BRATS_SUFFIX.items()
        }
        label = _find_file(directory, f"{study_id}-seg")
        kind = "multiclass" if label is not None else None
        return StudyRef(study_id, patient_id, "brats", images, label, kind, {}, directory)
    raise StudyError(f"{directory}: not a study folder (no UCSF-BMSR or BraTS-METS image files)")


def parse_label_map(text: str) -> dict[int, int]:
    """``"3:1 4:3"`` → ``{3: 1, 4: 3}`` (separators: spaces, commas or semicolons)."""
    mapping: dict[int, int] = {}
    for item in re.split(r"[\s,;]+", text.strip()):
        if not item:
            continue
        try:
            source, target = (int(v) for v in item.split(":"))
        except ValueError:
            raise StudyError(f"label_map entry {item!r} is not 'source:target'") from None
        if target not in LABEL_VALUES:
            raise StudyError(f"label_map entry {item!r} maps onto {target}, not a bmseg label 0-3")
        mapping[source] = target
    return mapping


def read_manifest(path: str | Path) -> list[StudyRef]:
    """Studies listed in a CSV manifest; an empty modality cell means the study lacks that modality."""
    path = Path(path)
    base = path.parent
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        required = {"patient_id", "study_id", *MODALITIES}
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise StudyError(f"{path}: manifest lacks column(s) {', '.join(sorted(missing))}")
        studies = []
        for line, row in enumerate(reader, start=2):
            if not row["study_id"] or not row["patient_id"]:
                raise StudyError(f"{path}:{line}: empty patient_id or study_id")
            images = {m: base / row[m] for m in MODALITIES if (row.get(m) or "").strip()}
            seg = (row.get("seg") or "").strip()
            kind = (row.get("label_kind") or "").strip() or "multiclass"
            if kind not in ("multiclass", "enhancing"):
                raise StudyError(f"{path}:{line}: label_kind must be multiclass or enhancing")
            studies.append(
                StudyRef(
                    study_id=row["study_id"].strip(),
                    patient_id=row["patient_id"].strip(),
                    layout="manifest",
                    images=images,
                    label=base / seg if seg else None,
                    label_kind=kind if seg else None,
                    label_map=parse_label_map(row.get("label_map") or ""),
                    directory=base,
                )
            )
    if not studies:
        raise StudyError(f"{path}: manifest lists no studies")
    return studies


# ---------------------------------------------------------------------------------------------- reading


def read_header(path: Path, max_voxels: int | None = None) -> nib.Nifti1Image:
    """Open a NIfTI file and check its header without reading voxel data.

    Refuses a missing or non-NIfTI file, anything but 3D, more than ``max_voxels`` voxels, a non-numeric
    voxel type and a singular or non-finite affine.
    """
    if not path.exists():
        raise StudyError(f"{path.name}: file is missing")
    try:
        image = nib.load(str(path))
    except (
        nib.filebasedimages.ImageFileError,
        nib.spatialimages.HeaderDataError,
        OSError,
        EOFError,
        zlib.error,
        ValueError,
    ) as exc:
        raise StudyError(f"{path.name}: not a readable NIfTI file ({_reason(exc, path)})") from None
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise StudyError(f"{path.name}: not a NIfTI file")
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise StudyError(f"{path.name}: array is {len(image.shape)}D {tuple(image.shape)}, expected 3D")
    if min(shape) < 1:
        raise StudyError(f"{path.name}: header claims an empty or invalid shape {tuple(shape)}")
    voxels = int(np.prod(shape, dtype=np.int64))
    if max_voxels is not None and voxels > max_voxels:
        raise StudyError(f"{path.name}: header claims {voxels:,} voxels, over the limit of {max_voxels:,}")
    dtype = image.get_data_dtype()
    if dtype.kind not in "biuf":
        raise StudyError(f"{path.name}: unsupported voxel type {dtype} (expected integers or floats)")
    affine = image.affine
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise StudyError(f"{path.name}: affine is singular or not finite")
    return image


def _reason(exc: BaseException, path: Path) -> str:
    """The first line of an exception's message, with the full path shortened to the file name."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.replace(str(path), path.name)


def read_data(image: nib.Nifti1Image, name: str, dtype: type = np.float32) -> np.ndarray:
    """The voxel array of an image whose header passed :func:`read_header`."""
    try:
        data = np.asarray(image.dataobj, dtype=dtype)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        reason = _reason(exc, Path(image.get_filename() or name))
        raise StudyError(f"{name}: truncated or corrupt data ({reason})") from None
    if data.ndim == 4:
        data = data[..., 0]
    return data


def lesion_voxels(ref: StudyRef, max_voxels: int | None = None) -> int:
    """Voxels the study's label marks as lesion (any class above 0 after its ``label_map``); 0 without
    a label. Reads the label alone; :func:`load_study` still validates it fully."""
    if ref.label is None:
        return 0
    data = read_data(read_header(ref.label, max_voxels), ref.label.name, dtype=np.int64)
    values, counts = np.unique(data, return_counts=True)
    return int(sum(n for v, n in zip(values, counts, strict=True) if ref.label_map.get(int(v), int(v)) > 0))


def _check_finite(data: np.ndarray, name: str) -> None:
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise StudyError(f"{name}: {bad:,} NaN/Inf voxels")


def _check_same_geometry(image: nib.Nifti1Image, name: str, reference: nib.Nifti1Image, reference_name: str):
    """Raise unless ``image`` has the reference's 3D shape and (within tolerance) its affine."""
    if image.shape[:3] != reference.shape[:3]:
        raise StudyError(
            f"{name}: shape {image.shape[:3]} disagrees with {reference_name} {reference.shape[:3]}"
        )
    difference = float(np.abs(image.affine - reference.affine).max())
    if difference > AFFINE_TOLERANCE:
        raise StudyError(f"{name}: affine disagrees with {reference_name}'s (by up to {difference:.3g})")


def load_study(
    ref: StudyRef,
    modalities: tuple[str, ...] = MODALITIES,
    max_voxels: int | None = None,
    with_label: bool = True,
) -> Volume:
    """Read and validate a study; raises :class:`StudyError` with a one-line reason."""
    if max_voxels is None:
        from bmcore.config import get_settings

        max_voxels = get_settings().max_voxels
    prefix = ref.study_id
    present = [m for m in MODALITIES if m in ref.images and ref.images[m].exists()]
    missing = [m for m in modalities if m not in present]
    if missing:
        absent = [ref.images[m].name for m in missing if m in ref.images]
        files = f"; no file {', '.join(absent)}" if absent else ""
        raise StudyError(
            f"{prefix}: missing modality {', '.join(missing)} (has {', '.join(present) or 'none'}{files})"
        )
    try:
        headers = {m: read_header(ref.images[m], max_voxels) for m in modalities}
        first, first_name = headers[modalities[0]], ref.images[modalities[0]].name
        for m in modalities[1:]:
            _check_same_geometry(headers[m], ref.images[m].name, first, first_name)
        label_image = None
        if with_label and ref.label is not None:
            label_image = read_header(ref.label, max_voxels)
            _check_same_geometry(label_image, ref.label.name, first, first_name)
        ornt = nib.orientations.io_orientation(first.affine)
        channels = []
        for m in modalities:
            data = read_data(headers[m], ref.images[m].name)
            _check_finite(data, ref.images[m].name)
            if not data.any():
                raise StudyError(f"{ref.images[m].name}: volume is all zero")
            channels.append(nib.orientations.apply_orientation(data, ornt))
        label = None
        if label_image is not None:
            label = to_canonical_label(label_image, ref, ornt)
    except StudyError as exc:
        message = str(exc)
        raise StudyError(message if message.startswith(prefix) else f"{prefix}: {message}") from None
    zooms = np.sqrt((first.affine[:3, :3] ** 2).sum(axis=0))  # voxel sizes of the affine, not pixdim
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = zooms
    return Volume(
        ref=ref,
        modalities=tuple(modalities),
        image=np.ascontiguousarray(np.stack(channels), dtype=np.float32),
        label=label,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        affine=first.affine.copy(),
        native_shape=tuple(int(s) for s in first.shape[:3]),
        orientation=ornt,
        header=first.header.copy(),
    )


def to_canonical_label(image: nib.Nifti1Image, ref: StudyRef, ornt: np.ndarray) -> np.ndarray:
    """Label volume mapped to bmseg's convention (DESIGN.md §2), reoriented like the images."""
    name = ref.label.name if ref.label else "label"
    raw = read_data(image, name, dtype=np.float64)
    _check_finite(raw, name)
    if not np.array_equal(raw, np.round(raw)):
        raise StudyError(f"{name}: label values are not integers")
    values = raw.astype(np.int64)
    if ref.label_map:
        mapped = values.copy()
        for source, target in ref.label_map.items():
            mapped[values == source] = target
        values = mapped
    present = set(np.unique(values).tolist())
    allowed = {0, 1} if ref.label_kind == "enhancing" else set(LABEL_VALUES)
    outside = sorted(present - allowed)
    if outside:
        raise StudyError(f"{name}: label values {outside} outside {sorted(allowed)}")
    if ref.label_kind == "enhancing":
        values = values * 3
    return nib.orientations.apply_orientation(values.astype(np.uint8), ornt).astype(np.uint8)


def check_study(
    ref: StudyRef, modalities: tuple[str, ...] = MODALITIES, max_voxels: int | None = None
) -> Volume:
    """Validate a whole study (headers, geometry, data, labels); returns the loaded volume."""
    return load_study(ref, modalities=modalities, max_voxels=max_voxels)


# ---------------------------------------------------------------------------------------------- writing


def to_native(array: np.ndarray, volume: Volume) -> np.ndarray:
    """Undo the canonical reorientation of a ``(X, Y, Z)`` array: back to the file's voxel axes."""
    canonical = nib.orientations.axcodes2ornt(("R", "A", "S"))
    back = nib.orientations.ornt_transform(canonical, volume.orientation)
    native = nib.orientations.apply_orientation(array, back)
    if tuple(native.shape) != volume.native_shape:
        raise ValueError(f"mask shape {native.shape} does not match the study's {volume.native_shape}")
    return native


def clear_free_text(header: nib.Nifti1Header) -> None:
    """Blank the header's free-text fields, where scanners and tools leave names and notes."""
    for key in FREE_TEXT_FIELDS:
        if key in header:
            header[key] = b""


def write_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    header: nib.Nifti1Header | None = None,
    dtype: type | None = None,
) -> Path:
    """Write an array atomically (temp file in the same folder, then rename), free-text fields cleared."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(array if dtype is None else array.astype(dtype))
    new_header = header.copy() if header is not None else None
    image = nib.Nifti1Image(data, affine, header=new_header)
    image.set_data_dtype(data.dtype)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    if data.dtype.kind in "iu":
        image.header["scl_slope"] = 1
        image.header["scl_inter"] = 0
    clear_free_text(image.header)
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    # A plain new file (not mkstemp's owner-only mode), so the result is as readable as any other.
    temp = path.parent / f".tmp-{uuid.uuid4().hex}{suffix}"
    try:
        nib.save(image, temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def save_mask(mask: np.ndarray, volume: Volume, path: str | Path) -> Path:
    """Write a canonical-orientation label mask in exactly the study's native shape and affine."""
    native = to_native(np.asarray(mask, dtype=np.uint8), volume)
    header = nib.Nifti1Header()
    header.set_xyzt_units(*volume.header.get_xyzt_units())
    return write_nifti(native, volume.affine, path, header=header, dtype=np.uint8)


def sanitize_nifti_file(
    source: Path, target: Path, max_voxels: int
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Validate an uploaded NIfTI and store a copy with free-text header fields cleared.

    Returns the shape and zooms; raises :class:`StudyError` for anything unusable.
    """
    image = read_header(source, max_voxels)
    # nibabel moves a file's scaling from the header to the array proxy when it loads it.
    scaled = getattr(image.dataobj, "slope", 1.0) != 1.0 or getattr(image.dataobj, "inter", 0.0) != 0.0
    # Scaled integers are stored as float32: casting the scaled values back to the disk type would round them.
    data = read_data(image, source.name, dtype=np.float32 if scaled else image.get_data_dtype())
    header = image.header.copy()
    write_nifti(data, image.affine, target, header=header)
    return tuple(int(s) for s in data.shape), tuple(float(z) for z in image.header.get_zooms()[:3])


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
