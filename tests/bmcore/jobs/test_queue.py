"""The Celery settings and the client the submitting side queues tasks with (bmcore.jobs.queue)."""

from __future__ import annotations

import json

from bmcore.config import get_settings
from bmcore.jobs.params import PARENT_TYPES
from bmcore.jobs.queue import PARENT_TASK_NAMES, celery_client, celery_config


def test_celery_config_follows_the_design(monkeypatch):
    monkeypatch.setenv("BMSEG_MAX_JOB_SECONDS", "7200")
    monkeypatch.setenv("BMSEG_REDIS_URL", "redis://example.invalid:6379/2")
    get_settings.cache_clear()
    try:
        config = celery_config(get_settings())
        assert config["broker_url"] == config["result_backend"] == "redis://example.invalid:6379/2"
        assert config["visibility_timeout"] == 7200 + 3600
        assert config["broker_transport_options"]["visibility_timeout"] == 7200 + 3600
        assert config["result_backend_transport_options"]["visibility_timeout"] == 7200 + 3600
        assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
        assert config["worker_prefetch_multiplier"] == 1
        assert config["task_default_queue"] == "gpu"
        assert config["task_routes"]["bmseg.segment"] == {"queue": "gpu"}
        assert config["task_routes"]["bmseg.ingest"] == {"queue": "cpu"}
        assert config["task_serializer"] == "json" and config["result_expires"] == 7 * 24 * 3600
        json.dumps(config)
        client = celery_client()
        assert client is celery_client()
        assert client.conf.broker_url == "redis://example.invalid:6379/2"
        assert client.conf.broker_transport_options["visibility_timeout"] == 10800
        assert not [name for name in client.tasks if name.startswith("bmseg.")]
    finally:
        get_settings.cache_clear()


def test_every_parent_type_has_a_task():
    assert tuple(PARENT_TASK_NAMES) == PARENT_TYPES
