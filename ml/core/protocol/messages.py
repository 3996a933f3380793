"""Messages: the JSON bodies of the worker endpoints, and the HTTP headers and limits they use.

:class:`LeaseRequest` → :class:`LeaseGrant`, :class:`Heartbeat` → :class:`HeartbeatReply`,
:class:`Complete`, :class:`Fail`, :class:`Release`. Every write carries the job's *fence*: the
number of the lease it holds. The server bumps the fence on every lease and refuses (409) a write
with an older one. Binary uploads (result chunks, artifacts) are bundles
(:mod:`ml.core.protocol.bundles`) or files, with the fence in :data:`FENCE_HEADER`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, field_validator

from ml.core.protocol.jobs import JobKind, WireModel

__all__ = [
    "FENCE_HEADER",
    "MAX_HEARTBEAT_EPOCHS",
    "MAX_HEARTBEAT_LOG_LINES",
    "MAX_LOG_LINE_CHARS",
    "MAX_METRIC_NAMES",
    "MAX_RESULT_CHUNK_BYTES",
    "MAX_SUMMARY_BYTES",
    "PROTOCOL_VERSION",
    "SHA256_HEADER",
    "Complete",
    "EpochMetrics",
    "Fail",
    "Heartbeat",
    "HeartbeatReply",
    "LeaseGrant",
    "LeaseRequest",
    "Progress",
    "Release",
    "ResultsStored",
]

PROTOCOL_VERSION = 1

#: The server refuses a result chunk larger than this (64 MiB).
MAX_RESULT_CHUNK_BYTES = 64 << 20
#: Binary uploads (result chunks, artifacts) carry the fence in this header.
FENCE_HEADER = "X-Thresher-Fence"
#: Artifact uploads carry the SHA-256 of their bytes in this header; the server checks it.
SHA256_HEADER = "X-Thresher-SHA256"


class LeaseRequest(WireModel):
    worker: Annotated[str, Field(min_length=1, max_length=200)]
    kinds: Annotated[list[JobKind], Field(min_length=1)]
    device: Annotated[str, Field(min_length=1, max_length=32)]
    gpus: Annotated[int, Field(ge=0)] = 0
    protocol: int = PROTOCOL_VERSION


class LeaseGrant(WireModel):
    """A job for the worker. ``spec`` is validated by the worker (:func:`parse_spec`), so a spec
    it cannot read becomes a failed job rather than a failed lease."""

    job_id: int
    kind: JobKind
    fence: int
    attempt: int
    max_attempts: int
    spec: dict[str, Any]
    lease_seconds: float
    heartbeat_seconds: float
    lease_expires_at: datetime


class Progress(WireModel):
    """Where a job is. ``step``/``steps`` count optimizer steps (or batches, when predicting)
    within the current epoch; ``images_per_second`` is the recent throughput."""

    phase: Annotated[str, Field(max_length=32)] = ""
    epoch: Annotated[int, Field(ge=0)] = 0
    epochs: Annotated[int, Field(ge=0)] = 0
    step: Annotated[int, Field(ge=0)] = 0
    steps: Annotated[int, Field(ge=0)] = 0
    images_per_second: Annotated[float, Field(ge=0)] = 0.0


#: What one heartbeat may carry (the server stores it under the job's row lock): epochs of
#: metrics, metric names per epoch, log lines and characters per line. A worker with more
#: pending sends the rest in its next heartbeats.
MAX_HEARTBEAT_EPOCHS = 100
MAX_METRIC_NAMES = 64
MAX_HEARTBEAT_LOG_LINES = 500
MAX_LOG_LINE_CHARS = 2_000
#: Largest JSON of a completed job's summary.
MAX_SUMMARY_BYTES = 256 << 10


class EpochMetrics(WireModel):
    """Metrics of one epoch, e.g. ``{"train_loss": 1.2, "val_accuracy": 0.61}``; finite values
    only (a worker leaves out a NaN or infinite value)."""

    epoch: Annotated[int, Field(ge=0, le=2**31 - 1)]
    values: Annotated[
        dict[Annotated[str, Field(max_length=100)], Annotated[float, Field(allow_inf_nan=False)]],
        Field(max_length=MAX_METRIC_NAMES),
    ]


class Heartbeat(WireModel):
    """Renews the lease. ``log`` holds console lines numbered from ``log_from`` (0-based over
    the job's attempt), so a retried heartbeat does not repeat lines."""

    fence: int
    progress: Progress | None = None
    metrics: Annotated[list[EpochMetrics], Field(max_length=MAX_HEARTBEAT_EPOCHS)] = Field(
        default_factory=list
    )
    log_from: Annotated[int, Field(ge=0, le=2**62)] = 0
    log: Annotated[
        list[Annotated[str, Field(max_length=MAX_LOG_LINE_CHARS)]],
        Field(max_length=MAX_HEARTBEAT_LOG_LINES),
    ] = Field(default_factory=list)


class HeartbeatReply(WireModel):
    cancel: bool
    lease_expires_at: datetime


class ResultsStored(WireModel):
    chunk: int
    rows: int
    duplicate: bool


class Complete(WireModel):
    """Finishes a job. ``chunks`` and ``rows``: the result chunks uploaded (numbered 0..n-1) and
    the distinct samples in them; the server checks both before the job succeeds."""

    fence: int
    chunks: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    rows: Annotated[int, Field(ge=0, le=2**62)] = 0
    summary: dict[str, Any] = Field(default_factory=dict)

    @field_validator("summary")
    @classmethod
    def _bounded_summary(cls, summary: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(summary, default=str))
        if size > MAX_SUMMARY_BYTES:
            raise ValueError(f"summary of {size} bytes is over {MAX_SUMMARY_BYTES}")
        return summary


class Fail(WireModel):
    """The job failed. ``retriable``: worth another attempt (a crash, out of memory) rather than
    a spec or data problem that would fail again."""

    fence: int
    error: Annotated[str, Field(max_length=20_000)]
    retriable: bool = True


class Release(WireModel):
    """Hands the job back unfinished (the worker is stopping); it does not use up an attempt."""

    fence: int
    reason: Annotated[str, Field(max_length=2_000)] = ""
