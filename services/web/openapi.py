"""The OpenAPI 3.1 document of ``/api/v1`` (a test keeps it and the URL map in step)."""

from __future__ import annotations

from typing import Any

from bmcore.db import JOB_STATUSES, JOB_TYPES
from bmcore.imaging import MODALITIES
from bmcore.patients import PRIMARY_CANCER_TYPES


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


UNAUTHORIZED = _error("missing, invalid or revoked bearer token")
FORBIDDEN = _error("the resource belongs to another user")
NOT_FOUND = _error("unknown id")
BAD_REQUEST = _error("invalid input; the message says what is wrong")
STUDY_ID = {"name": "study_id", "in": "path", "required": True, "schema": {"type": "integer"}}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
PATIENT_ID = {"name": "patient_id", "in": "path", "required": True, "schema": {"type": "integer"}}
LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Study": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "study_uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            "patient_id": {"type": "string", "description": "the patient's pseudonym"},
            "modalities": {"type": "array", "items": {"type": "string", "enum": list(MODALITIES)}},
            "has_label": {"type": "boolean"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "spacing": {"type": "array", "items": {"type": "number"}, "description": "mm per voxel"},
            "checksum": {"type": "string", "description": "sha256 of the stored files"},
            "owner_id": {"type": ["integer", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "StudyUpload": {
        "type": "object",
        "required": ["patient_id", *MODALITIES],
        "properties": {
            "patient_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            "study_uid": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_-]{1,64}$",
                "description": "generated if absent",
            },
            **{
                m: {
                    "type": "string",
                    "contentMediaType": "application/octet-stream",
                    "description": f"{m} NIfTI (.nii or .nii.gz)",
                }
                for m in MODALITIES
            },
            "seg": {
                "type": "string",
                "contentMediaType": "application/octet-stream",
                "description": "optional label NIfTI, values 0 background, 1 NETC, 2 SNFH, 3 ET",
            },
        },
    },
    "JobRequest": {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": ["train", "evaluate", "segment", "sweep", "crossval"]},
            "params": {
                "type": "object",
                "description": (
                    "train: data (required) plus TrainConfig fields (arch, epochs, lr, batch_size, size, "
                    "...), split_seed; evaluate: model, data or study_dir, split; segment: model (checkpoint "
                    "path or models:/bmseg-unet@champion), study_dir unless study_id is given, tta; "
                    "sweep: data, grid ({name: [values]}) or random ({name: [low, high] or [choices]}) with "
                    "budget and seed, base (TrainConfig fields of every child), split_seed, promote_best — "
                    "one child train job per configuration, ranked by val_lesion_dice; crossval: data, "
                    "folds (2-10), base, seed — one child train job per patient fold"
                ),
            },
            "study_id": {"type": ["integer", "null"]},
        },
    },
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": list(JOB_TYPES)},
            "params": {"type": "object"},
            "status": {"type": "string", "enum": list(JOB_STATUSES)},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "message": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "attempts": {"type": "integer"},
            "error": {"type": ["string", "null"]},
            "mlflow_run_id": {"type": ["string", "null"]},
            "cancel_requested": {"type": "boolean"},
            "owner_id": {"type": ["integer", "null"]},
            "study_id": {"type": ["integer", "null"]},
        },
    },
    "JobDetail": {
        "allOf": [
            _ref("Job"),
            {
                "type": "object",
                "properties": {
                    "result": {
                        "type": ["object", "null"],
                        "properties": {
                            "metrics": {"type": "object"},
                            "metrics_table": {"type": "array", "items": {"type": "array"}},
                            "artifacts": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "events": {
                        "type": "array",
                        "description": "the last 50 log lines",
                        "items": {
                            "type": "object",
                            "properties": {
                                "at": {"type": "string", "format": "date-time"},
                                "level": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                    "mlflow_url": {"type": ["string", "null"]},
                    "children": {
                        "type": "array",
                        "description": "sweep and crossval only: the child train jobs, oldest first",
                        "items": {"type": "object"},
                    },
                },
            },
        ]
    },
    "Patient": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "pseudonym": {"type": "string", "description": "e.g. the 6-digit UCSF-BMSR patient number"},
            "primary_cancer": {"type": ["string", "null"], "enum": [*PRIMARY_CANCER_TYPES, None]},
            "clinical": {
                "type": "object",
                "description": (
                    "clinical fields (age, sex, kps, histology, ...), imported with 'bmseg patients import'"
                ),
            },
            "created_at": {"type": "string", "format": "date-time"},
            "studies": {"type": "integer", "description": "number of the patient's studies you can see"},
        },
    },
    "PatientDetail": {
        "allOf": [
            _ref("Patient"),
            {
                "type": "object",
                "properties": {
                    "studies": {"type": "array", "items": _ref("Study"), "description": "in visit order"},
                    "can_edit": {"type": "boolean"},
                },
            },
        ]
    },
    "PatientUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "primary_cancer": {"type": ["string", "null"], "enum": [*PRIMARY_CANCER_TYPES, None]},
            "clinical": {
                "type": "object",
                "description": "merged into the stored fields; null removes a key; age 0-150, kps 0-100",
                "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
            },
        },
    },
    "CohortSummary": {
        "type": "object",
        "description": (
            "patients, studies and visits; primary cancers against the reference study's shares; lesions "
            "per study and diameters (26-connected tumour-core components); the patient-level split; "
            "NETC/SNFH/ET shares of tumour voxels in labels and in the newest predictions"
        ),
        "properties": {
            "counts": {"type": "object"},
            "visits_per_patient": {"type": "object"},
            "primary_cancer": {"type": "object"},
            "lesions": {"type": "object"},
            "split": {"type": ["object", "null"]},
            "class_distribution": {"type": "object"},
            "patients": {"type": "array", "items": {"type": "object"}},
            "studies": {"type": "array", "items": {"type": "object"}},
            "skipped": {"type": "array", "items": {"type": "object"}},
            "plots": {"type": "object", "description": "plot name -> PNG file (shown on /cohort)"},
        },
    },
    "RegisteredModel": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "champion": {"type": ["integer", "null"]},
            "versions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "version": {"type": "integer"},
                        "run_id": {"type": ["string", "null"]},
                        "aliases": {"type": "array", "items": {"type": "string"}},
                        "tags": {"type": "object"},
                        "metrics": {"type": "object"},
                    },
                },
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bmseg API",
            "version": "1",
            "description": (
                "Brain-metastasis MRI segmentation as a job service: upload studies, queue training, "
                "evaluation and segmentation jobs, follow them, download results. Every route needs "
                "'Authorization: Bearer <token>' (create one with 'bmseg token create')."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
        "paths": {
            "/api/v1/me": {
                "get": {
                    "summary": "The token's user",
                    "operationId": "me",
                    "responses": {
                        "200": _ok(
                            "the user",
                            {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "integer"},
                                    "email": {"type": "string"},
                                    "is_admin": {"type": "boolean"},
                                },
                            },
                        ),
                        "401": UNAUTHORIZED,
                    },
                }
            },
            "/api/v1/studies": {
                "get": {
                    "summary": "Studies you can see, newest first",
                    "operationId": "listStudies",
                    "parameters": [LIMIT],
                    "responses": {
                        "200": _ok(
                            "studies",
                            {
                                "type": "object",
                                "properties": {"studies": {"type": "array", "items": _ref("Study")}},
                            },
                        ),
                        "400": BAD_REQUEST,
                        "401": UNAUTHORIZED,
                    },
                },
                "post": {
                    "summary": "Upload a study (four NIfTI modalities, optional label)",
                    "description": (
                        "Every file is checked (NIfTI header first, 3D, voxel limit, bounded gzip expansion, "
                        "matching shapes and affines, no NaN, not all zero, labels 0..3) and stored with its "
                        "free-text header fields cleared. On any failure nothing is stored."
                    ),
                    "operationId": "uploadStudy",
                    "requestBody": {
                        "required": True,
                        "content": {"multipart/form-data": {"schema": _ref("StudyUpload")}},
                    },
                    "responses": {
                        "201": _ok("the stored study", _ref("Study")),
                        "400": BAD_REQUEST,
                        "401": UNAUTHORIZED,
                        "409": _error("a study with this study_uid exists"),
                        "413": _error("the upload is larger than the server accepts"),
                        "415": _error("not multipart/form-data, or a file is not NIfTI"),
                    },
                },
            },
            "/api/v1/studies/{study_id}": {
                "get": {
                    "summary": "One study",
                    "operationId": "getStudy",
                    "parameters": [STUDY_ID],
                    "responses": {
                        "200": _ok("the study", _ref("Study")),
                        "401": UNAUTHORIZED,
                        "403": FORBIDDEN,
                        "404": NOT_FOUND,
                    },
                }
            },
            "/api/v1/jobs": {
                "get": {
                    "summary": "Jobs, newest first (yours; an admin sees all)",
                    "operationId": "listJobs",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(JOB_STATUSES)},
                        },
                        {
                            "name": "type",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(JOB_TYPES)},
                        },
                        LIMIT,
                    ],
                    "responses": {
                        "200": _ok(
                            "jobs",
                            {
                                "type": "object",
                                "properties": {"jobs": {"type": "array", "items": _ref("Job")}},
                            },
                        ),
                        "400": BAD_REQUEST,
                        "401": UNAUTHORIZED,
                    },
                },
                "post": {
                    "summary": "Queue a train, evaluate, segment, sweep or crossval job",
                    "operationId": "submitJob",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("JobRequest")}},
                    },
                    "responses": {
                        "202": _ok(
                            "queued; follow status_url",
                            {
                                "allOf": [
                                    _ref("Job"),
                                    {"type": "object", "properties": {"status_url": {"type": "string"}}},
                                ]
                            },
                        ),
                        "400": BAD_REQUEST,
                        "401": UNAUTHORIZED,
                        "403": FORBIDDEN,
                        "404": _error("unknown study_id"),
                        "415": _error("the body is not application/json"),
                        "503": _error("the queue is unavailable; the job was recorded as failed"),
                    },
                },
            },
            "/api/v1/jobs/{job_id}": {
                "get": {
                    "summary": "A job: status, progress, result (metrics, artifact names), last 50 events",
                    "operationId": "getJob",
                    "parameters": [JOB_ID],
                    "responses": {
                        "200": _ok("the job", _ref("JobDetail")),
                        "401": UNAUTHORIZED,
                        "403": FORBIDDEN,
                        "404": NOT_FOUND,
                    },
                }
            },
            "/api/v1/jobs/{job_id}/cancel": {
                "post": {
                    "summary": "Cancel a job (at once when queued, between steps when running)",
                    "operationId": "cancelJob",
                    "parameters": [JOB_ID],
                    "responses": {
                        "200": _ok("the job after the request", _ref("Job")),
                        "401": UNAUTHORIZED,
                        "403": FORBIDDEN,
                        "404": NOT_FOUND,
                    },
                }
            },
            "/api/v1/jobs/{job_id}/artifacts/{name}": {
                "get": {
                    "summary": "Download one of a job's artifacts (names as listed in its result)",
                    "operationId": "downloadArtifact",
                    "parameters": [
                        JOB_ID,
                        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "the file",
                            "content": {
                                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                            },
                        },
                        "401": UNAUTHORIZED,
                        "403": FORBIDDEN,
                        "404": NOT_FOUND,
                    },
                }
            },
            "/api/v1/models": {
                "get": {
                    "summary": "The model registry: bmseg-unet, -cnn and -fcn with versions and aliases",
                    "operationId": "listModels",
                    "responses": {
                        "200": _ok(
                            "registered models",
                            {
                                "type": "object",
                                "properties": {"models": {"type": "array", "items": _ref("RegisteredModel")}},
                            },
                        ),
                        "401": UNAUTHORIZED,
                        "503": _error("the registry is unavailable"),
                    },
                }
            },
            "/api/v1/patients": {
                "get": {
                    "summary": "Patients you can see (an admin sees all), by pseudonym",
                    "operationId": "listPatients",
                    "parameters": [LIMIT],
                    "responses": {
                        "200": _ok(
                            "patients",
                            {
                                "type": "object",
                                "properties": {"patients": {"type": "array", "items": _ref("Patient")}},
                            },
                        ),
                        "400": BAD_REQUEST,
                        "401": UNAUTHORIZED,
                    },
                }
            },
            "/api/v1/patients/{patient_id}": {
                "get": {
                    "summary": "One patient with its studies",
                    "operationId": "getPatient",
                    "parameters": [PATIENT_ID],
                    "responses": {
                        "200": _ok("the patient", _ref("PatientDetail")),
                        "401": UNAUTHORIZED,
                        "403": FORBIDDEN,
                        "404": NOT_FOUND,
                    },
                },
                "patch": {
                    "summary": "Edit a patient's primary cancer and clinical fields",
                    "description": (
                        "Admins edit any patient; a user edits a patient whose studies are all theirs."
                    ),
                    "operationId": "updatePatient",
                    "parameters": [PATIENT_ID],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("PatientUpdate")}},
                    },
                    "responses": {
                        "200": _ok("the patient after the edit", _ref("PatientDetail")),
                        "400": BAD_REQUEST,
                        "401": UNAUTHORIZED,
                        "403": FORBIDDEN,
                        "404": NOT_FOUND,
                        "415": _error("the body is not application/json"),
                    },
                },
            },
            "/api/v1/cohort": {
                "get": {
                    "summary": "The cohort summary of the studies you can see (computed once, then cached)",
                    "operationId": "getCohort",
                    "parameters": [
                        {
                            "name": "seed",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                            "description": "seed of the patient-level split",
                        }
                    ],
                    "responses": {
                        "200": _ok("the summary", _ref("CohortSummary")),
                        "400": BAD_REQUEST,
                        "401": UNAUTHORIZED,
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": _ok("OpenAPI 3.1", {"type": "object"}), "401": UNAUTHORIZED},
                }
            },
        },
    }
