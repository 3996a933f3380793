"""Every ORM model, imported here so that Alembic and the app see the whole schema."""

from app.models.base import Base, utcnow
from app.models.dataset import (
    Dataset,
    ImportFormat,
    ImportIssue,
    ImportRun,
    ImportStatus,
    IssueReason,
    LabelClass,
    Sample,
)
from app.models.job import Job, JobArtifact, JobMetric, JobResult, JobResultChunk, JobState
from app.models.review import ReviewDecision, ReviewTask, TaskKind, TaskState, Verdict
from app.models.user import ApiToken, Role, TokenScope, User, WebSession

__all__ = [
    "ApiToken",
    "Base",
    "Dataset",
    "ImportFormat",
    "ImportIssue",
    "ImportRun",
    "ImportStatus",
    "IssueReason",
    "Job",
    "JobArtifact",
    "JobMetric",
    "JobResult",
    "JobResultChunk",
    "JobState",
    "LabelClass",
    "ReviewDecision",
    "ReviewTask",
    "Role",
    "Sample",
    "TaskKind",
    "TaskState",
    "TokenScope",
    "User",
    "Verdict",
    "WebSession",
    "utcnow",
]
