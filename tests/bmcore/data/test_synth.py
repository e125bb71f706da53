"""Tests of bmcore.data.synth: both layouts read back through bmcore.imaging with the truth
cohort.json records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bmcore import imaging
from bmcore.data.synth import (
    LAYOUTS,
    NECROSIS_ABOVE_MM,
    draw_anatomy,
    place_lesions,
    plan_cohort,
    synth_cohort,
)

SMALL_SHAPE = (64, 64, 40)
SMALL_SPACING = (3.5, 3.5, 4.0)
BMSEG = Path(sys.executable).with_name("bmseg")


def raw(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def cohort_record(root: Path) -> dict:
    return json.loads((root / "cohort.json").read_text())


def test_brats_layout_reads_back_multiclass_with_patients(brats_cohort):
    refs = imaging.find_studies(brats_cohort)
    record = cohort_record(brats_cohort)
    assert [r.study_id for r in refs] == sorted(s["study_id"] for s in record["studies"])
    present = set()
    for ref in refs:
        assert ref.layout == "brats" and ref.label_kind == "multiclass"
        assert ref.patient_id == ref.study_id.split("-")[2]  # BraTS-MET-00001-000 → 00001
        volume = imaging.load_study(ref)
        assert volume.image.shape == (4, *SMALL_SHAPE)
        assert volume.spacing == pytest.approx(SMALL_SPACING)
        assert nib.aff2axcodes(nib.load(ref.images["t1"]).affine) == ("L", "P", "S")
        values = set(np.unique(volume.label).tolist())
        assert values <= {0, 1, 2, 3}
        present |= values
    assert present == {0, 1, 2, 3}
    assert refs[0].study_id == "BraTS-MET-00001-000" and refs[0].patient_id == "00001"
    visits = [r.patient_id for r in refs]
    assert len(set(visits)) < len(visits), "seed 0 has a patient with two visits"
    assert {r.patient_id for r in refs} == set(record["patients"])


def test_ucsf_layout_labels_spacing_and_patients(ucsf_cohort):
    refs = imaging.find_studies(ucsf_cohort)
    record = {s["study_id"]: s for s in cohort_record(ucsf_cohort)["studies"]}
    kinds = set()
    for ref in refs:
        assert ref.layout == "ucsf"
        assert ref.patient_id == ref.study_id[:6] and ref.study_id[6:] in "ABC"
        assert record[ref.study_id]["patient_id"] == ref.patient_id
        binary = raw(ucsf_cohort / ref.study_id / f"{ref.study_id}_seg.nii.gz")
        assert set(np.unique(binary).tolist()) <= {0, 1}
        volume = imaging.load_study(ref)
        assert volume.spacing == pytest.approx(SMALL_SPACING)
        brats_seg = ucsf_cohort / ref.study_id / f"{ref.study_id}_BraTS-seg.nii.gz"
        kinds.add(ref.label_kind)
        if brats_seg.exists():  # preferred over the binary file
            assert ref.label == brats_seg and ref.label_kind == "multiclass"
            np.testing.assert_array_equal(volume.label, raw(brats_seg))
            np.testing.assert_array_equal(volume.label == 3, binary == 1)
        else:  # enhancing-only: 1 → 3
            assert ref.label_kind == "enhancing"
            np.testing.assert_array_equal(volume.label, binary * 3)
    assert kinds == {"multiclass", "enhancing"}
    patients = [r.patient_id for r in refs]
    assert len(set(patients)) < len(patients)
    assert imaging.UCSF_ID.match("100101A").group(1) == "100101"


def test_default_grids_follow_the_layouts():
    for layout, (shape, spacing) in {
        "brats": ((240, 240, 155), (1.0, 1.0, 1.0)),
        "ucsf": ((240, 240, 110), (0.86, 0.86, 1.5)),
    }.items():
        plans, _ = plan_cohort(3, 0, layout)
        assert all(p.shape == shape and p.spacing == spacing for p in plans)
        assert LAYOUTS[layout][:2] == (shape, spacing)


def test_images_int16_labels_uint8_on_disk(ucsf_cohort):
    for ref in imaging.find_studies(ucsf_cohort):
        for path in ref.images.values():
            assert nib.load(path).get_data_dtype() == np.int16
        assert nib.load(ref.label).get_data_dtype() == np.uint8


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synth_cohort(tmp_path / name, 2, seed, "ucsf", shape=(40, 40, 24), spacing=(4.0, 4.0, 5.0), workers=1)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    first_a = next(p for p in files_a if p.name.endswith("_FLAIR.nii.gz"))
    other = tmp_path / "c" / first_a
    assert not other.exists() or not np.array_equal(raw(tmp_path / "a" / first_a), raw(other))


def test_cohort_json_matches_the_label_maps(brats_cohort, ucsf_cohort):
    lesions_seen = necrotic_seen = 0
    for root in (brats_cohort, ucsf_cohort):
        record = cohort_record(root)
        refs = {r.study_id: r for r in imaging.find_studies(root)}
        for study in record["studies"]:
            ref = refs[study["study_id"]]
            label_path = ref.label if ref.label_kind == "multiclass" else None
            if label_path is None:
                continue
            labels = raw(label_path)  # file voxel order, like the records' centre_vox
            counts = {str(k): int((labels == k).sum()) for k in range(4)}
            assert study["label_voxels"] == counts
            affine = nib.load(label_path).affine
            for lesion in study["lesions"]:
                lesions_seen += 1
                centre = np.asarray(lesion["centre_vox"])
                assert labels[tuple(centre.astype(int))] in (1, 3), lesion  # tumour core at the centre
                np.testing.assert_allclose(
                    (affine @ np.append(centre, 1))[:3], lesion["centre_mm"], atol=0.01
                )
                low, high = (2.0, 30.0) if study["visit"] == 0 else (2.0 * 0.6, 30.0 * 1.4)
                assert low <= lesion["diameter_mm"] <= high
                assert lesion["necrotic"] == (lesion["diameter_mm"] > NECROSIS_ABOVE_MM)
                if lesion["necrotic"]:
                    necrotic_seen += 1
                    radius = [lesion["diameter_mm"] / 2 / s for s in SMALL_SPACING]
                    box = tuple(
                        slice(max(0, int(c - r)), int(c + r) + 1) for c, r in zip(centre, radius, strict=True)
                    )
                    assert (labels[box] == 1).any(), f"no necrosis in a {lesion['diameter_mm']} mm lesion"
    assert lesions_seen >= 5 and necrotic_seen >= 1


def test_lesion_diameters_span_the_range():
    diameters = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        _, brain_r = draw_anatomy(rng, (48, 48, 40), (4.0, 4.0, 4.0))
        for _ in range(20):
            diameters += [lesion.diameter_mm for lesion in place_lesions(rng, brain_r, (4, 4, 4), np.eye(4))]
    diameters = np.asarray(diameters)
    assert diameters.min() >= 2.0 and diameters.max() <= 30.0
    assert (diameters < 4).any() and (diameters > 15).any()


def test_synth_command(tmp_path):
    out = tmp_path / "cohort"
    args = f"synth {out} --cases 2 --layout ucsf --shape 40,40,24 --spacing 4,4,5 --workers 1".split()
    result = subprocess.run([str(BMSEG), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote 2 studies" in result.stdout
    assert len(imaging.find_studies(out)) == 2
    bad = subprocess.run(
        [str(BMSEG), "synth", str(tmp_path / "x"), "--layout", "nifti"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: unknown layout 'nifti'") and bad.stderr.count("\n") == 1
    assert not (tmp_path / "x").exists()
