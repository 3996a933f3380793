"""Job timings and limits, from the environment (prefix ``THRESHER_JOBS_``).

Kept beside the jobs area rather than in :class:`app.settings.Settings` so the area is
self-contained; the app builds one per process, on first use (:func:`job_settings`).
"""

from __future__ import annotations

from fastapi import Request
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THRESHER_JOBS_", extra="ignore")

    lease_seconds: float = Field(
        default=60.0, gt=0, description="A lease lasts this long unless a heartbeat renews it."
    )
    heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="How often workers are asked to send heartbeats."
    )
    max_attempts: int = Field(default=3, ge=1, description="Attempts per job before it fails.")
    retry_backoff_seconds: float = Field(
        default=30.0, ge=0, description="Wait before the 2nd attempt; doubles each attempt."
    )
    retry_backoff_max_seconds: float = Field(default=3600.0, ge=0)
    log_tail_lines: int = Field(default=200, ge=1, description="Log lines kept per job.")
    max_log_line_chars: int = Field(default=2000, ge=80)
    max_artifact_bytes: int = Field(
        default=4 << 30, gt=0, description="Largest artifact (a checkpoint) a worker may upload."
    )
    artifact_quota_bytes: int = Field(
        default=16 << 30, gt=0, description="All artifacts of one job together."
    )


def job_settings(request: Request) -> JobSettings:
    """The app's job settings, read from the environment the first time they are needed."""
    state = request.app.state
    if getattr(state, "job_settings", None) is None:
        state.job_settings = JobSettings()
    settings: JobSettings = state.job_settings
    return settings
