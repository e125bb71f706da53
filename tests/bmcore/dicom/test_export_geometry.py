"""RTSTRUCT and DICOM-SEG geometry proven on axial, sagittal, coronal, LPS, flipped and oblique grids with
anisotropic voxels: contours filled back onto the grid and SEG frames read back land on the mask's voxels."""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from bmcore.dicom import write_dicom_outputs
from tests.bmcore.dicom.geometry_cases import (
    DIRECTIONS,
    LPS,
    dciodvfy,
    dice,
    draw,
    expected_structures,
    grid_affine,
    lesion_table,
    planes_from_files,
    rasterise_rtstruct,
    write_study,
)

WARNINGS_SEEN: set[str] = set()


@pytest.mark.parametrize("case", list(DIRECTIONS))
def test_rtstruct_and_seg_put_every_lesion_on_its_voxels(case, tmp_path):
    affine = grid_affine(case)
    mask = draw(affine)
    rows = lesion_table(mask, affine)
    assert len(rows) == 5 and sorted(r["diameter_mm"] >= 5.0 for r in rows) == [False] + [True] * 4
    folder, mask_path = write_study(tmp_path, affine, mask)
    written = write_dicom_outputs(folder, mask_path, rows, mask_path.parent, "123456", "P0001")
    assert written == {
        "rtstruct": mask_path.parent / "123456_rtstruct.dcm",
        "seg": mask_path.parent / "123456_seg.dcm",
        "mr_series": mask_path.parent / "123456_t1ce_dicom",
    }
    series = sorted(written["mr_series"].glob("*.dcm"))
    planes = planes_from_files(series, affine)
    truth = expected_structures(mask, affine, rows)

    # The MR series carries the T1 post-contrast voxels: slice k, pixel (row j, column i) = data[i, j, k].
    t1ce = np.asarray(nib.load(folder / "123456_T1post.nii.gz").dataobj)
    for path in series[:: len(series) // 3]:
        image = pydicom.dcmread(path)
        assert np.array_equal(image.pixel_array, t1ce[:, :, planes[str(image.SOPInstanceUID)].k].T)

    # RTSTRUCT: ROI numbers and names as in the lesion table, contours filled back match the mask.
    rtstruct = pydicom.dcmread(written["rtstruct"])
    assert {int(r.ROINumber): str(r.ROIName) for r in rtstruct.StructureSetROISequence} == {
        number: name for number, (name, _) in truth.items()
    }
    described = {int(r.ROINumber): str(r.ROIDescription) for r in rtstruct.StructureSetROISequence}
    for row in rows:  # the ROI says the lesion's labels and volume
        assert f"{row['volume_ml']} ml" in described[row["lesion_id"]]
        assert all(f"{v} " in described[row["lesion_id"]] for v in row["labels"].split(";"))
    filled = rasterise_rtstruct(written["rtstruct"], planes)
    small = {f"Lesion {r['lesion_id']}" for r in rows if r["diameter_mm"] < 5.0}
    for name, voxels in truth.values():
        if name in small:
            assert (filled[name] & voxels).any(), name
            continue
        assert dice(filled[name], voxels) >= 0.95, (name, dice(filled[name], voxels))
        if name.startswith("Lesion"):
            shift = np.argwhere(filled[name]).mean(axis=0) - np.argwhere(voxels).mean(axis=0)
            assert np.abs(shift).max() <= 1.0, (name, shift)
    assert not (filled["ET"] & (mask == 1)).any()  # the necrotic core is a hole of the ET contours
    assert (mask == 1).sum() > 0

    # DICOM-SEG: segment by segment, exactly the voxels, by referenced SOP instance and by frame position.
    seg = hd.seg.segread(written["seg"])
    assert {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence} == {
        number: name for number, (name, _) in truth.items()
    }
    by_k = [uid for uid, _ in sorted(planes.items(), key=lambda item: item[1].k)]
    inverse = np.linalg.inv(affine)
    for number, (name, voxels) in truth.items():
        pixels = seg.get_pixels_by_source_instance(by_k, segment_numbers=[number])
        assert np.array_equal(pixels[..., 0].transpose(2, 1, 0).astype(bool), voxels), name
        volume = seg.get_volume(segment_numbers=[number])
        indices = np.argwhere(volume.array[..., 0] if volume.array.ndim == 4 else volume.array)
        lps = indices @ volume.affine[:3, :3].T + volume.affine[:3, 3]
        on_grid = (LPS @ lps.T).T @ inverse[:3, :3].T + inverse[:3, 3]
        assert np.allclose(on_grid, np.round(on_grid), atol=1e-3)
        found = np.zeros(mask.shape, dtype=bool)
        found[tuple(np.round(on_grid).astype(int).T)] = True
        assert np.array_equal(found, voxels), name

    for path in (written["rtstruct"], written["seg"], series[0], series[-1]):
        WARNINGS_SEEN.update(dciodvfy(path))
    print(f"dciodvfy warnings ({case}):", sorted(WARNINGS_SEEN))
