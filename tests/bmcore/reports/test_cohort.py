"""The cohort summary (bmcore.reports.cohort) on a small synthetic cohort: primary cancers in the generator's
proportions, lesion counts, the split, class shares, the report's JSON and PNGs, and ``bmseg cohort``."""

from __future__ import annotations

import itertools
import json
import math

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from bmcore.data.synth import PRIMARY_CANCERS, synth_cohort
from bmcore.imaging import find_studies
from bmcore.reports import cohort

CASES = 80
SHAPE = (40, 40, 24)
SPACING = (5.0, 5.0, 6.5)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """80 studies of about 56 patients on a coarse grid (about 2 s), its cohort.json and its summary."""
    root = tmp_path_factory.mktemp("cohort") / "data"
    record = synth_cohort(root, CASES, 11, "brats", shape=SHAPE, spacing=SPACING, workers=2)
    return root, record, cohort.summarize_cohort(root, seed=4)


def tumour_core_components(path) -> int:
    """Lesions counted independently of bmcore: nibabel + scipy, 26-connectivity on labels {1, 3}."""
    labels = np.asarray(nib.load(str(path)).dataobj)
    _, count = ndimage.label(np.isin(labels, (1, 3)), structure=np.ones((3, 3, 3)))
    return count


def well_separated(lesions: list[dict]) -> bool:
    """No two lesions can touch: painted voxel centres lie within 1.15 radii of their centre (the
    generator's largest ellipsoid axis), and touching voxels are at most one voxel diagonal apart."""
    diagonal = math.dist((0, 0, 0), SPACING)
    for first, second in itertools.combinations(lesions, 2):
        reach = 1.15 * (first["diameter_mm"] + second["diameter_mm"]) / 2 + diagonal
        if math.dist(first["centre_mm"], second["centre_mm"]) <= reach:
            return False
    return True


def test_counts_and_visits(synthetic):
    _, record, summary = synthetic
    assert summary["counts"]["patients"] == len(record["patients"])
    assert summary["counts"]["studies"] == CASES == summary["counts"]["labelled_studies"]
    histogram = {int(k): v for k, v in summary["visits_per_patient"]["histogram"].items()}
    assert sum(histogram.values()) == len(record["patients"])
    assert sum(k * v for k, v in histogram.items()) == CASES
    assert summary["skipped"] == []


def test_primary_cancers_match_the_generator_within_sampling_error(synthetic):
    _, record, summary = synthetic
    info = summary["primary_cancer"]
    drawn = {name: 0 for name in PRIMARY_CANCERS}
    for patient in record["patients"].values():
        drawn[patient["primary_cancer"]] += 1
    assert info["counts"] == drawn and info["unknown"] == 0
    n = sum(drawn.values())
    for name, p in PRIMARY_CANCERS.items():
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(info["shares"][name] - p) <= 3 * sigma, (name, info["shares"][name], p)
    assert info["reference"] == {
        "lung": 0.39,
        "breast": 0.245,
        "melanoma": 0.163,
        "renal": 0.043,
        "other": 0.158,
    }
    assert {p["patient_id"]: p["primary_cancer"] for p in summary["patients"]} == {
        pid: patient["primary_cancer"] for pid, patient in record["patients"].items()
    }


def test_lesion_counts_match_the_labels_and_cohort_json(synthetic):
    root, record, summary = synthetic
    by_study = {r["study_id"]: r for r in summary["studies"]}
    refs = {ref.study_id: ref for ref in find_studies(root)}
    separated = 0
    for study in record["studies"]:
        counted = by_study[study["study_id"]]["lesions"]
        assert counted == tumour_core_components(refs[study["study_id"]].label)
        assert counted <= len(study["lesions"])  # touching lesions merge into one component
        if well_separated(study["lesions"]):
            separated += 1
            assert counted == len(study["lesions"]), study["study_id"]
    assert separated >= CASES // 3  # the exact check covers a good part of the cohort
    assert summary["lesions"]["total"] == sum(r["lesions"] for r in summary["studies"])
    assert (
        sum(int(k) * v for k, v in summary["lesions"]["per_study_histogram"].items())
        == summary["lesions"]["total"]
    )
    assert sum(summary["lesions"]["diameter_bins"].values()) == summary["lesions"]["total"]
    voxel_diameter = (6 * np.prod(SPACING) / math.pi) ** (1 / 3)
    assert summary["lesions"]["diameter_mm"]["min"] == pytest.approx(voxel_diameter, abs=0.01)


def test_split_proportions(synthetic):
    _, record, summary = synthetic
    split = summary["split"]
    n = len(record["patients"])
    assert split["seed"] == 4 and split["ratios"] == {"train": 0.67, "val": 0.2, "test": 0.13}
    assert split["patients"]["val"] == round(0.20 * n) and split["patients"]["test"] == round(0.13 * n)
    assert abs(split["patients"]["train"] - 0.67 * n) <= 1
    assert sum(split["patients"].values()) == n and sum(split["studies"].values()) == CASES
    members = [set(split["members"][side]) for side in ("train", "val", "test")]
    assert set.union(*members) == set(record["patients"]) and sum(map(len, members)) == n
    for side, share in split["patient_shares"].items():
        assert share == pytest.approx(split["patients"][side] / n, abs=1e-4)


def test_class_distribution_of_labels_and_predictions(synthetic, tmp_path):
    root, record, summary = synthetic
    labels = summary["class_distribution"]["labels"]
    expected = {
        name: sum(study["label_voxels"][str(value)] for study in record["studies"])
        for name, value in cohort.CLASSES.items()
    }
    assert labels["voxels"] == expected and labels["studies"] == CASES
    assert sum(labels["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert summary["class_distribution"]["predictions"] is None
    assert summary["class_distribution"]["reference_predicted"] == {"NETC": 0.329, "SNFH": 0.316, "ET": 0.356}

    # Predictions: one study's own label, another one's label with everything tumour turned to ET.
    refs = find_studies(root)
    first, second = refs[0], refs[1]
    image = nib.load(str(second.label))
    data = np.asarray(image.dataobj)
    all_et = tmp_path / "all_et.nii.gz"
    nib.save(nib.Nifti1Image(np.where(data > 0, 3, 0).astype(np.uint8), image.affine), all_et)
    result = cohort.summarize_studies(
        refs[:2], predictions={first.study_id: first.label, second.study_id: all_et}
    )
    predicted = result["class_distribution"]["predictions"]
    records = {r["study_id"]: r for r in result["studies"]}
    assert predicted["studies"] == 2
    assert records[first.study_id]["predicted_class_voxels"] == records[first.study_id]["class_voxels"]
    tumour = int((data > 0).sum())
    assert records[second.study_id]["predicted_class_voxels"] == {"NETC": 0, "SNFH": 0, "ET": tumour}


def test_enhancing_only_labels_count_lesions_but_not_classes(tmp_path):
    record = synth_cohort(tmp_path / "ucsf", 6, 2, "ucsf", shape=(32, 32, 20), spacing=(6, 6, 8), workers=1)
    summary = cohort.summarize_cohort(tmp_path / "ucsf")
    kinds = {r["study_id"]: r["label_kind"] for r in summary["studies"]}
    multiclass = sum(1 for kind in kinds.values() if kind == "multiclass")
    assert set(kinds.values()) == {"multiclass", "enhancing"}  # seed 2 gives both kinds
    assert summary["counts"]["labelled_studies"] == 6 and summary["counts"]["multiclass_labels"] == multiclass
    assert summary["class_distribution"]["labels"]["studies"] == multiclass
    for study in summary["studies"]:
        assert study["lesions"] is not None and (study["class_voxels"] is None) == (
            study["label_kind"] == "enhancing"
        )
    assert len(record["patients"]) == summary["counts"]["patients"]


def test_cli_cohort_writes_json_and_valid_plots(synthetic, tmp_path):
    from bmcore.cli import app

    root, _, summary = synthetic
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["cohort", str(root), "-o", str(out), "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "primary cancer" in result.output and "melanoma" in result.output and "train" in result.output
    written = json.loads((out / "cohort.json").read_text())
    assert written["counts"] == summary["counts"] and written["split"] == summary["split"]
    assert list(written["plots"]) == list(cohort.PLOTS)
    for name, file in written["plots"].items():
        with Image.open(out / file) as image:
            image.verify()
        with Image.open(out / file) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 150, name
            assert len(set(image.convert("L").getdata())) > 8, f"{name} looks blank"
    assert written["sample"]["study_id"] in {r["study_id"] for r in written["studies"]}
    assert 0 <= written["sample"]["slice"] < SHAPE[2]

    with pytest.raises(ValueError, match="is the data folder"):
        cohort.write_cohort_report(root, root)


def test_lesion_volume_plot(tmp_path):
    path = cohort.plot_lesion_volumes(
        [
            {"label": "A", "volumes_ml": [0.5, 2.0]},
            {"label": "B", "volumes_ml": []},
            {"label": "C", "volumes_ml": [4]},
        ],
        tmp_path / "volumes.png",
    )
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200
