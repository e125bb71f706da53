"""The shapes of ``/api/v1`` as pydantic models: request bodies, query arguments and responses.

They document the API (:mod:`.openapi` builds the OpenAPI document from them); the views still check
their input by hand, so error statuses and messages stay what they are. A test checks that the JSON the
views return has exactly these models' fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model

from bmcore.db import JOB_STATUSES, JOB_TYPES
from bmcore.imaging import MODALITIES
from bmcore.patients import PRIMARY_CANCER_TYPES
from services.web.job_requests import SUBMITTABLE_TYPES

IDENTIFIER_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_LIST_LIMIT = 500
DEFAULT_LIST_LIMIT = 100


def one_of(values: tuple[str, ...]) -> Any:
    """``Literal[*values]``: a string that must be one of ``values`` (an ``enum`` in the schema)."""
    return Literal.__getitem__(tuple(values))


Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
Modality = one_of(MODALITIES)
PrimaryCancer = one_of(PRIMARY_CANCER_TYPES)
ClinicalValue = str | float | bool | None


class Error(BaseModel):
    """Every error: a 4xx or 5xx with one line for the user."""

    error: str


class Me(BaseModel):
    id: int
    email: str
    is_admin: bool
    role: str


# ------------------------------------------------------------------------------------------ studies


class Study(BaseModel):
    id: int
    study_uid: Identifier
    patient_id: str | None = Field(description="the patient's pseudonym")
    group: str | None = Field(description="the patient's group (pseudonyms are unique per group)")
    modalities: list[Modality]
    has_label: bool
    shape: list[int]
    spacing: list[float] = Field(description="mm per voxel")
    checksum: str = Field(description="sha256 of the stored files")
    owner_id: int | None
    created_at: datetime | None


class StudyList(BaseModel):
    studies: list[Study]


def _file_field(description: str, required: bool = True) -> Any:
    return (bytes if required else bytes | None), Field(
        ... if required else None,
        description=description,
        json_schema_extra={"contentMediaType": "application/octet-stream"},
    )


StudyUpload = create_model(
    "StudyUpload",
    __doc__="A study upload (multipart/form-data): the patient, the study uid, four NIfTI files and a label; "
    "or, instead of the files, one DICOM archive (dicom, answered 202 with an ingest job).",
    patient_id=(Identifier, ...),
    study_uid=(Identifier | None, Field(None, description="generated if absent")),
    group=(
        str | None,
        Field(
            None,
            description="a group of yours (admins: any); by default your only group, or your personal "
            "group when you have none; required when you belong to several",
        ),
    ),
    **{m: _file_field(f"{m} NIfTI (.nii, .nii.gz); required unless dicom", False) for m in MODALITIES},
    seg=_file_field("optional label NIfTI, values 0 background, 1 NETC, 2 SNFH, 3 ET", required=False),
    dicom=_file_field(
        "instead of the NIfTI files: a zip of the study's DICOM MR series (T1, T1 post-contrast, T2, FLAIR)",
        required=False,
    ),
    map=(
        str | None,
        Field(
            None,
            description="with dicom: series the importer cannot place, as SERIES_NUMBER=MODALITY pairs "
            "(e.g. '5=t1ce, 7=flair')",
        ),
    ),
)


class ListQuery(BaseModel):
    limit: int = Field(DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)


# ------------------------------------------------------------------------------------------ jobs


class JobRequest(BaseModel):
    type: one_of(SUBMITTABLE_TYPES)  # type: ignore[valid-type]
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "train: data (required) plus TrainConfig fields (arch, epochs, lr, batch_size, size, "
            "...), split_seed; evaluate: model, data or study_dir, split; segment: model (checkpoint "
            "path or models:/bmseg-unet@champion), study_dir unless study_id is given, tta, dicom "
            "(also RTSTRUCT and DICOM-SEG, and for a NIfTI study the MR series they refer to, zipped); "
            "sweep: data, grid ({name: [values]}) or random ({name: [low, high] or [choices]}) with "
            "budget and seed, base (TrainConfig fields of every child), split_seed, promote_best — "
            "one child train job per configuration, ranked by val_lesion_dice; crossval: data, "
            "folds (2-10), base, seed — one child train job per patient fold"
        ),
    )
    study_id: int | None = None


class Job(BaseModel):
    id: str
    type: one_of(JOB_TYPES)  # type: ignore[valid-type]
    params: dict[str, Any]
    status: one_of(JOB_STATUSES)  # type: ignore[valid-type]
    progress: float = Field(ge=0, le=1)
    message: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    attempts: int
    max_attempts: int
    worker_host: str | None
    error: str | None
    mlflow_run_id: str | None
    cancel_requested: bool
    owner_id: int | None
    parent_id: str | None
    study_id: int | None


class JobQueued(Job):
    status_url: str = Field(description="follow this URL for the job's progress")


class JobList(BaseModel):
    jobs: list[Job]


class JobListQuery(ListQuery):
    status: one_of(JOB_STATUSES) | None = None  # type: ignore[valid-type]
    type: one_of(JOB_TYPES) | None = None  # type: ignore[valid-type]


class JobResult(BaseModel):
    metrics: dict[str, Any]
    metrics_table: list[list[Any]]
    artifacts: list[str]


class JobEvent(BaseModel):
    at: datetime | None
    level: str
    message: str


class JobDetail(Job):
    result: JobResult | None
    events: list[JobEvent] = Field(description="the last 50 log lines")
    mlflow_url: str | None
    children: list[dict[str, Any]] | None = Field(
        None, description="sweep and crossval only: the child train jobs, oldest first"
    )


# ------------------------------------------------------------------------------------------ patients


class PatientFields(BaseModel):
    id: int
    pseudonym: str = Field(description="e.g. the 6-digit UCSF-BMSR patient number; unique in its group")
    group: str = Field(description="the group whose members see and edit the patient")
    primary_cancer: PrimaryCancer | None  # type: ignore[valid-type]
    clinical: dict[str, ClinicalValue] = Field(
        description="clinical fields (age, sex, kps, histology, ...), imported with 'bmseg patients import'"
    )
    created_at: datetime | None


class Patient(PatientFields):
    studies: int = Field(description="number of the patient's studies you can see")


class PatientList(BaseModel):
    patients: list[Patient]


class PatientDetail(PatientFields):
    studies: list[Study] = Field(description="in visit order")
    can_edit: bool


class PatientUpdate(BaseModel, extra="forbid"):
    primary_cancer: PrimaryCancer | None = None  # type: ignore[valid-type]
    clinical: dict[str, ClinicalValue] | None = Field(
        None, description="merged into the stored fields; null removes a key; age 0-150, kps 0-100"
    )


# ------------------------------------------------------------------------------------------ reports


class CohortQuery(BaseModel):
    seed: int = Field(0, ge=0, lt=2**31, description="seed of the patient-level split")


class CohortSummary(BaseModel):
    """Patients, studies and visits; primary cancers against the reference study's shares; lesions per
    study and diameters (26-connected tumour-core components); the patient-level split; NETC/SNFH/ET
    shares of tumour voxels in labels and in the newest predictions."""

    counts: dict[str, Any]
    visits_per_patient: dict[str, Any]
    primary_cancer: dict[str, Any]
    lesions: dict[str, Any]
    split: dict[str, Any] | None
    class_distribution: dict[str, Any]
    patients: list[dict[str, Any]]
    studies: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    plots: dict[str, str] = Field(description="plot name -> PNG file (shown on /cohort)")


class ModelVersion(BaseModel):
    version: int
    run_id: str | None
    created: datetime
    status: str
    aliases: list[str]
    tags: dict[str, str]
    metrics: dict[str, float]
    warnings: list[str] = Field(
        default_factory=list,
        description="e.g. 'trained on synthetic data: not for clinical use', a validation set too small to "
        "promote on (tags training_data, training_data_synthetic, val_lesions, too_small_to_promote)",
    )


class AliasMove(BaseModel):
    """One move of a registry alias (``to_version`` None: the alias was removed)."""

    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    moved_by: str = Field(description="a user's e-mail, 'job <id>' (an automatic move) or 'cli:<os user>'")
    reason: str = Field(description="e.g. 'val_lesion_dice 0.41 > 0.33 of v2', 'sweep <id> best child'")
    job_id: str | None
    at: datetime


class RegisteredModel(BaseModel):
    name: str
    champion: int | None
    versions: list[ModelVersion]
    history: list[AliasMove] = Field(description="every move of its aliases, newest first")


class Dataset(BaseModel):
    """A registered data set: what a job's ``params.data`` names (non-admins: never a path)."""

    name: str
    group: str | None = Field(description="the group whose members may use it; null: every researcher")
    promotable: bool = Field(description="training on it may move the champion alias on its own")
    path: str | None = Field(None, description="the folder or manifest (shown to admins only)")


class DatasetList(BaseModel):
    datasets: list[Dataset]


class ModelList(BaseModel):
    models: list[RegisteredModel]


class OpenAPIDocument(BaseModel, extra="allow"):
    """An OpenAPI 3.1 document."""

    openapi: str
