"""The one settings object.

Every value comes from the environment (prefix ``BMSEG_``) or a ``.env`` file in the working directory.
Defaults are embedded and local: SQLite and a local MLflow store under ``data_dir``, Redis on localhost.

Unusable settings raise one :class:`ConfigError` whose message names each setting and the reason, never
a value (a value may hold a password, as the database URL does). In production (``BMSEG_ENV=production``)
the secret key, trimmed, must be at least 32 bytes and no known placeholder. Elsewhere the public default
key is replaced by a random one generated once into ``data_dir/secret_key`` (mode 0600), so that no one can
sign a session cookie with the key published here, and every web worker of one data dir shares it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import NonNegativeInt, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

log = logging.getLogger(__name__)

DEFAULT_SECRET = "dev-insecure-secret-change-me"
# Keys published in this repository (the default, .env.example's) or commonly left in place: public, so
# never a production key, and replaced by a generated one elsewhere.
PLACEHOLDER_SECRETS = frozenset({DEFAULT_SECRET, "change-me-to-a-long-random-string", "change-me", "secret"})
PLACEHOLDER_WORDS = ("changeme", "insecure", "placeholder")
MIN_SECRET_BYTES = 32
MIN_SECRET_DISTINCT_CHARACTERS = 8
SECRET_KEY_FILE = "secret_key"
SECRET_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


class ConfigError(RuntimeError):
    """Settings that cannot be used. The message, one line, names each setting (``BMSEG_<NAME>``) and
    why, never its value. A RuntimeError, so ``bmseg`` prints it as ``error: …`` and ``gunicorn
    --preload`` as ``Error: …``, both without a traceback."""


def is_public_secret(key: str) -> bool:
    """Whether ``key`` (trimmed) is empty or a known placeholder: anyone could sign cookies with it."""
    normalised = re.sub(r"[^a-z0-9]", "", key.lower())
    return not key or key in PLACEHOLDER_SECRETS or any(word in normalised for word in PLACEHOLDER_WORDS)


def secret_key_problem(key: str) -> str | None:
    """Why ``key`` (trimmed) cannot sign production sessions, or None when it can."""
    if not key:
        return "is empty"
    if is_public_secret(key):
        return "is a published placeholder"
    if len(key.encode()) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    if len(set(key)) < MIN_SECRET_DISTINCT_CHARACTERS:
        return "is not random (too few distinct characters)"
    return None


def _describe(exc: ValidationError) -> str:
    """The settings a ValidationError refuses and why, without the values it carries (``input_value``)."""
    reasons = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        location = error.get("loc") or ()
        name = f"BMSEG_{str(location[0]).upper()}" if location else "settings"
        reasons.append(f"{name}: {error['msg']}")
    return "invalid settings: " + "; ".join(reasons)


def _describe_source(exc: SettingsError) -> str:
    """A SettingsError (a value that is not valid JSON for a list or dict setting), by setting name."""
    match = re.search(r'field "(\w+)"', str(exc))
    name = f"BMSEG_{match.group(1).upper()}" if match else "a setting"
    return f"invalid settings: {name}: not a valid JSON value for this setting"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BMSEG_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("bmseg-data")
    database_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    mlflow_tracking_uri: str = ""
    mlflow_artifact_root: str = ""
    secret_key: str = DEFAULT_SECRET
    # Input limits, checked before any voxel data is read.
    max_voxels: int = 400 * 400 * 400
    max_upload_bytes: int = 512 * 1024 * 1024
    # A job's hard time limit (seconds), enforced by the runner: past it the job fails once with the reason.
    # The Redis visibility timeout is set above it, so a running job is never delivered twice.
    max_job_seconds: int = 48 * 3600
    # A running job's worker touches ``heartbeat_at`` this often; a job silent for ``stale_after_seconds``
    # lost its worker and is re-queued (or failed after ``max_attempts``) by the reaper, which every
    # worker runs every ``reap_interval_seconds`` (bmcore.jobs.reaper).
    heartbeat_seconds: float = 15.0
    stale_after_seconds: float = 120.0
    reap_interval_seconds: float = 30.0
    # Dashboard sign-in: this many failed attempts per e-mail and client address within the window
    # lock that pair out until the window ends (HTTP 429).
    sign_in_max_failures: int = 10
    sign_in_window_seconds: int = 300
    # Sessions and tokens (docs/permissions.md): a dashboard session lasts this long unless signed out;
    # an API token expires after the default unless its creator asks for another term up to the maximum.
    session_hours: int = 12
    token_default_days: int = 90
    token_max_days: int = 365
    # Registry aliases that mark a version approved for clinical segmentation (clinicians use only these).
    approval_aliases: list[str] = ["champion"]
    # Per-user bounds on the job service: queued + running jobs at once (HTTP 429 beyond), request bodies.
    max_active_jobs_per_user: int = 20
    max_json_bytes: int = 64 * 1024
    # Web uploads: a voxel cap below the worker's ``max_voxels``, checked from each header before reading.
    max_upload_voxels: int = 256 * 256 * 256
    # DICOM in (bmcore.dicom): what a folder or zip may hold (files, uncompressed bytes, zip compression
    # ratio: a zip bomb is refused from its directory and stopped while extracting), and an optional rules
    # file (JSON or TOML) replacing the built-in table that names series t1 / t1ce / t2 / flair.
    dicom_max_files: int = 20_000
    dicom_max_bytes: int = 8 * 1024**3
    dicom_max_ratio: float = 100.0
    dicom_rules_file: Path | None = None
    # Bounds of a queued job's training parameters (bmcore.jobs.train_params); the CLI's local commands
    # (bmseg train) are not bounded by these.
    max_epochs: int = 1000
    max_batch_size: int = 256
    max_image_size: int = 512
    max_base_channels: int = 128
    max_depth: int = 6
    max_num_workers: int = 16
    max_samples_per_epoch: int = 1_000_000
    # A registered version validated on fewer ground-truth lesions than this is too small to promote on:
    # it never takes the ``champion`` alias on its own (bmcore.tracking.registry).
    min_val_lesions: NonNegativeInt = 5
    # Reverse proxies in front of the web (docker-compose: 1, the TLS proxy) whose X-Forwarded-For/-Proto/
    # -Host the web trusts (werkzeug ProxyFix): it then knows requests are HTTPS and sees clients' addresses.
    # 0 (direct, the default): those headers are ignored, since any client could send them.
    trusted_proxies: NonNegativeInt = 0

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        except SettingsError as exc:
            raise ConfigError(_describe_source(exc)) from None

    @model_validator(mode="after")
    def _fill_defaults_and_refuse_unsafe(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'bmseg.db'}"
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{self.data_dir / 'mlflow.db'}"
        if not self.mlflow_artifact_root:
            self.mlflow_artifact_root = str(self.data_dir / "mlartifacts")
        self.secret_key = self.secret_key.strip()
        problems = []
        if not 0 < 2 * self.heartbeat_seconds < self.stale_after_seconds:
            problems.append(
                "BMSEG_STALE_AFTER_SECONDS must exceed twice BMSEG_HEARTBEAT_SECONDS, which must be positive"
            )
        if self.reap_interval_seconds <= 0:
            problems.append("BMSEG_REAP_INTERVAL_SECONDS must be positive")
        problem = secret_key_problem(self.secret_key) if self.env == "production" else None
        if problem:
            problems.append(
                f"BMSEG_SECRET_KEY {problem}: production needs at least {MIN_SECRET_BYTES} random bytes "
                f"(e.g. {SECRET_HINT})"
            )
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))
        return self

    @property
    def cache_dir(self) -> Path:
        """Preprocessed studies, memory-mapped, keyed by content hash."""
        return self.data_dir / "cache"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"


def local_secret_key(data_dir: Path) -> str:
    """The random key of ``data_dir/secret_key``, generated (mode 0600) when missing.

    The file is written under a temporary name and published with a hard link, which fails when the file
    exists: of workers starting at once, the first one's key wins and every one reads that key. Where
    the data dir is not writable the key is random per process (sessions then end with the process)."""
    path = data_dir / SECRET_KEY_FILE
    try:
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            temp = data_dir / f".{SECRET_KEY_FILE}-{uuid.uuid4().hex}"
            descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
            try:
                os.link(temp, path)
            except FileExistsError:
                pass
            finally:
                temp.unlink()
        key = path.read_text().strip()
    except OSError as exc:
        log.warning("no key file in %s (%s): using a key for this process only", data_dir, exc.strerror)
        return secrets.token_urlsafe(48)
    if len(key.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"invalid settings: {path} holds no usable key; delete it to have one generated")
    return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing the env.

    Raises :class:`ConfigError` for unusable settings. Outside production a public secret key (empty,
    the default, a placeholder) is replaced by :func:`local_secret_key`."""
    settings = Settings()
    if settings.env != "production" and is_public_secret(settings.secret_key):
        settings.secret_key = local_secret_key(settings.data_dir)
    return settings
