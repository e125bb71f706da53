"""The one settings object.

Every value comes from the environment (prefix ``BMSEG_``) or a ``.env`` file in the working directory.
Defaults are embedded and local: SQLite and a local MLflow store under ``data_dir``, Redis on localhost.
Outside development (``BMSEG_ENV=production``) a default secret key is refused with a message that
names the variable to set.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "dev-insecure-secret-change-me"


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
    # Bounds of a queued job's training parameters (bmcore.jobs.train_params); the CLI's local commands
    # (bmseg train) are not bounded by these.
    max_epochs: int = 1000
    max_batch_size: int = 256
    max_image_size: int = 512
    max_base_channels: int = 128
    max_depth: int = 6
    max_num_workers: int = 16
    max_samples_per_epoch: int = 1_000_000

    @model_validator(mode="after")
    def _fill_defaults_and_refuse_unsafe(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'bmseg.db'}"
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{self.data_dir / 'mlflow.db'}"
        if not self.mlflow_artifact_root:
            self.mlflow_artifact_root = str(self.data_dir / "mlartifacts")
        if not 0 < 2 * self.heartbeat_seconds < self.stale_after_seconds:
            raise ValueError(
                f"BMSEG_STALE_AFTER_SECONDS ({self.stale_after_seconds}) must exceed twice "
                f"BMSEG_HEARTBEAT_SECONDS ({self.heartbeat_seconds}), which must be positive"
            )
        if self.reap_interval_seconds <= 0:
            raise ValueError("BMSEG_REAP_INTERVAL_SECONDS must be positive")
        if self.env == "production" and self.secret_key == DEFAULT_SECRET:
            raise ValueError(
                "BMSEG_SECRET_KEY is unset: production mode refuses the default secret key; "
                "set BMSEG_SECRET_KEY to a long random string"
            )
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing the env."""
    return Settings()
