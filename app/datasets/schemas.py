"""What the dataset services return (frozen dataclasses over ORM rows) and the API's bodies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.models import (
    Dataset,
    ImportFormat,
    ImportIssue,
    ImportRun,
    ImportStatus,
    IssueReason,
    Sample,
)

# --- service results (also what the HTML pages render from) -----------------------------------


@dataclass(frozen=True)
class DatasetListItem:
    dataset: Dataset
    usable_samples: int
    class_count: int
    latest_import: ImportRun | None


@dataclass(frozen=True)
class ClassCount:
    id: int
    name: str
    count: int


@dataclass(frozen=True)
class ModeCount:
    """Usable samples by Pillow mode and channel count (e.g. ``RGB``/3, ``L``/1, ``RGBA``/4)."""

    mode: str
    channels: int
    count: int


@dataclass(frozen=True)
class DatasetOverview:
    """Counts over a dataset's current samples.

    ``usable`` = decodable and present; ``unusable`` = present but with a file error;
    ``missing`` = gone from the source at the last import (not counted as usable or unusable);
    ``duplicate_samples`` = usable samples that are byte-identical copies of a lower-id sample;
    ``conflict_groups`` = sets of identical images given more than one label.
    ``classes`` is sorted by count descending, then name; ``modes`` by count descending.
    """

    dataset: Dataset
    total_samples: int
    usable_samples: int
    unusable_samples: int
    missing_samples: int
    duplicate_samples: int
    conflict_groups: int
    classes: list[ClassCount]
    modes: list[ModeCount]
    latest_import: ImportRun | None


@dataclass(frozen=True)
class ReasonCount:
    reason: IssueReason
    count: int


@dataclass(frozen=True)
class ConflictMember:
    sample_id: int
    path: str
    class_name: str


@dataclass(frozen=True)
class ConflictGroup:
    """Byte-identical usable samples (same SHA-256) that carry more than one label."""

    sha256: str
    samples: list[ConflictMember]


@dataclass(frozen=True)
class ImportReport:
    """One import run's problems: counts by reason, one page of issues, the dataset's conflicts.

    ``by_reason`` is sorted by count descending, then reason; ``issues`` in the order found.
    """

    run: ImportRun
    by_reason: list[ReasonCount]
    issues: list[ImportIssue]
    total_issues: int
    conflicts: list[ConflictGroup]


@dataclass(frozen=True)
class SamplePage:
    """One page of samples in id order; pass ``next_after_id`` as ``after_id`` for the next one."""

    samples: list[Sample]
    next_after_id: int | None


@dataclass(frozen=True)
class StartedImport:
    """A run created and committed-to-be; ``classes`` is the class list it must enforce."""

    dataset: Dataset
    run: ImportRun
    classes: tuple[str, ...] | None


# --- API bodies -------------------------------------------------------------------------------


#: A class list sent in the request (its names are checked like a file's lines).
ClassNames = Annotated[list[str], Field(max_length=100_000)]


class DatasetCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f/]+$")
    path: str = Field(
        min_length=1,
        description="On the server: an ImageFolder root (root/<class>/<image>), "
        "a CSV manifest (path,label) or a JSONL manifest.",
    )
    format: ImportFormat | None = Field(
        default=None, description="Detected when left out: folder, .csv, .jsonl/.ndjson."
    )
    root: str | None = Field(
        default=None,
        description="Manifests only: the folder manifest paths are relative to "
        "(default: the manifest's folder).",
    )
    classes: str | ClassNames | None = Field(
        default=None,
        description="The allowed class names: a text file on the server, one per line, or "
        "the list itself.",
    )


class ImportCreate(BaseModel):
    classes: str | ClassNames | None = Field(
        default=None,
        description="The allowed class names: a text file on the server, one per line, or "
        "the list itself.",
    )


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    root: str
    source: str
    source_format: ImportFormat
    created_at: datetime


class ImportRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: int
    status: ImportStatus
    total: int = Field(description="Files and rows found in the source.")
    processed: int
    added: int
    changed: int
    unchanged: int
    missing: int = Field(description="Samples whose files were gone from the source.")
    issues: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class ImportAccepted(BaseModel):
    dataset: DatasetRead
    import_run: ImportRunRead


class DatasetListItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    dataset: DatasetRead
    usable_samples: int
    class_count: int
    latest_import: ImportRunRead | None


class ClassCountRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    count: int


class ModeCountRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    mode: str
    channels: int
    count: int


class DatasetOverviewRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    dataset: DatasetRead
    total_samples: int
    usable_samples: int
    unusable_samples: int
    missing_samples: int
    duplicate_samples: int
    conflict_groups: int
    classes: list[ClassCountRead]
    modes: list[ModeCountRead]
    latest_import: ImportRunRead | None


class ClassRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    sample_count: int = Field(description="Usable samples present at the last import.")


class SampleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    path: str
    class_id: int
    byte_size: int | None
    sha256: str | None
    width: int | None
    height: int | None
    mode: str | None
    channels: int | None
    image_format: str | None
    error: IssueReason | None
    error_detail: str | None
    duplicate_of_id: int | None
    missing: bool


class SamplePageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    samples: list[SampleRead]
    next_after_id: int | None


class ImportIssueRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    path: str
    reason: IssueReason
    detail: str


class ReasonCountRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    reason: IssueReason
    count: int


class ConflictMemberRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sample_id: int
    path: str
    class_name: str


class ConflictGroupRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sha256: str
    samples: list[ConflictMemberRead]


class ImportReportRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    run: ImportRunRead
    by_reason: list[ReasonCountRead]
    issues: list[ImportIssueRead]
    total_issues: int
    conflicts: list[ConflictGroupRead]


class GrantCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    dataset_id: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="Leave out to grant every dataset."
    )


class GrantRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    dataset_id: int | None = Field(description="None: every dataset.")
    granted_by_id: int | None
    created_at: datetime
