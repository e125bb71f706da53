"""Run by test_web_torch_free.py in a fresh interpreter: create the app, exercise every route in its URL
map (signed in, with real uploads), and print which heavy modules got imported (none may be).

Usage: python tests/web/torch_free_probe.py '<json config>'
"""

from __future__ import annotations

import io
import json
import re
import sys

HEAVY_MODULES = (
    "torch",
    "bmcore.training.loop",
    "bmcore.models",
    "bmcore.inference",
    "bmcore.training.losses",
    "bmcore.data.dataset",
    "bmcore.data.preprocess",
)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def heavy_loaded() -> list[str]:
    return [name for name in HEAVY_MODULES if name in sys.modules]


def main(config: dict) -> dict:
    from services.web import create_app

    app = create_app({"TESTING": True})
    after_create = heavy_loaded()

    bearer = {"Authorization": "Bearer " + config["token"]}
    api, web = app.test_client(), app.test_client()

    def sign_in():
        page = web.get("/sign-in")
        credentials = {"email": config["email"], "password": config["password"]}
        response = web.post("/sign-in", data=credentials | {"csrf_token": CSRF.search(page.text).group(1)})
        assert response.status_code == 303, response.status_code
        return response, CSRF.search(web.get("/jobs").text).group(1)

    def files() -> dict:
        return {
            field: (io.BytesIO(open(path, "rb").read()), f"{field}.nii.gz", "application/gzip")
            for field, path in config["files"].items()
        }

    _, csrf = sign_in()
    queued = api.post("/api/v1/jobs", json={"type": "train", "params": {"data": "d"}}, headers=bearer).json[
        "id"
    ]  # "d": a registered data set (a non-admin's job names one, never a path)
    values = {
        "study_id": config["study_id"],
        "job_id": config["job_id"],
        "name": config["artifact"],
        "filename": "app.js",
        "patient_id": api.get("/api/v1/patients", headers=bearer).json["patients"][0]["id"],
    }
    # Sign-in and sign-out last: both start a new session (and a new CSRF token).
    rules = sorted(
        app.url_map.iter_rules(),
        key=lambda r: (r.endpoint.startswith("dashboard.sign_"), r.endpoint == "dashboard.sign_out", r.rule),
    )
    seen = []
    for rule in rules:
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            args = {name: values[name] for name in rule.arguments}
            if rule.endpoint.endswith("cancel"):
                args["job_id"] = queued
            with app.test_request_context():
                path = app.url_for(rule.endpoint, **args)
            if rule.endpoint == "dashboard.study_slice":
                path += "?modality=flair&z=5&overlay=prediction"
            is_api = path.startswith("/api/")
            client, headers = (api, bearer) if is_api else (web, {})
            endpoint = rule.endpoint
            if method == "GET":
                response = client.get(path, headers=headers)
            elif endpoint in ("api.upload_study", "dashboard.upload_study"):
                form = {"patient_id": "TF1", "study_uid": f"TF-{endpoint.split('.')[0]}", "csrf_token": csrf}
                response = client.post(
                    path, data=form | files(), headers=headers, content_type="multipart/form-data"
                )
            elif endpoint == "api.submit":
                body = {"type": "segment", "params": {}, "study_id": config["study_id"]}
                response = client.post(path, json=body, headers=headers)
            elif endpoint == "dashboard.submit":
                form = {
                    "type": "segment",
                    "study_id": config["study_id"],
                    "model": "models:/bmseg-unet@champion",
                    "csrf_token": csrf,
                }
                response = client.post(path, data=form)
            elif method == "PATCH":
                response = client.patch(path, json={}, headers=headers)
            elif endpoint == "dashboard.sign_in":
                web.post("/sign-out", data={"csrf_token": csrf})
                response, csrf = sign_in()
            else:
                response = client.post(path, data={"csrf_token": csrf}, headers=headers)
            seen.append([method, path, response.status_code])
            assert response.status_code < 400, (method, path, response.status_code)
    return {"after_create": after_create, "routes": seen, "loaded": heavy_loaded()}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
