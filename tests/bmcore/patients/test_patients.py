"""Patient metadata import (bmcore.patients): column aliases, normalisation, missing patients, all-or-nothing,
the synthetic cohort's cohort.json, and the CLI command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bmcore.db import Patient, init_db, make_engine
from bmcore.db.groups import DEFAULT_GROUP, group_named
from bmcore.patients import (
    MetadataError,
    apply_patient_update,
    import_cohort_json,
    import_metadata,
    map_columns,
    normalize_header,
    normalize_primary,
    validate_patient_update,
)


@pytest.fixture
def session(sqlite_url):
    from sqlalchemy.orm import sessionmaker

    init_db(sqlite_url)
    engine = make_engine(sqlite_url)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    with factory() as session:
        group = group_named(session, DEFAULT_GROUP)
        for pseudonym in ("100101", "100102", "00007"):
            session.add(Patient(pseudonym=pseudonym, clinical={"note_kept": "yes"}, group=group))
        session.commit()
    yield factory
    engine.dispose()


def write_csv(tmp_path: Path, text: str, name: str = "subjects.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(factory) -> dict[str, Patient]:
    with factory() as session:
        return {p.pseudonym: p for p in session.scalars(select(Patient))}


def test_good_file_with_ucsf_like_headers(session, tmp_path):
    path = write_csv(
        tmp_path,
        "bmr_id,Primary Diagnosis,Age (years),Sex,KPS\n"
        "100101,Non-small cell lung cancer (NSCLC),63,Female,80\n"
        "100102A,Melanoma,48.5,m,\n"  # a visit id finds its patient
        "7,GI (colorectal),70,M,90\n",  # a spreadsheet dropped the leading zeros
    )
    with session() as s:
        report = import_metadata(s, path)
    assert report.rows == 3 and sorted(report.updated) == ["00007", "100101", "100102"] and not report.created
    assert report.columns == {
        "bmr_id": "patient_id",
        "Primary Diagnosis": "primary_cancer",
        "Age (years)": "age",
        "Sex": "sex",
        "KPS": "kps",
    }
    patients = rows(session)
    assert patients["100101"].primary_cancer == "lung"
    assert patients["100101"].clinical == {
        "note_kept": "yes",
        "age": 63,
        "sex": "F",
        "kps": 80,
        "primary_cancer_text": "Non-small cell lung cancer (NSCLC)",
    }
    assert patients["100102"].primary_cancer == "melanoma"
    assert patients["100102"].clinical["age"] == 48.5 and "kps" not in patients["100102"].clinical
    assert patients["00007"].primary_cancer == "other"
    assert patients["00007"].clinical["primary_cancer_text"] == "GI (colorectal)"


def test_semicolon_separated_file_and_explicit_column_map(session, tmp_path):
    path = write_csv(tmp_path, "Subject;Dx;Geschlecht\n100101;breast;w\n")
    with session() as s:
        report = import_metadata(s, path, {"Dx": "primary_cancer", "Geschlecht": "sex"})
    assert report.columns["Subject"] == "patient_id"
    patient = rows(session)["100101"]
    assert patient.primary_cancer == "breast" and patient.clinical["sex"] == "F"
    assert "primary_cancer_text" not in patient.clinical  # the value was already a clean name


def test_tab_separated_file_with_a_quoted_multiline_cell(session, tmp_path):
    path = write_csv(tmp_path, 'ID\tprimary\thistology\n100101\tBreast\t"ductal,\nHER2+"\n100102\tlung\t\n')
    with session() as s:
        report = import_metadata(s, path)
    assert report.rows == 2
    patients = rows(session)
    assert patients["100101"].clinical["histology"] == "ductal,\nHER2+"
    assert patients["100102"].primary_cancer == "lung"


def test_unknown_column_is_an_error_and_nothing_is_written(session, tmp_path):
    path = write_csv(tmp_path, "patient_id,primary,shoe_size,Favourite colour\n100101,lung,42,blue\n")
    with session() as s, pytest.raises(MetadataError) as error:
        import_metadata(s, path)
    message = str(error.value)
    assert "\n" not in message
    assert "'shoe_size', 'Favourite colour'" in message and "bmr_id" in message and "--allow-extra" in message
    assert rows(session)["100101"].primary_cancer is None

    with session() as s:
        import_metadata(s, path, allow_extra=True)
    patient = rows(session)["100101"]
    assert patient.primary_cancer == "lung"
    assert patient.clinical["shoe_size"] == "42" and patient.clinical["Favourite colour"] == "blue"


def test_missing_patients_are_listed_and_nothing_is_written(session, tmp_path):
    path = write_csv(tmp_path, "ID,primary\n100101,breast\n999001,lung\n999002,renal cell carcinoma\n")
    with (
        session() as s,
        pytest.raises(MetadataError, match=r"2 patient\(s\) not in group default: 999001, 999002"),
    ):
        import_metadata(s, path)
    patients = rows(session)
    assert patients["100101"].primary_cancer is None and "999001" not in patients

    with session() as s:
        report = import_metadata(s, path, create_missing=True)
    assert report.created == ["999001", "999002"] and report.updated == ["100101"]
    patients = rows(session)
    assert patients["999002"].primary_cancer == "renal" and patients["100101"].primary_cancer == "breast"


def test_a_bad_value_late_in_the_file_writes_nothing(session, tmp_path):
    path = write_csv(tmp_path, "patient_id,primary,age\n100101,lung,60\n100102,breast,sixty\n")
    with session() as s, pytest.raises(MetadataError, match=r"subjects.csv:3: age 'sixty' is not a number"):
        import_metadata(s, path)
    assert rows(session)["100101"].primary_cancer is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("primary,age\nlung,60\n", "no patient id column"),
        ("patient_id,subject_id\n100101,100101\n", "all mean patient_id"),
        ("patient_id,primary\n100101,lung\n100101,breast\n", "appears again (first on line 2)"),
        ("patient_id,primary\n,lung\n", "subjects.csv:2: empty patient id"),
        ("", "empty file"),
    ],
)
def test_malformed_files(session, tmp_path, text, message):
    path = write_csv(tmp_path, text)
    with session() as s, pytest.raises(MetadataError, match=re.escape(message)):
        import_metadata(s, path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Lung", "lung"),
        ("NSCLC", "lung"),
        ("small cell lung carcinoma", "lung"),
        ("Breast (HER2+)", "breast"),
        ("cutaneous melanoma", "melanoma"),
        ("Renal cell carcinoma", "renal"),
        ("RCC", "renal"),
        ("kidney", "renal"),
        ("GI", "other"),
        ("colorectal", "other"),
        ("unknown primary", "other"),
        ("Unknown", "other"),
        ("ovarian", "other"),
        ("", None),
        ("  ", None),
        ("NaN", None),
    ],
)
def test_primary_cancer_normalisation(value, expected):
    assert normalize_primary(value) == expected


def test_header_normalisation_and_aliases():
    assert normalize_header("Primary Diagnosis") == "primary_diagnosis"
    assert normalize_header("\ufeffSubject-ID ") == "subject_id"
    assert normalize_header("Age (years)") == "age_years"
    mapping = map_columns(["BMR ID", "Primary Tumor", "gender", "Karnofsky"])
    assert mapping == {
        "BMR ID": "patient_id",
        "Primary Tumor": "primary_cancer",
        "gender": "sex",
        "Karnofsky": "kps",
    }


def test_import_cohort_json_in_the_generators_proportions(session, tmp_path):
    from bmcore.data.synth import plan_cohort

    _, primaries = plan_cohort(60, 3, "ucsf")
    cohort = {"patients": {pid: {"primary_cancer": p} for pid, p in primaries.items()}, "studies": []}
    (tmp_path / "cohort.json").write_text(json.dumps(cohort))
    with session() as s:
        report = import_cohort_json(s, tmp_path)
    patients = rows(session)
    assert all(patients[pid].primary_cancer == primary for pid, primary in primaries.items())
    assert "100101" in report.updated and len(report.created) == len(primaries) - sum(
        1 for pid in primaries if pid in ("100101", "100102")
    )
    assert sum(report.primary_cancer.values()) == len(primaries)

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cohort.json").write_text("[1, 2]")
    with session() as s, pytest.raises(MetadataError, match="not a synthetic cohort"):
        import_cohort_json(s, tmp_path / "bad")


def test_update_validation():
    primary, given, clinical = validate_patient_update(
        {"primary_cancer": "renal", "clinical": {"age": "71", "kps": 90, "sex": "F", "x": None}}
    )
    assert (primary, given, clinical) == ("renal", True, {"age": 71, "kps": 90, "sex": "F", "x": None})
    patient = Patient(pseudonym="p", clinical={"x": "old", "y": 1})
    apply_patient_update(patient, primary, given, clinical)
    assert patient.primary_cancer == "renal" and patient.clinical == {
        "y": 1,
        "age": 71,
        "kps": 90,
        "sex": "F",
    }
    for body, message in (
        ({"primary_cancer": "liver"}, "primary_cancer must be one of"),
        ({"age": 3}, "unknown field"),
        ({"clinical": {"age": 200}}, "age must be a number from 0 to 150"),
        ({"clinical": {"kps": "good"}}, "kps must be a number"),
        ({"clinical": {"a": [1]}}, "must be a string"),
        ([], "JSON object"),
    ):
        with pytest.raises(ValueError, match=message):
            validate_patient_update(body)


def test_cli_patients_import(sqlite_url, monkeypatch, tmp_path):
    from bmcore.cli import app
    from bmcore.config import get_settings
    from bmcore.db import dispose_engines

    monkeypatch.setenv("BMSEG_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    try:
        path = write_csv(tmp_path, "patient_id,primary,Sex\nP1,lung,F\n")
        runner = CliRunner()
        refused = runner.invoke(app, ["patients", "import", str(path)])
        assert refused.exit_code != 0 and "not in group default: P1" in str(refused.exception)
        result = runner.invoke(app, ["patients", "import", str(path), "--create-missing"])
        assert result.exit_code == 0, result.output
        assert "1 created" in result.output and "lung 1" in result.output
        mapped = write_csv(tmp_path, "patient_id,Dx\nP1,melanoma\n", "mapped.csv")
        result = runner.invoke(app, ["patients", "import", str(mapped), "--column", "Dx=primary_cancer"])
        assert result.exit_code == 0, result.output
        with make_engine(sqlite_url).connect() as connection:
            value = connection.exec_driver_sql("SELECT primary_cancer FROM patients").scalar()
        assert value == "melanoma"
    finally:
        get_settings.cache_clear()
        dispose_engines()


# ----------------------------------------------------------------------------------------- groups


def group_patients(factory, name: str) -> dict[str, Patient]:
    from bmcore.db import Group

    with factory() as session:
        query = select(Patient).join(Group, Patient.group_id == Group.id).where(Group.name == name)
        return {p.pseudonym: p for p in session.scalars(query)}


def test_an_import_writes_into_its_group_only(session, tmp_path):
    """The same pseudonym in another group is another patient: an import into clinic-a neither reads nor
    changes the default group's 100101, and creates its missing patients in clinic-a."""
    from bmcore.db import Group

    with session() as s:
        s.add(Group(name="clinic-a"))
        s.commit()
    path = write_csv(tmp_path, "patient_id,primary,age\n100101,breast,51\n")
    with session() as s, pytest.raises(MetadataError, match=r"1 patient\(s\) not in group clinic-a: 100101"):
        import_metadata(s, path, group="clinic-a")
    with session() as s:
        report = import_metadata(s, path, create_missing=True, group="clinic-a")
    assert report.created == ["100101"] and not report.updated
    created = group_patients(session, "clinic-a")["100101"]
    assert created.primary_cancer == "breast" and created.clinical == {"age": 51}
    default = group_patients(session, DEFAULT_GROUP)["100101"]
    assert default.primary_cancer is None and default.clinical == {"note_kept": "yes"}

    again = write_csv(tmp_path, "patient_id,primary\n100101,lung\n", "again.csv")
    with session() as s:
        assert import_metadata(s, again, group="clinic-a").updated == ["100101"]
    assert group_patients(session, "clinic-a")["100101"].primary_cancer == "lung"
    assert group_patients(session, DEFAULT_GROUP)["100101"].primary_cancer is None


def test_an_import_into_an_unknown_group_writes_nothing(session, tmp_path):
    path = write_csv(tmp_path, "patient_id,primary\nnew-1,lung\n")
    for name, message in (("nobody", "no group nobody"), ("bad name!", "not a group name")):
        with session() as s, pytest.raises(MetadataError, match=message):
            import_metadata(s, path, create_missing=True, group=name)
        with session() as s, pytest.raises(MetadataError, match=message):
            import_cohort_json(s, _cohort_dir(tmp_path), group=name)
    assert "new-1" not in rows(session) and "c-1" not in rows(session)


def _cohort_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "synthetic"
    folder.mkdir(exist_ok=True)
    cohort = {"patients": {"c-1": {"primary_cancer": "renal"}, "100101": {"primary_cancer": "breast"}}}
    (folder / "cohort.json").write_text(json.dumps(cohort))
    return folder


def test_cohort_json_import_into_a_group(session, tmp_path):
    from bmcore.db import Group

    with session() as s:
        s.add(Group(name="synthetic-lab"))
        s.commit()
    with session() as s:
        report = import_cohort_json(s, _cohort_dir(tmp_path), group="synthetic-lab")
    assert sorted(report.created) == ["100101", "c-1"] and not report.updated
    lab = group_patients(session, "synthetic-lab")
    assert lab["c-1"].primary_cancer == "renal" and lab["100101"].primary_cancer == "breast"
    assert group_patients(session, DEFAULT_GROUP)["100101"].primary_cancer is None


def test_cli_patients_import_into_a_group(sqlite_url, monkeypatch, tmp_path):
    from bmcore.cli import app
    from bmcore.config import get_settings
    from bmcore.db import Group, dispose_engines, session_factory

    monkeypatch.setenv("BMSEG_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    try:
        path = write_csv(tmp_path, "patient_id,primary\nP1,lung\n")
        runner = CliRunner()
        refused = runner.invoke(app, ["patients", "import", str(path), "--create-missing", "--group", "lab"])
        assert refused.exit_code != 0 and "no group lab" in str(refused.exception)
        init_db(sqlite_url)
        with session_factory(sqlite_url)() as session:
            session.add(Group(name="lab"))
            session.commit()
        result = runner.invoke(app, ["patients", "import", str(path), "--create-missing", "--group", "lab"])
        assert result.exit_code == 0, result.output
        with make_engine(sqlite_url).connect() as connection:
            found = connection.exec_driver_sql(
                "SELECT groups.name FROM patients JOIN groups ON groups.id = patients.group_id"
            ).all()
        assert found == [("lab",)]
    finally:
        get_settings.cache_clear()
        dispose_engines()
