"""DICOM round trips through bmseg's importer: lesions stay where they were in scanner coordinates.

1. A study written by the test-side scanner (tests/bmcore/dicom/scanner.py, no bmseg code) is imported;
   a mask drawn on the imported T1 post-contrast grid is exported; the RTSTRUCT contours, filled through
   the scanner's own image planes, and the SEG frames, by the scanner's SOP instances, land on the
   lesions drawn in the scanner's grid.
2. NIfTI → bmseg's MR series (four of them) → import-dicom gives back the same voxels at the same places,
   and the outputs of the imported study reference the written series correctly.
"""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import generate_uid

from bmcore.dicom import import_dicom, write_dicom_outputs, write_mr_series
from tests.bmcore.dicom.geometry_cases import (
    SHAPE,
    dciodvfy,
    dice,
    draw,
    expected_structures,
    grid_affine,
    lesion_table,
    planes_from_files,
    rasterise_rtstruct,
)
from tests.bmcore.dicom.scanner import PHI_BYTES, affine_for, four_series, write_study

SUFFIX = {"t1": "T1pre", "t1ce": "T1post", "t2": "T2Synth", "flair": "FLAIR"}


def _export(imported_folder, out, name="rt"):
    """Draw the balls on the imported T1 post-contrast grid (a perfect model) and export the outputs."""
    t1ce = nib.load(imported_folder / f"{imported_folder.name}_T1post.nii.gz")
    mask = draw(t1ce.affine, t1ce.shape)
    mask_path = out / f"{name}_seg.nii.gz"
    out.mkdir()
    nib.save(nib.Nifti1Image(mask, t1ce.affine), mask_path)
    rows = lesion_table(mask, t1ce.affine)
    return write_dicom_outputs(imported_folder, mask_path, rows, out, name, "P0001")


def _check_on_grid(written, files, affine) -> None:
    """The outputs, read through the planes of ``files`` (placed on ``affine``), hold that grid's balls."""
    mask = draw(affine)
    rows = lesion_table(mask, affine)
    planes = planes_from_files(files, affine)
    filled = rasterise_rtstruct(written["rtstruct"], planes)
    seg = hd.seg.segread(written["seg"])
    by_k = [uid for uid, _ in sorted(planes.items(), key=lambda item: item[1].k)]
    for number, (name, voxels) in expected_structures(mask, affine, rows).items():
        if voxels.sum() >= 20:  # the lesions of 5 mm and more, and the regions
            assert dice(filled[name], voxels) >= 0.95, (name, dice(filled[name], voxels))
        pixels = seg.get_pixels_by_source_instance(by_k, segment_numbers=[number])
        assert np.array_equal(pixels[..., 0].transpose(2, 1, 0).astype(bool), voxels), name
    dciodvfy(written["rtstruct"])
    dciodvfy(written["seg"])


@pytest.mark.parametrize("k_sign", [1.0, -1.0], ids=["slices_along_normal", "slices_stored_reversed"])
def test_a_scanner_study_imports_and_its_outputs_land_on_the_scanner_grid(k_sign, tmp_path):
    row, column = (0.94, 0.34, 0.0), (-0.06, 0.17, -0.98)  # oblique; orthogonalised below
    column = np.cross(np.cross(row, column), row)
    affine = affine_for(row, column, (0.9, 1.1, 2.5), centre_ras=(3.0, -4.0, 6.0), shape=SHAPE, k_sign=k_sign)
    mask = draw(affine)
    image = (400 + 300 * (mask > 0)).astype(np.float64)
    study = write_study(tmp_path / "export", four_series({m: image for m in SUFFIX}, affine))
    imported = import_dicom(tmp_path / "export", tmp_path / "studies", "rt1")
    written = _export(imported.folder, tmp_path / "out")
    assert set(written) == {"rtstruct", "seg"}
    _check_on_grid(written, [s.path for s in study.slices[9]], affine)
    for path in written.values():  # the source headers' patient, physician, institution: none of it
        assert not [phi for phi in PHI_BYTES if phi in path.read_bytes()], path.name


@pytest.mark.parametrize("case", ["oblique", "flipped_slices"])
def test_bmseg_series_round_trip_through_import_keeps_voxels_and_places(case, tmp_path):
    affine = grid_affine(case)
    rng = np.random.default_rng(3)
    volume = (500 + 300 * (draw(affine) > 0) + rng.integers(0, 50, SHAPE)).astype(np.int16)
    study_uid, frame_uid = generate_uid(), generate_uid()
    series = {}
    for number, (modality, description) in enumerate(
        [("t1", "T1 pre (bmseg)"), ("t1ce", "T1 post-contrast (bmseg)"), ("t2", "T2"), ("flair", "FLAIR")],
        start=1,
    ):
        nifti = tmp_path / f"{modality}.nii.gz"
        nib.save(nib.Nifti1Image(volume + number, affine), nifti)
        series[modality] = write_mr_series(
            nifti, tmp_path / "dicom" / modality, "P0001", study_uid, frame_uid, number, description
        )
    mapping = {1: "t1", 2: "t1ce", 3: "t2", 4: "flair"}
    imported = import_dicom(tmp_path / "dicom", tmp_path / "studies", "rt2", mapping=mapping)
    back = nib.load(imported.folder / "rt2_T1post.nii.gz")
    # Every imported voxel sits on an original voxel, with its value.
    to_original = np.linalg.inv(affine) @ back.affine
    assert np.allclose(to_original[:3, :3], np.round(to_original[:3, :3]), atol=1e-4)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in back.shape], indexing="ij"), -1).reshape(-1, 3)
    original = np.round(grid @ to_original[:3, :3].T + to_original[:3, 3]).astype(int)
    values = np.asarray(back.dataobj).reshape(-1)
    assert np.allclose(values, (volume + 2)[tuple(original.T)])
    written = _export(imported.folder, tmp_path / "out")
    _check_on_grid(written, series["t1ce"], affine)
