"""Naming series t1 / t1ce / t2 / flair: the built-in rules on scanner-style names and sequence timing, a
rules file that replaces them, and a mapping that overrides them; nothing is guessed."""

from __future__ import annotations

import json

import pytest

from bmcore.dicom import DicomError, load_rules, parse_mapping
from bmcore.dicom.identify import identify
from bmcore.dicom.placement import place_series
from bmcore.dicom.series import MR_IMAGE_STORAGE, Series

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def series(
    number, description, te=None, tr=None, ti=None, agent="", image_type="ORIGINAL\\PRIMARY\\M", sop=None
):
    attributes = {
        "echo_time": te,
        "repetition_time": tr,
        "inversion_time": ti,
        "sequence": "",
        "image_type": image_type,
        "contrast_agent": agent,
    }
    return Series(
        uid=f"1.2.3.{number}",
        number=number,
        description=description,
        protocol="",
        sop_class_uid=sop or MR_IMAGE_STORAGE,
        study_uid="1.2.3",
        frame_of_reference_uid="1.2.3.0",
        attributes=attributes,
    )


@pytest.mark.parametrize(
    ("made", "modality"),
    [
        (series(3, "t1_mprage_sag_p2_iso", 2.3, 2000, 900), "t1"),
        (series(9, "T1 MPRAGE POST GD", 2.3, 2000, 900), "t1ce"),
        (series(9, "t1_mprage_tra_p2_iso", 2.3, 2000, 900, agent="GADOVIST"), "t1ce"),
        (series(4, "AX T1 SE +C", 12, 550), "t1ce"),
        (series(4, "Ax T1 pre", 12, 550), "t1"),
        (series(4, "Sag 3D T1 BRAVO", 3, 8, agent="MultiHance"), "t1ce"),
        (series(5, "t2_tse_tra", 96, 5000), "t2"),
        (series(6, "AX T2 FSE", 100, 4000), "t2"),
        (series(7, "t2_tirm_tra_dark-fluid", 85, 9000, 2500), "flair"),
        (series(8, "AX T2 FLAIR", 120, 9000, 2400), "flair"),
        (series(8, "Ax T1 FLAIR", 10, 2000, 800), "t1"),
        (series(10, "unnamed", 110, 9000, 2500), "flair"),
        (series(11, "unnamed", 100, 4000), "t2"),
        (series(12, "unnamed", 10, 500), "t1"),
        (series(13, "unnamed", 10, 500, agent="Gd"), "t1ce"),
        (series(1, "localizer", 4, 8), None),
        (series(14, "ep2d_diff_3scan_trace", 90, 6000), None),
        (
            series(15, "T1 MPRAGE POST GD_MPR_cor", 2.3, 2000, 900, image_type="DERIVED\\SECONDARY\\MPR"),
            "t1ce",
        ),
        (series(16, "unnamed"), None),
        (series(2, "CT head", sop=CT_IMAGE_STORAGE), None),
    ],
    ids=lambda v: v.description if isinstance(v, Series) else str(v),
)
def test_the_built_in_rules_name_scanner_series(made, modality):
    found = identify(made, load_rules())
    assert found.modality == modality, found.why
    assert found.why


def test_a_rules_file_replaces_the_built_in_table(tmp_path):
    rules = {
        "contrast_words": r"\bkm\b",
        "rules": [
            {"modality": "t1ce", "text": r"\bt1\b", "contrast": True, "why": "site rule: T1 with KM"},
            {"modality": "t1", "text": r"\bt1\b"},
            {"modality": "flair", "inversion_time": [2000, None]},
        ],
    }
    (tmp_path / "rules.json").write_text(json.dumps(rules))
    (tmp_path / "rules.toml").write_text(
        'rules = [{modality = "t2", echo_time = [80, inf]}, {modality = "ignore", text = "."}]\n'
    )
    table = load_rules(tmp_path / "rules.json")
    assert identify(series(1, "T1 KM tra"), table).why == "site rule: T1 with KM (its name says contrast)"
    assert identify(series(1, "T1 post tra"), table).modality == "t1"  # "post" is no contrast word here
    assert identify(series(1, "whatever", ti=2400), table).modality == "flair"
    assert identify(series(1, "t2_tse_tra", te=96), table).modality is None
    toml = load_rules(tmp_path / "rules.toml")
    assert identify(series(1, "t1 anything", te=96), toml).modality == "t2"
    assert identify(series(1, "t2_tse_tra", te=20), toml).why == "ignored: an ignore rule holds"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"rules": [{"modality": "t1", "colour": "red"}]}', "rules.json: rule 1: unknown key(s) colour"),
        (
            '{"rules": [{"modality": "t1", "text": "("}]}',
            "rules.json: rule 1: text: not a regular expression",
        ),
        (
            '{"rules": [{"modality": "pd"}]}',
            "rules.json: rule 1: modality must be one of t1, t1ce, t2, flair",
        ),
        ('{"rules": [{"modality": "t2", "echo_time": [80]}]}', "rule 1: echo_time: expected [min, max]"),
        ('{"rules": []}', "rules.json: expected a table with a non-empty list 'rules'"),
        ("{not json", "rules.json: not valid json"),
    ],
)
def test_a_bad_rules_file_is_refused_by_rule(tmp_path, content, message):
    (tmp_path / "rules.json").write_text(content)
    with pytest.raises(DicomError) as refused:
        load_rules(tmp_path / "rules.json")
    assert message in str(refused.value)


def test_the_rules_file_setting_is_used(tmp_path, monkeypatch):
    from bmcore.config import get_settings

    (tmp_path / "rules.json").write_text('{"rules": [{"modality": "flair", "text": "."}]}')
    monkeypatch.setenv("BMSEG_DICOM_RULES_FILE", str(tmp_path / "rules.json"))
    get_settings.cache_clear()
    try:
        assert identify(series(1, "t1_mprage"), load_rules()).modality == "flair"
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_parse_mapping_reads_number_equals_modality():
    assert parse_mapping(["5=t1ce", " 7 = flair "]) == {5: "t1ce", 7: "flair"}
    for bad, message in (
        ("5:t1ce", "expected SERIES_NUMBER=MODALITY"),
        ("x=t1", "expected"),
        ("5=pd", "expected"),
    ):
        with pytest.raises(DicomError, match=message):
            parse_mapping([bad])
    with pytest.raises(DicomError, match="series 5 is given twice"):
        parse_mapping(["5=t1", "5=t2"])


def _found(items):
    rules = load_rules()
    return {s.uid: identify(s, rules) for s in items}


def test_a_mapping_must_name_an_mr_series_that_is_there():
    items = [series(3, "t1_mprage"), series(2, "CT head", sop=CT_IMAGE_STORAGE)]
    with pytest.raises(DicomError, match=r"there is no series 12 \(series here: 3, 2\)"):
        place_series(items, _found(items), {12: "t1"})
    with pytest.raises(DicomError, match='series 2 "CT head" is CT Image Storage, not an MR image series'):
        place_series(items, _found(items), {2: "t1"})
    with pytest.raises(DicomError, match="t1 is given to series 3 and 2"):
        place_series(items, _found(items), {3: "t1", 2: "t1"})


def test_a_mapping_overrides_the_rules_and_the_rest_is_reported():
    items = [
        series(3, "t1_mprage_sag", 2.3, 2000, 900),
        series(5, "t2_tse_tra", 96, 5000),
        series(6, "t2_tse_cor", 96, 5000),
        series(7, "t2_tirm_tra_dark-fluid", 85, 9000, 2500),
        series(9, "T1 POST GD", 2.3, 2000, 900),
        series(1, "localizer"),
    ]
    with pytest.raises(DicomError, match='t2: series 5 "t2_tse_tra" and series 6 "t2_tse_cor" all fit'):
        place_series(items, _found(items))
    placement = place_series(items, _found(items), {6: "t2"})
    assert {m: s.number for m, s in placement.chosen.items()} == {"t1": 3, "t1ce": 9, "t2": 6, "flair": 7}
    assert [(s.number, why) for s, why in placement.unplaced] == [
        (5, 'reads as t2, but t2 is series 6 "t2_tse_cor"'),
        (1, "ignored: not a structural series"),
    ]


def test_of_several_fits_the_one_original_is_chosen_over_reformats():
    items = [
        series(3, "t1_mprage_sag", 2.3, 2000, 900),
        series(5, "t2_tse_tra", 96, 5000),
        series(7, "t2_tirm_tra_dark-fluid", 85, 9000, 2500),
        series(9, "T1 POST GD", 2.3, 2000, 900),
        series(10, "T1 POST GD_MPR_cor", 2.3, 2000, 900, image_type="DERIVED\\SECONDARY\\MPR"),
        series(11, "T1 POST GD_MPR_tra", 2.3, 2000, 900, image_type="DERIVED\\SECONDARY\\MPR"),
    ]
    placement = place_series(items, _found(items))
    assert placement.chosen["t1ce"].number == 9
    assert placement.why["t1ce"].endswith("; the one original of 3 series that fit (the others are DERIVED)")
    assert [why for _, why in placement.unplaced] == [
        'reads as t1ce (DERIVED), but t1ce is series 9 "T1 POST GD"'
    ] * 2
    both_derived = [s for s in items if s.number != 9]
    with pytest.raises(DicomError, match='t1ce: series 10 "T1 POST GD_MPR_cor" and series 11 .* all fit'):
        place_series(both_derived, _found(both_derived))
