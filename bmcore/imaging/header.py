"""A NIfTI header read from the first bytes of a file, before any voxel data: what an upload claims to be.

:func:`peek_header` parses the fixed NIfTI-1 or NIfTI-2 header fields with nibabel (either byte order)
from the first :data:`PEEK_BYTES` bytes and refuses what is not a single-file NIfTI image, has invalid
dimensions, claims more than ``max_voxels`` voxels, an odd bits-per-voxel or an absurd data offset.
:func:`read_header` does the same for a file on disk, gzipped or not, decompressing only those bytes.
Nothing here reads the data array, so a huge or hostile file costs no more than its first bytes.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.spatialimages import HeaderDataError

NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540
PEEK_BYTES = NIFTI2_HEADER_BYTES  # enough for either header
GZIP_MAGIC = b"\x1f\x8b"
MAX_DATA_OFFSET = 1 << 30
HEADER_CLASSES: dict[int, type[nib.Nifti1Header]] = {
    NIFTI1_HEADER_BYTES: nib.Nifti1Header,
    NIFTI2_HEADER_BYTES: nib.Nifti2Header,
}
SINGLE_FILE_MAGIC = {NIFTI1_HEADER_BYTES: b"n+1", NIFTI2_HEADER_BYTES: b"n+2"}


class HeaderError(ValueError):
    """The first bytes are not an acceptable single-file NIfTI header; the message says why."""


@dataclass(frozen=True)
class HeaderInfo:
    """What a NIfTI header claims: version (1 or 2), array shape, bits per voxel, data type (None when
    the datatype code is unknown) and where the voxel data starts."""

    version: int
    shape: tuple[int, ...]
    bitpix: int
    dtype: np.dtype | None
    data_offset: int

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)

    @property
    def file_bytes(self) -> int:
        """The size of a single-file image with this header: data offset + voxels × bytes per voxel."""
        return self.data_offset + self.voxels * (self.bitpix // 8)


BYTE_ORDERS = {"little": "<", "big": ">"}


def header_size(head: bytes) -> tuple[int, str] | None:
    """(348 for NIfTI-1 or 540 for NIfTI-2, byte order ``<`` or ``>``) when ``sizeof_hdr``, read in
    either byte order, says so: that byte order is the header's."""
    if len(head) < 4:
        return None
    for order, code in BYTE_ORDERS.items():
        size = int.from_bytes(head[:4], order, signed=True)
        if size in HEADER_CLASSES:
            return size, code
    return None


def parse_header(head: bytes) -> nib.Nifti1Header:
    """The nibabel header of ``head`` (fixed fields only: no extensions), unchecked (the checks of
    :func:`peek_header` give the reasons); its scaling fields are as stored."""
    if len(head) < 4:
        raise HeaderError("not a NIfTI file (too short)")
    found = header_size(head)
    if found is None:
        raise HeaderError("not a NIfTI file (no NIfTI header)")
    size, endianness = found
    version = 1 if size == NIFTI1_HEADER_BYTES else 2
    if len(head) < size:
        raise HeaderError(f"not a single-file NIfTI-{version} (.nii) image")
    # The byte order comes from sizeof_hdr, as readers agree (nibabel alone would guess it from dim[0]).
    header = HEADER_CLASSES[size](head[:size], endianness=endianness, check=False)
    if header["magic"].item() != SINGLE_FILE_MAGIC[size]:
        raise HeaderError(f"not a single-file NIfTI-{version} (.nii) image")
    return header


def _dtype(header: nib.Nifti1Header) -> np.dtype | None:
    try:
        return header.get_data_dtype()
    except (KeyError, HeaderDataError):
        return None


def peek_header(head: bytes, max_voxels: int) -> HeaderInfo:
    """The header in the first bytes ``head`` of an uncompressed NIfTI file; raises :class:`HeaderError`."""
    header = parse_header(head)
    dims = tuple(int(d) for d in header["dim"])
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1 : ndim + 1]):
        raise HeaderError(f"invalid dimensions in the NIfTI header {dims[1 : ndim + 1]}")
    shape = dims[1 : ndim + 1]
    voxels = math.prod(shape)
    if voxels > max_voxels:
        raise HeaderError(f"header claims {voxels:,} voxels, over the limit of {max_voxels:,}")
    bitpix = int(header["bitpix"])
    if bitpix <= 0 or bitpix % 8:
        raise HeaderError(f"unsupported bits per voxel ({bitpix}) in the NIfTI header")
    offset = float(header["vox_offset"])
    size = header.sizeof_hdr
    if math.isnan(offset) or offset < size or offset > MAX_DATA_OFFSET:  # inside the header, or absurd
        raise HeaderError(f"invalid data offset ({header['vox_offset']}) in the NIfTI header")
    return HeaderInfo(
        version=1 if size == NIFTI1_HEADER_BYTES else 2,
        shape=shape,
        bitpix=bitpix,
        dtype=_dtype(header),
        data_offset=int(offset),
    )


def read_header(path: str | Path, max_voxels: int) -> HeaderInfo:
    """The header of a NIfTI file on disk, ``.nii`` or gzipped, reading only its first bytes."""
    with Path(path).open("rb") as handle:
        gzipped = handle.read(2) == GZIP_MAGIC
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as stream:
        head = stream.read(PEEK_BYTES)
    return peek_header(head, max_voxels)
