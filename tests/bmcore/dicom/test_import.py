"""DICOM MR studies in: a four-series study written by the test-side scanner imports into a study folder
whose volumes, affines and ``dicom_source.json`` match what was written, in every orientation, with the
other series resampled onto the T1 post-contrast grid and no patient data in any output file."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from bmcore.dicom import DicomError, import_dicom
from bmcore.imaging import load_study, study_from_dir

from .scanner import (
    PHI_BYTES,
    SHAPE,
    SPACING,
    SeriesSpec,
    affine_for,
    axial_affine,
    four_series,
    write_directory_record,
    write_study,
    zip_folder,
)

SUFFIX = {"t1": "T1pre", "t1ce": "T1post", "t2": "T2Synth", "flair": "FLAIR"}
NUMBER = {"t1": 3, "t2": 5, "flair": 7, "t1ce": 9}
LPS = np.array([-1.0, -1.0, 1.0])


def read_nifti(folder: Path, modality: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    image = nib.load(folder / f"{folder.name}_{SUFFIX[modality]}.nii.gz")
    return np.asarray(image.dataobj, dtype=np.float64), image.affine, image.header


def check_against_written(data, affine, written, sop_uids) -> None:
    """Each written slice is ``data[:, :, k]`` (k from dicom_source.json) with its stored values rescaled,
    and the affine takes its pixels to the patient positions the scanner wrote (PS3.3 C.7.6.2.1.1)."""
    assert sorted(sop_uids) == sorted(s.sop_instance_uid for s in written)
    for item in written:
        k = sop_uids.index(item.sop_instance_uid)
        rows, columns = item.stored.shape
        for column, row in ((0, 0), (columns - 1, 0), (0, rows - 1), (columns - 1, rows - 1), (3, 5)):
            ras = (affine @ [column, row, k, 1])[:3]
            np.testing.assert_allclose(ras * LPS, item.patient_point(column, row), atol=1e-3)
        np.testing.assert_allclose(data[:, :, k].T, item.stored * item.slope + item.intercept, atol=1e-4)


def check_against_volume(data, affine, spec: SeriesSpec) -> None:
    """The imported volume is the synthetic one, voxel for voxel at the same world points, within the
    rounding of the stored values."""
    index = np.indices(data.shape).reshape(3, -1)
    source = (np.linalg.inv(spec.affine) @ affine @ np.vstack([index, np.ones(index.shape[1])]))[:3]
    nearest = np.round(source).astype(int)
    np.testing.assert_allclose(source, nearest, atol=1e-4)
    expected = spec.volume[tuple(nearest)]
    np.testing.assert_allclose(data.reshape(-1), expected, atol=abs(spec.slope) / 2 + 1e-6)


@pytest.fixture(scope="module")
def zipped_import(tmp_path_factory, volumes):
    """A zip of the four series plus a localizer and a DICOMDIR-like record, imported as study case01."""
    root = tmp_path_factory.mktemp("zipped")
    specs = four_series(volumes, axial_affine())
    specs.append(SeriesSpec(1, "localizer", volumes["t1"][:, :, :3], axial_affine()))
    study = write_study(root / "export", specs)
    write_directory_record(root / "export")
    archive = zip_folder(root / "export", root / "export.zip")
    temp = root / "system-temp"
    temp.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(temp))
        result = import_dicom(archive, root / "out", "case01")
    return result, study, {s.number: s for s in specs}, temp


def test_a_four_series_zip_imports_as_a_ucsf_study(zipped_import):
    result, _, _, temp = zipped_import
    assert result.folder.name == "case01"
    assert {m: info.number for m, info in result.series.items()} == NUMBER
    assert result.resampled == ()
    assert [(info.number, info.why) for info in result.unplaced] == [(1, "ignored: not a structural series")]
    names = sorted(p.name for p in result.folder.iterdir())
    assert names == sorted([*(f"case01_{s}.nii.gz" for s in SUFFIX.values()), "dicom_source.json"])
    assert not any(temp.iterdir()), "the archive's extraction folder is left behind"
    volume = load_study(study_from_dir(result.folder))
    assert volume.native_shape == SHAPE
    np.testing.assert_allclose(volume.spacing, SPACING, atol=1e-5)


def test_values_and_geometry_are_what_the_scanner_wrote(zipped_import):
    result, study, specs, _ = zipped_import
    record = json.loads((result.folder / "dicom_source.json").read_text())
    for modality, number in NUMBER.items():
        data, affine, _ = read_nifti(result.folder, modality)
        uids = record["series"][modality]["sop_instance_uids"]
        check_against_written(data, affine, study.slices[number], uids)
        check_against_volume(data, affine, specs[number])


def test_dicom_source_holds_the_uids_in_slice_order(zipped_import):
    result, study, specs, _ = zipped_import
    record = json.loads((result.folder / "dicom_source.json").read_text())
    assert record["study_instance_uid"] == study.study_uid
    assert record["frame_of_reference_uid"] == study.frame_of_reference
    _, affine, _ = read_nifti(result.folder, "t1ce")
    for modality, number in NUMBER.items():
        entry = record["series"][modality]
        assert entry["series_instance_uid"] == specs[number].uid
        assert (entry["series_number"], entry["series_description"]) == (number, specs[number].description)
        assert (entry["modality"], entry["sop_class_uid"]) == ("MR", "1.2.840.10008.5.1.4.1.1.4")
        assert entry["resampled_onto_t1ce"] is False
        by_uid = {s.sop_instance_uid: s for s in study.slices[number]}
        for k, uid in enumerate(entry["sop_instance_uids"]):
            np.testing.assert_allclose((affine @ [0, 0, k, 1])[:3] * LPS, by_uid[uid].position, atol=1e-3)


def test_no_patient_data_reaches_any_output_file(zipped_import):
    result, _, _, _ = zipped_import
    for path in result.folder.iterdir():
        raw = path.read_bytes()
        contents = [raw, gzip.decompress(raw)] if path.name.endswith(".gz") else [raw]
        for text in contents:
            for phi in PHI_BYTES:
                assert phi not in text, f"{phi!r} in {path.name}"
    for modality in SUFFIX:
        _, _, header = read_nifti(result.folder, modality)
        assert header["descrip"].tobytes().strip(b"\x00") == b""
        assert header["aux_file"].tobytes().strip(b"\x00") == b""
        assert len(header.extensions) == 0


def rotation(degrees_x: float, degrees_z: float) -> np.ndarray:
    ax, az = np.radians(degrees_x), np.radians(degrees_z)
    about_x = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    about_z = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return about_z @ about_x


ORIENTATIONS = {
    "axial": ((1, 0, 0), (0, 1, 0), 1.0),
    "sagittal": ((0, 1, 0), (0, 0, -1), 1.0),
    "coronal": ((1, 0, 0), (0, 0, -1), 1.0),
    "coronal-slices-written-backwards": ((1, 0, 0), (0, 0, -1), -1.0),
    "oblique": (tuple(rotation(20, 12) @ [1, 0, 0]), tuple(rotation(20, 12) @ [0, 1, 0]), -1.0),
}


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_every_orientation_maps_voxels_to_the_written_positions(orientation, volumes, tmp_path):
    row, column, k_sign = ORIENTATIONS[orientation]
    affine = affine_for(row, column, SPACING, centre_ras=(-3.0, 12.0, 5.0), shape=SHAPE, k_sign=k_sign)
    specs = four_series(volumes, affine)
    study = write_study(tmp_path / "export", specs, seed=3)
    result = import_dicom(tmp_path / "export", tmp_path / "out", "oriented")
    record = json.loads((result.folder / "dicom_source.json").read_text())
    by_number = {s.number: s for s in specs}
    for modality, number in NUMBER.items():
        data, imported_affine, _ = read_nifti(result.folder, modality)
        uids = record["series"][modality]["sop_instance_uids"]
        check_against_written(data, imported_affine, study.slices[number], uids)
        check_against_volume(data, imported_affine, by_number[number])


def linear_field(shape, affine) -> np.ndarray:
    """Values that are a linear function of the RAS position: trilinear resampling keeps them exactly."""
    index = np.indices(shape).reshape(3, -1)
    world = (affine @ np.vstack([index, np.ones(index.shape[1])]))[:3]
    return field_at(world).reshape(shape)


def field_at(world: np.ndarray) -> np.ndarray:
    return 900.0 + 2.0 * world[0] - 1.5 * world[1] + 3.0 * world[2]


def test_series_on_other_grids_are_resampled_onto_t1ce_with_world_points_kept(volumes, tmp_path):
    target = axial_affine()
    sagittal_shape, oblique_shape = (14, 22, 16), (18, 16, 12)
    sagittal = affine_for(
        (0, 1, 0), (0, 0, -1), (9.5, 8.0, 11.0), centre_ras=(4.0, -2.0, 8.0), shape=sagittal_shape
    )
    oblique = affine_for(
        rotation(15, -10) @ [1, 0, 0],
        rotation(15, -10) @ [0, 1, 0],
        (10.0, 11.0, 12.0),
        centre_ras=(0.0, -6.0, 12.0),
        shape=oblique_shape,
        k_sign=-1.0,
    )
    changes = {
        3: {"volume": linear_field(sagittal_shape, sagittal), "affine": sagittal, "slope": 0.25},
        5: {"volume": linear_field(oblique_shape, oblique), "affine": oblique, "slope": 0.25},
    }
    write_study(tmp_path / "export", four_series(volumes, target, changes))
    result = import_dicom(tmp_path / "export", tmp_path / "out", "resampled")
    assert result.resampled == ("t1", "t2")
    record = json.loads((result.folder / "dicom_source.json").read_text())
    assert [record["series"][m]["resampled_onto_t1ce"] for m in SUFFIX] == [True, False, True, False]
    index = np.indices(SHAPE).reshape(3, -1)
    world = (target @ np.vstack([index, np.ones(index.shape[1])]))[:3]
    for modality, source_affine, source_shape in (
        ("t1", sagittal, sagittal_shape),
        ("t2", oblique, oblique_shape),
    ):
        data, affine, _ = read_nifti(result.folder, modality)
        np.testing.assert_allclose(affine, target, atol=1e-4)
        source = (np.linalg.inv(source_affine) @ np.vstack([world, np.ones(world.shape[1])]))[:3]
        upper = np.asarray(source_shape)[:, None] - 1
        inside = ((source >= 1e-3) & (source <= upper - 1e-3)).all(axis=0)
        outside = ((source < -1e-3) | (source > upper + 1e-3)).any(axis=0)
        assert inside.mean() > 0.2 and outside.any()
        values = data.reshape(-1)
        np.testing.assert_allclose(values[inside], field_at(world[:, inside]), atol=0.125 + 1e-3)
        assert not values[outside].any()


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless, RLELossless], ids=lambda uid: uid.name)
def test_a_lossless_compressed_series_decodes_exactly(syntax, volumes, tmp_path):
    specs = four_series(
        volumes, axial_affine(), {7: {"transfer_syntax": syntax}, 9: {"transfer_syntax": syntax}}
    )
    write_study(tmp_path / "export", specs)
    result = import_dicom(tmp_path / "export", tmp_path / "out", "lossless")
    for modality, spec in (("flair", specs[2]), ("t1ce", specs[3])):
        data, affine, _ = read_nifti(result.folder, modality)
        check_against_volume(data, affine, spec)


def test_a_jpeg_baseline_series_decodes_within_its_loss(volumes, tmp_path):
    specs = four_series(volumes, axial_affine(), {5: {"transfer_syntax": JPEGBaseline8Bit, "slope": 8.0}})
    write_study(tmp_path / "export", specs)
    result = import_dicom(tmp_path / "export", tmp_path / "out", "lossy")
    data, _, _ = read_nifti(result.folder, "t2")
    error = np.abs(data - specs[1].volume) / 8.0  # in stored levels
    assert error.mean() < 2 and error.max() <= 12, (error.mean(), error.max())
    assert np.corrcoef(data.ravel(), specs[1].volume.ravel())[0, 1] > 0.99


def test_a_mapping_places_series_the_rules_cannot_tell_apart(volumes, tmp_path):
    """The post-contrast run named like the pre-contrast one and without ContrastBolusAgent: both read
    as t1, none as t1ce; nothing is guessed until the mapping says which is which."""
    changes = {9: {"description": "t1_mprage_sag_p2_iso", "contrast_agent": None}}
    write_study(tmp_path / "export", four_series(volumes, axial_affine(), changes))
    with pytest.raises(DicomError) as refused:
        import_dicom(tmp_path / "export", tmp_path / "out", "mapped")
    message = str(refused.value)
    assert 't1: series 3 "t1_mprage_sag_p2_iso" and series 9 "t1_mprage_sag_p2_iso" all fit' in message
    assert "t1ce: no series fits" in message and "--map" in message
    assert not (tmp_path / "out").exists()
    result = import_dicom(tmp_path / "export", tmp_path / "out", "mapped", mapping={9: "t1ce"})
    assert {m: info.number for m, info in result.series.items()} == NUMBER
    assert result.series["t1ce"].why == "placed by the mapping"
