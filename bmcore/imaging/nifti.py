"""NIfTI files: reading a header and its voxels safely, writing atomically.

Every check that can be made from the header alone (dimensions, voxel count, voxel type, affine) is
made before any voxel data is read; header extensions and free-text fields are cleared on every write
(uploads are sanitised in :mod:`bmcore.imaging.sanitize`).
"""

from __future__ import annotations

import hashlib
import os
import uuid
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from bmcore.imaging.layouts import StudyError

# Header fields where scanners and converters leave names and notes (``data_type`` and ``db_name`` are
# unused ANALYZE leftovers of NIfTI-1; NIfTI-2 has neither).
FREE_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name", "data_type")

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


# ---------------------------------------------------------------------------------------------- writing


def clear_free_text(header: nib.Nifti1Header) -> None:
    """Blank the header's free-text fields and drop its extensions (where converters put DICOM sidecars):
    places where scanners and tools leave names and notes."""
    for key in FREE_TEXT_FIELDS:
        if key in header:
            header[key] = b""
    header.extensions.clear()


def write_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    header: nib.Nifti1Header | None = None,
    dtype: type | None = None,
    spatial_unit: str | None = None,
) -> Path:
    """Write an array atomically (temp file in the same folder, then rename), free-text fields cleared;
    ``spatial_unit`` (e.g. ``"mm"``) sets the header's spatial unit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(array if dtype is None else array.astype(dtype))
    new_header = header.copy() if header is not None else None
    image = nib.Nifti1Image(data, affine, header=new_header)
    image.set_data_dtype(data.dtype)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    if spatial_unit is not None:
        image.header.set_xyzt_units(xyz=spatial_unit)
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


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes (hex), read in ``chunk``-sized blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
