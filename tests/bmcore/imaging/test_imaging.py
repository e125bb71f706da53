"""Tests of bmcore.imaging: finding and loading studies, the bad-input battery, writing masks, real scans."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bmcore import imaging
from bmcore.data.preprocess import brain_mask

# Real MS and glioma cases with expert labels, supplied by the operator and never committed
# (docs/design.md §3): BMSEG_REAL_CASES_DIR, by default a shared data folder beside the checkout.
REAL = Path(
    os.environ.get("BMSEG_REAL_CASES_DIR", Path(__file__).resolve().parents[3].parent / "shared/data/real")
)
GLIOMA = REAL / "glioma_brats2015" / "brats_2013_pat0006_1"
MS = REAL / "ms_patient19"
needs_real = pytest.mark.skipif(
    not (GLIOMA.is_dir() and MS.is_dir()),
    reason=f"real MRI cases not present at {REAL} (set BMSEG_REAL_CASES_DIR)",
)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


# ------------------------------------------------------------------------------------- bad inputs


def test_bad_input_is_one_line_study_error(bad_study):
    ref = imaging.find_studies(bad_study.root)[0]
    with pytest.raises(imaging.StudyError) as caught:
        imaging.load_study(ref, max_voxels=bad_study.max_voxels)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(bad_study.study_id)
    assert bad_study.expected in message


def test_bad_image_is_refused_even_without_label(bad_study):
    ref = imaging.find_studies(bad_study.root)[0]
    if bad_study.label_only:
        assert imaging.load_study(ref, max_voxels=bad_study.max_voxels, with_label=False).label is None
    else:
        with pytest.raises(
            imaging.StudyError, match=bad_study.expected.replace("(", r"\(").replace(")", r"\)")
        ):
            imaging.load_study(ref, max_voxels=bad_study.max_voxels, with_label=False)


def test_voxel_limit_applies_to_a_complete_file(brats_cohort):
    ref = imaging.find_studies(brats_cohort)[0]
    with pytest.raises(imaging.StudyError, match="header claims 163,840 voxels, over the limit of 100,000"):
        imaging.load_study(ref, max_voxels=100_000)


def test_manifest_without_a_modality_is_refused_by_name(brats_cohort, tmp_path):
    study = sorted(p for p in brats_cohort.iterdir() if p.is_dir())[0]
    manifest = tmp_path / "studies.csv"
    t1c = os.path.relpath(study / f"{study.name}-t1c.nii.gz", tmp_path)
    t2f = os.path.relpath(study / f"{study.name}-t2f.nii.gz", tmp_path)
    manifest.write_text(f"patient_id,study_id,t1,t1ce,t2,flair\np1,s1,,{t1c},,{t2f}\n")
    ref = imaging.find_studies(manifest)[0]
    with pytest.raises(imaging.StudyError, match=r"^s1: missing modality t1, t2 \(has t1ce, flair\)$"):
        imaging.load_study(ref)
    volume = imaging.load_study(ref, modalities=("t1ce", "flair"))
    assert volume.image.shape == (2, 64, 64, 40)
    assert volume.label is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("patient_id,study_id,t1,t1ce,t2\n", "manifest lacks column(s) flair"),
        ("patient_id,study_id,t1,t1ce,t2,flair\n", "manifest lists no studies"),
        ("patient_id,study_id,t1,t1ce,t2,flair\n,s1,a,b,c,d\n", "empty patient_id or study_id"),
        ("patient_id,study_id,t1,t1ce,t2,flair,seg,label_map\np,s,a,b,c,d,e,3:7\n", "maps onto 7"),
        ("patient_id,study_id,t1,t1ce,t2,flair,seg,label_map\np,s,a,b,c,d,e,3-1\n", "not 'source:target'"),
    ],
)
def test_bad_manifest_is_a_study_error(tmp_path, text, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(imaging.StudyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        imaging.read_manifest(manifest)


def test_find_studies_accepts_dataset_study_folder_and_refuses_others(brats_cohort, tmp_path):
    studies = imaging.find_studies(brats_cohort)
    assert [s.study_id for s in studies] == sorted(p.name for p in brats_cohort.iterdir() if p.is_dir())
    one = imaging.find_studies(brats_cohort / studies[0].study_id)
    assert [s.study_id for s in one] == [studies[0].study_id]
    with pytest.raises(imaging.StudyError, match="no studies found"):
        imaging.find_studies(tmp_path)
    with pytest.raises(imaging.StudyError, match="no such file"):
        imaging.find_studies(tmp_path / "absent")


# ------------------------------------------------------------------------------------- writing


def test_write_nifti_is_readable_by_others_and_clears_free_text(tmp_path):
    header = nib.Nifti1Header()
    header["descrip"] = b"Patient: Jane Doe"
    path = imaging.write_nifti(np.ones((3, 4, 5), np.int16), np.eye(4), tmp_path / "a.nii.gz", header=header)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert nib.load(path).header["descrip"].item() == b""
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]  # no temp file left behind


def test_sanitize_keeps_scaled_values(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    image = nib.Nifti1Image(data, np.diag([0.9, 0.9, 1.5, 1]))
    image.header.set_slope_inter(0.5, 0.25)
    image.header["descrip"] = b"secret"
    nib.save(image, tmp_path / "in.nii.gz")
    shape, zooms = imaging.sanitize_nifti_file(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", 1000)
    out = nib.load(tmp_path / "out.nii.gz")
    assert shape == (3, 4, 5) and zooms == pytest.approx((0.9, 0.9, 1.5))
    np.testing.assert_allclose(np.asarray(out.dataobj), data * 0.5 + 0.25)
    assert out.header["descrip"].item() == b""


def test_save_mask_round_trip_with_permuted_axes(brats_cohort, tmp_path):
    """A mask written from canonical orientation lands on the input's voxel grid, for any axis order."""
    source = sorted(p for p in brats_cohort.iterdir() if p.is_dir())[0]
    # voxel axes (i, j, k) of the (64, 64, 40) arrays point to posterior, superior and left
    affine = np.array([[0, 0, -4.0, 10], [-3.5, 0, 0, 20], [0, 3.5, 0, -5], [0, 0, 0, 1]])
    study = tmp_path / source.name
    study.mkdir()
    for path in source.iterdir():
        data = np.asarray(nib.load(path).dataobj)
        nib.save(nib.Nifti1Image(data, affine), study / path.name)
    volume = imaging.load_study(imaging.study_from_dir(study))
    assert volume.image.shape == (4, 40, 64, 64)  # canonical R, A, S axis order
    assert volume.spacing == pytest.approx((4.0, 3.5, 3.5))
    assert volume.native_shape == (64, 64, 40)
    out = imaging.save_mask(volume.label, volume, tmp_path / "mask.nii.gz")
    written = nib.load(out)
    original = nib.load(study / f"{source.name}-seg.nii.gz")
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(original.dataobj))


# ------------------------------------------------------------------------------------- real scans


def _write_real_manifest(tmp_path: Path) -> Path:
    def rel(path: Path) -> str:
        return os.path.relpath(path, tmp_path)

    rows = [
        "patient_id,study_id,t1,t1ce,t2,flair,seg,label_map",
        f"glioma6,glioma6,,{rel(GLIOMA / 'T1c_subtrMeanDivStd.nii.gz')},,"
        f"{rel(GLIOMA / 'Flair_subtrMeanDivStd.nii.gz')},{rel(GLIOMA / 'OTMultiClass.nii.gz')},3:1 4:3",
        f"ms19,ms19,{rel(MS / 'T1.nii.gz')},{rel(MS / 'T1POST.nii.gz')},{rel(MS / 'T2.nii.gz')},"
        f"{rel(MS / 'FLAIR.nii.gz')},{rel(MS / 'GOLD_STANDARD.nii.gz')},",
    ]
    manifest = tmp_path / "real.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


@needs_real
def test_real_glioma_two_modalities_labels_orientation_and_brain_mask(tmp_path):
    glioma = imaging.find_studies(_write_real_manifest(tmp_path))[0]
    with pytest.raises(imaging.StudyError, match=r"^glioma6: missing modality t1, t2 \(has t1ce, flair\)$"):
        imaging.load_study(glioma)
    volume = imaging.load_study(glioma, modalities=("t1ce", "flair"))
    assert volume.image.shape == (2, 240, 240, 155)
    assert set(np.unique(volume.label).tolist()) == {0, 1, 2, 3}

    source = nib.load(GLIOMA / "OTMultiClass.nii.gz")
    assert nib.aff2axcodes(source.affine) == ("L", "P", "S")
    raw = np.asarray(source.dataobj).astype(np.int64)
    expected = np.select([raw == 3, raw == 4], [1, 3], raw)  # necrosis + non-enhancing → 1, enhancing → 3
    written = nib.load(imaging.save_mask(volume.label, volume, tmp_path / "glioma6_seg.nii.gz"))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)

    provided = np.asarray(nib.load(GLIOMA / "brainmask.nii.gz").dataobj) > 0.5
    provided = nib.orientations.apply_orientation(provided, volume.orientation)
    assert dice(brain_mask(volume.image), provided) >= 0.9  # constant non-zero background handled


@needs_real
def test_real_ms_case_loads_in_mni_geometry(tmp_path):
    ms = imaging.find_studies(_write_real_manifest(tmp_path))[1]
    volume = imaging.load_study(ms)
    assert volume.modalities == imaging.MODALITIES
    assert volume.image.shape == (4, 182, 218, 182)
    assert volume.native_shape == (182, 218, 182)
    assert volume.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert set(np.unique(volume.label).tolist()) == {0, 1}
    assert int(volume.label.sum()) == 49_769
    written = nib.load(imaging.save_mask(volume.label, volume, tmp_path / "ms19_seg.nii.gz"))
    source = nib.load(MS / "GOLD_STANDARD.nii.gz")
    np.testing.assert_allclose(written.affine, source.affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(source.dataobj))


def test_spacing_comes_from_the_affine_not_a_stale_pixdim(tmp_path):
    """An sform-only file whose pixdim says 1 mm: the geometry (and so the spacing) is the affine's."""
    study = tmp_path / "BraTS-MET-00009-000"
    study.mkdir()
    rng = np.random.default_rng(0)
    for suffix in ("t1n", "t1c", "t2w", "t2f"):
        header = nib.Nifti1Header()
        header.set_data_shape((6, 7, 8))
        header.set_data_dtype(np.float32)
        header.set_sform(np.diag([-2.0, -2.0, 3.0, 1.0]), code=1)
        header.set_qform(None, code=0)
        header["pixdim"][1:4] = 1.0
        data = rng.random((6, 7, 8), dtype=np.float32) + 1
        (study / f"{study.name}-{suffix}.nii").write_bytes(
            header.binaryblock + b"\0" * 4 + data.tobytes(order="F")
        )
    volume = imaging.load_study(imaging.study_from_dir(study))
    assert volume.spacing == pytest.approx((2.0, 2.0, 3.0))
