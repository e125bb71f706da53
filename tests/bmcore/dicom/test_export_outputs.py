"""write_dicom_outputs beyond geometry: a study without lesions, a study whose source series is recorded in
dicom_source.json, no PHI in any output, refusals that leave nothing behind, the zipped series."""

from __future__ import annotations

import json
import zipfile

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage, generate_uid

from bmcore.dicom import DicomError, write_dicom_outputs, write_mr_series, zip_series
from tests.bmcore.dicom.geometry_cases import (
    SHAPE,
    dciodvfy,
    dice,
    draw,
    expected_structures,
    grid_affine,
    lesion_table,
    planes_from_affine,
    rasterise_rtstruct,
    write_study,
)


def _left(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_study_without_lesions_gets_valid_files_with_empty_region_rois(tmp_path):
    affine = grid_affine("oblique")
    folder, mask_path = write_study(tmp_path, affine, np.zeros(SHAPE, np.uint8))
    written = write_dicom_outputs(folder, mask_path, [], mask_path.parent, "123456", "P0001")
    rtstruct = pydicom.dcmread(written["rtstruct"])
    assert [str(r.ROIName) for r in rtstruct.StructureSetROISequence] == ["ET", "TC", "WT"]
    assert [int(r.ROINumber) for r in rtstruct.StructureSetROISequence] == [1, 2, 3]
    assert all("ContourSequence" not in roi for roi in rtstruct.ROIContourSequence)
    seg = hd.seg.segread(written["seg"])
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == ["ET", "TC", "WT"]
    uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in sorted(written["mr_series"].glob("*.dcm"))]
    assert not seg.get_pixels_by_source_instance(uids).any()
    for path in (written["rtstruct"], written["seg"], sorted(written["mr_series"].glob("*.dcm"))[0]):
        dciodvfy(path)


def _source_record(folder, affine) -> dict:
    record = {
        "study_instance_uid": generate_uid(),
        "frame_of_reference_uid": generate_uid(),
        "series": {
            "t1ce": {
                "series_instance_uid": generate_uid(),
                "series_number": 9,
                "series_description": "T1 MPRAGE POST GD",
                "modality": "MR",
                "sop_class_uid": MRImageStorage,
                "sop_instance_uids": [generate_uid() for _ in range(SHAPE[2])],
            }
        },
    }
    (folder / "dicom_source.json").write_text(json.dumps(record))
    return record


def test_an_imported_study_is_referenced_by_its_recorded_source_series(tmp_path):
    affine = grid_affine("sagittal")
    mask = draw(affine)
    folder, mask_path = write_study(tmp_path, affine, mask)
    record = _source_record(folder, affine)
    source = record["series"]["t1ce"]
    rows = lesion_table(mask, affine)
    written = write_dicom_outputs(folder, mask_path, rows, mask_path.parent, "s1", "P0001")
    assert set(written) == {"rtstruct", "seg"} and not (mask_path.parent / "s1_t1ce_dicom").exists()
    rtstruct = pydicom.dcmread(written["rtstruct"])
    assert rtstruct.StudyInstanceUID == record["study_instance_uid"]
    assert rtstruct.FrameOfReferenceUID == record["frame_of_reference_uid"]
    frame = rtstruct.ReferencedFrameOfReferenceSequence[0]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == source["series_instance_uid"]
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == source["sop_instance_uids"]
    filled = rasterise_rtstruct(written["rtstruct"], planes_from_affine(affine, source["sop_instance_uids"]))
    seg = hd.seg.segread(written["seg"])
    assert seg.StudyInstanceUID == record["study_instance_uid"]
    for number, (name, voxels) in expected_structures(mask, affine, rows).items():
        assert dice(filled[name], voxels) >= 0.95 or voxels.sum() < 20, name
        pixels = seg.get_pixels_by_source_instance(source["sop_instance_uids"], segment_numbers=[number])
        assert np.array_equal(pixels[..., 0].transpose(2, 1, 0).astype(bool), voxels), name
    dciodvfy(written["rtstruct"])
    dciodvfy(written["seg"])


def test_no_output_carries_anything_but_the_pseudonym(tmp_path):
    affine = grid_affine("axial")
    mask = draw(affine)
    folder, mask_path = write_study(
        tmp_path, affine, mask
    )  # under DOE_JOHN_19600101/, NIfTI descrip DOE^JOHN
    written = write_dicom_outputs(
        folder, mask_path, lesion_table(mask, affine), mask_path.parent, "123456", "PS-7"
    )
    files = [written["rtstruct"], written["seg"], *sorted(written["mr_series"].glob("*.dcm"))]
    for path in files:
        data = path.read_bytes()
        for planted in (b"DOE", b"JOHN", b"19600101", str(tmp_path).encode()):
            assert planted not in data, (path.name, planted)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate) == ("PS-7^", "PS-7", "")
        assert ds.PatientIdentityRemoved == "YES"
        assert not any(getattr(ds, k, "") for k in ("AccessionNumber", "StudyDate", "ReferringPhysicianName"))


@pytest.mark.parametrize(
    "spoil, message",
    [
        ("mask_grid", "affine differs from the T1 post-contrast"),
        ("lesion_table", "the lesion table lists 3 lesion(s), the mask has 5"),
        ("lesion_centroid", "lesion 2: no component of the mask has its voxel count and centroid"),
        ("source_uids", "dicom_source.json: 3 t1ce SOP instance UIDs for 24 slices"),
        ("pseudonym", "the pseudonym must be"),
    ],
)
def test_refusals_are_one_line_and_leave_nothing(spoil, message, tmp_path):
    affine = grid_affine("coronal")
    mask = draw(affine)
    folder, mask_path = write_study(tmp_path, affine, mask)
    rows, pseudonym = lesion_table(mask, affine), "P0001"
    if spoil == "mask_grid":
        nib.save(nib.Nifti1Image(mask, grid_affine("axial")), mask_path)
    elif spoil == "lesion_table":
        rows = rows[:3]
    elif spoil == "lesion_centroid":
        rows[1]["centroid_x_mm"] += 5.0
    elif spoil == "source_uids":
        record = _source_record(folder, affine)
        record["series"]["t1ce"]["sop_instance_uids"] = record["series"]["t1ce"]["sop_instance_uids"][:3]
        (folder / "dicom_source.json").write_text(json.dumps(record))
    else:
        pseudonym = "bad\\name"
    with pytest.raises(DicomError) as refused:
        write_dicom_outputs(folder, mask_path, rows, mask_path.parent, "123456", pseudonym)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert _left(mask_path.parent) == ["123456_seg.nii.gz"]


def test_the_series_zips_with_its_folder_name_and_a_rerun_replaces_it(tmp_path):
    affine = grid_affine("axial_lps")
    path = tmp_path / "t1ce.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) / 7.0, affine), path)
    files = write_mr_series(path, tmp_path / "s_t1ce_dicom", "P0001")
    first = pydicom.dcmread(files[0]).SeriesInstanceUID
    again = write_mr_series(path, tmp_path / "s_t1ce_dicom", "P0001")
    assert [f.name for f in files] == [f.name for f in again] and len(again) == SHAPE[2]
    assert pydicom.dcmread(again[0]).SeriesInstanceUID != first  # a new series replaced the old one
    stored = pydicom.dcmread(again[3]).pixel_array  # floats: scaled onto 0..4095, in order
    assert stored.dtype == np.uint16 and stored.max() <= 4095 and np.all(np.diff(stored[0].astype(int)) >= 0)
    archive = zip_series(tmp_path / "s_t1ce_dicom")
    assert archive == tmp_path / "s_t1ce_dicom.zip"
    with zipfile.ZipFile(archive) as opened:
        assert sorted(opened.namelist()) == [f"s_t1ce_dicom/{f.name}" for f in again]
    assert _left(tmp_path) == ["s_t1ce_dicom", "s_t1ce_dicom.zip", "t1ce.nii.gz"]


def test_a_lesion_without_enhancement_has_an_empty_et_segment_and_roi(tmp_path):
    affine = grid_affine("axial")
    mask = (draw(affine) == 1).astype(np.uint8)  # the necrotic core alone: TC and WT, no ET
    rows = lesion_table(mask, affine)
    folder, mask_path = write_study(tmp_path, affine, mask)
    written = write_dicom_outputs(folder, mask_path, rows, mask_path.parent, "123456", "P0001")
    rtstruct = pydicom.dcmread(written["rtstruct"])
    contoured = {int(r.ReferencedROINumber): "ContourSequence" in r for r in rtstruct.ROIContourSequence}
    assert contoured == {1: True, 2: False, 3: True, 4: True}  # lesion 1, ET, TC, WT
    seg = hd.seg.segread(written["seg"])
    uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in sorted(written["mr_series"].glob("*.dcm"))]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2, 3, 4])
    assert [bool(pixels[..., s].any()) for s in range(4)] == [True, False, True, True]
    assert np.array_equal(pixels[..., 0].transpose(2, 1, 0).astype(bool), mask == 1)
    dciodvfy(written["seg"])
