"""The OpenAPI document comes from the pydantic models of services.web.schemas, and the JSON the views
return has exactly those models' fields (so the document cannot drift from the views either)."""

from __future__ import annotations

import pytest

from services.web import schemas


def _fields(model) -> set[str]:
    return set(model.model_fields)


def test_the_document_is_generated_from_the_schemas(client, api):
    document = client.get("/api/v1/openapi.json", headers=api["alice"]).json
    components = document["components"]["schemas"]
    for model in (schemas.Study, schemas.Job, schemas.JobRequest, schemas.PatientUpdate, schemas.Error):
        assert set(components[model.__name__]["properties"]) == _fields(model), model.__name__
    assert document["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert document["security"] == [{"bearer": []}]
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert len({op["operationId"] for op in operations}) == len(operations)
    assert all(op["summary"] and "422" not in op["responses"] for op in operations)
    upload = document["paths"]["/api/v1/studies"]["post"]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/StudyUpload"}


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_responses_have_the_fields_of_their_schemas(
    client, api, stored_study, users, web_redis, db_session, tmp_path
):
    from bmcore.datasets import add_dataset

    alice = api["alice"]
    assert set(stored_study) == _fields(schemas.Study)
    schemas.Study.model_validate(stored_study)
    me = client.get("/api/v1/me", headers=alice).json
    assert set(me) == _fields(schemas.Me)

    add_dataset(db_session, "d", tmp_path)  # a non-admin's job names a registered data set
    queued = client.post("/api/v1/jobs", json={"type": "train", "params": {"data": "d"}}, headers=alice).json
    assert set(queued) == _fields(schemas.JobQueued)
    schemas.JobQueued.model_validate(queued)
    detail = client.get(f"/api/v1/jobs/{queued['id']}", headers=alice).json
    assert set(detail) == _fields(schemas.JobDetail) - {"children"}  # children: sweeps and crossval only
    schemas.JobDetail.model_validate(detail)

    listed = client.get("/api/v1/patients", headers=alice).json["patients"][0]
    assert set(listed) == _fields(schemas.Patient)
    patient = client.get(f"/api/v1/patients/{listed['id']}", headers=alice).json
    assert set(patient) == _fields(schemas.PatientDetail)
    schemas.PatientDetail.model_validate(patient)
