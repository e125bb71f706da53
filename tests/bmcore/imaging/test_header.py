"""bmcore.imaging.header: a NIfTI header from the first bytes of a file, gzipped or not, without its data."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from bmcore.imaging.header import HeaderError, peek_header, read_header


def _image_bytes(kind=nib.Nifti1Image, shape=(8, 6, 4), dtype=np.int16) -> bytes:
    return kind(np.ones(shape, dtype), np.eye(4)).to_bytes()


@pytest.mark.parametrize("kind", [nib.Nifti1Image, nib.Nifti2Image])
def test_read_header_of_plain_and_gzipped_files(tmp_path, kind):
    raw = _image_bytes(kind)
    for name, content in (("a.nii", raw), ("a.nii.gz", gzip.compress(raw))):
        path = tmp_path / name
        path.write_bytes(content)
        info = read_header(path, max_voxels=1000)
        assert info.shape == (8, 6, 4) and info.voxels == 192
        assert info.bitpix == 16 and info.dtype == np.dtype("<i2")
        assert info.version == (1 if kind is nib.Nifti1Image else 2)
        assert info.file_bytes == len(raw)


def test_big_endian_headers_are_read_in_their_byte_order():
    header = nib.Nifti1Header(endianness=">")
    header.set_data_shape((5, 4, 3))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    info = peek_header(header.binaryblock + b"\x00" * 4, max_voxels=100)
    assert info.shape == (5, 4, 3) and info.dtype == np.dtype(">f4") and info.file_bytes == 352 + 240


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"ab", "too short"),
        (b"<html>" * 100, "no NIfTI header"),
        (_image_bytes()[:300], "single-file NIfTI-1"),
        (nib.Nifti1Pair(np.ones((2, 2, 2)), np.eye(4)).header.binaryblock, "single-file NIfTI-1"),
        (_image_bytes(shape=(20, 20, 20))[:540], "over the limit"),
    ],
)
def test_what_is_refused(head, reason):
    with pytest.raises(HeaderError, match=reason):
        peek_header(head, max_voxels=1000)
