"""The web process never imports torch (docs/architecture.md, "Layers"): checked in a fresh interpreter, after
``create_app()`` and again after every route in the URL map has been exercised
(``tests/web/torch_free_probe.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import PASSWORD

PROBE = Path(__file__).with_name("torch_free_probe.py")


def test_web_process_never_imports_torch(
    app, users, stored_study, fake_segment, study_files, db_session, tmp_path
):
    from bmcore.datasets import add_dataset

    add_dataset(db_session, "d", tmp_path)  # the data set the probe's train job names
    job_id = fake_segment(stored_study["id"], users.alice.id)
    config = {
        "token": users.alice.token,
        "email": users.alice.email,
        "password": PASSWORD,
        "study_id": stored_study["id"],
        "job_id": job_id,
        "artifact": "S001_seg",
        "files": {field: str(path) for field, path in study_files("torch-free", seed=3).items()},
    }
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    completed = subprocess.run(
        [sys.executable, str(PROBE), json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["after_create"] == []
    assert report["loaded"] == []
    exercised = {(method, path.split("?")[0]) for method, path, _status in report["routes"]}
    rules = sum(len(rule.methods - {"HEAD", "OPTIONS"}) for rule in app.url_map.iter_rules())
    assert len(exercised) == rules


def test_web_start_loads_neither_mlflow_nor_matplotlib():
    """A gunicorn worker's boot stays light: MLflow and matplotlib load when a page needs them."""
    code = (
        "import sys; from services.web import create_app; create_app(); "
        "print(sorted(m for m in ('torch', 'mlflow', 'matplotlib') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == "[]"
