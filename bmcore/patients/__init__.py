"""Patient metadata: primary cancer and other clinical fields, read from a CSV onto ``Patient`` rows.

Torch-free (the web imports it).

Columns are recognised by name. A header is normalised first (lower case; spaces, dots, slashes and
hyphens become ``_``; brackets dropped), then looked up in :data:`ID_ALIASES`, :data:`PRIMARY_ALIASES`
and :data:`CLINICAL_ALIASES`:

* the **patient id** column (required): ``patient_id``, ``subject_id``, ``id``, ``bmr_id``, ``pseudonym``…
* the **primary cancer** column (optional): ``primary``, ``primary_cancer``, ``primary_tumor``,
  ``Primary Diagnosis``, ``cancer_type``…
* known **clinical** columns, stored in ``Patient.clinical`` under their canonical name: ``age``, ``sex``,
  ``race``, ``ethnicity``, ``kps``, ``histology``, ``molecular``, ``extracranial_disease``,
  ``prior_treatment``, ``smoking``.

Any other column is an error naming it and the accepted names, unless ``allow_extra`` stores it as-is
(under its header, as text). ``column_map`` names columns explicitly (``{"Dx": "primary_cancer"}``).

UCSF-BMSR ships a subject-information table with its images. We have not seen it (the data set is
access-controlled); the alias set covers the shapes such tables usually have (``bmr_id`` / ``ID``,
``Primary Diagnosis`` / ``primary``, ``Age``, ``Sex``). When its columns differ, ``column_map`` (CLI:
``--column HEADER=FIELD``) or ``allow_extra`` reads it without a code change.

Primary cancer values are normalised onto :data:`PRIMARY_CANCER_TYPES` by keyword (case-insensitive):
``melanoma`` → melanoma; ``breast`` → breast; ``lung``, ``NSCLC``, ``SCLC``, ``pulmonary``, ``bronch…`` →
lung; ``renal``, ``kidney``, ``RCC`` → renal; everything else (GI, colorectal, gynaecological, prostate,
thyroid, sarcoma, unknown primary, …) → other, as the reference study groups them. When the cell's text
is not already one of the five names, the original text is kept in ``clinical["primary_cancer_text"]``.
An empty cell leaves the patient's primary cancer as it was.

Ids are matched exactly; failing that, a UCSF-BMSR visit id (``100101A``) matches its patient
(``100101``) and a number matches a zero-padded pseudonym (``1`` → ``00001``, as spreadsheets strip
leading zeros). A row for an unknown patient is an error listing the ids, unless ``create_missing``.

The import is all-or-nothing: every row is checked before anything is written, and an error while
writing rolls the session back.

Modules: :mod:`~.fields` (columns, aliases, normalisation), :mod:`~.importer` (CSV and ``cohort.json``
imports), :mod:`~.records` (a patient's JSON view and checked updates); their public names are
re-exported here.
"""

from __future__ import annotations

from bmcore.patients.fields import (
    CLINICAL_ALIASES,
    ID_ALIASES,
    ID_FIELD,
    KNOWN_FIELDS,
    MAX_PSEUDONYM,
    MAX_TEXT,
    ORIGINAL_PRIMARY_KEY,
    PRIMARY_ALIASES,
    PRIMARY_CANCER_TYPES,
    PRIMARY_FIELD,
    PRIMARY_KEYWORDS,
    SEX_VALUES,
    UCSF_VISIT_ID,
    MetadataError,
    accepted_columns,
    map_columns,
    normalize_header,
    normalize_primary,
)
from bmcore.patients.importer import ImportReport, import_cohort_json, import_metadata
from bmcore.patients.records import (
    apply_patient_update,
    merge_clinical,
    patient_to_dict,
    validate_patient_update,
)

__all__ = [
    "CLINICAL_ALIASES",
    "ID_ALIASES",
    "ID_FIELD",
    "KNOWN_FIELDS",
    "MAX_PSEUDONYM",
    "MAX_TEXT",
    "ORIGINAL_PRIMARY_KEY",
    "PRIMARY_ALIASES",
    "PRIMARY_CANCER_TYPES",
    "PRIMARY_FIELD",
    "PRIMARY_KEYWORDS",
    "SEX_VALUES",
    "UCSF_VISIT_ID",
    "ImportReport",
    "MetadataError",
    "accepted_columns",
    "apply_patient_update",
    "import_cohort_json",
    "import_metadata",
    "map_columns",
    "merge_clinical",
    "normalize_header",
    "normalize_primary",
    "patient_to_dict",
    "validate_patient_update",
]
