"""Datasets, their classes and samples, and the import runs that fill them."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntId, CreatedAt, str_enum, utcnow


class ImportFormat(enum.StrEnum):
    IMAGEFOLDER = "imagefolder"  # root/<class>/<image>
    CSV = "csv"  # header path,label; paths relative to the root
    JSONL = "jsonl"  # one {"path": ..., "label": ...} object per line


class ImportStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class IssueReason(enum.StrEnum):
    """Why a file or manifest row was not imported as a usable sample."""

    EMPTY_FILE = "empty_file"
    TRUNCATED = "truncated"
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    TOO_MANY_PIXELS = "too_many_pixels"
    CORRUPT = "corrupt"
    UNREADABLE = "unreadable"
    NOT_A_FILE = "not_a_file"
    MISSING_FILE = "missing_file"
    BROKEN_SYMLINK = "broken_symlink"
    SYMLINK_OUTSIDE_ROOT = "symlink_outside_root"
    PATH_OUTSIDE_ROOT = "path_outside_root"
    BAD_FILENAME = "bad_filename"
    NO_CLASS_FOLDER = "no_class_folder"
    EMPTY_LABEL = "empty_label"
    UNKNOWN_LABEL = "unknown_label"
    DUPLICATE_PATH = "duplicate_path"
    BAD_ROW = "bad_row"

    @property
    def is_file_problem(self) -> bool:
        """True when the file exists under a valid label but cannot be used as an image.

        Such files still get a sample row (marked with the reason), so a later import notices
        when they are fixed; the other reasons concern paths and labels and get no sample.
        """
        return self in _FILE_PROBLEMS


_FILE_PROBLEMS = frozenset(
    {
        IssueReason.EMPTY_FILE,
        IssueReason.TRUNCATED,
        IssueReason.NOT_AN_IMAGE,
        IssueReason.UNSUPPORTED_FORMAT,
        IssueReason.TOO_MANY_PIXELS,
        IssueReason.CORRUPT,
        IssueReason.UNREADABLE,
        IssueReason.NOT_A_FILE,
        IssueReason.MISSING_FILE,
        IssueReason.BROKEN_SYMLINK,
    }
)


class Dataset(CreatedAt, Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    root: Mapped[str] = mapped_column(
        Text, doc="Absolute directory the sample paths are relative to."
    )
    source: Mapped[str] = mapped_column(Text, doc="The ImageFolder root or the manifest file.")
    source_format: Mapped[ImportFormat] = mapped_column(str_enum(ImportFormat, 16))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class DatasetGrant(CreatedAt, Base):
    """Lets a user (annotator or engineer) see a dataset: its queues, classes and images.
    ``dataset_id`` None grants every dataset, present and future. Admins need no grant."""

    __tablename__ = "dataset_grants"
    __table_args__ = (UniqueConstraint("user_id", "dataset_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class LabelClass(Base):
    """A class of a dataset. ``sample_count`` counts its usable samples after the last import."""

    __tablename__ = "classes"
    __table_args__ = (UniqueConstraint("dataset_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    sample_count: Mapped[int] = mapped_column(default=0)


class Sample(Base):
    """One image file under its given label. Image fields are null while ``error`` is set."""

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("dataset_id", "path"),
        Index("ix_samples_dataset_id_sha256", "dataset_id", "sha256"),
        Index("ix_samples_class_id", "class_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text, doc="POSIX path relative to the dataset root.")
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    byte_size: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None]
    height: Mapped[int | None]
    mode: Mapped[str | None] = mapped_column(String(16), doc="Pillow mode: RGB, L, P, RGBA, CMYK…")
    channels: Mapped[int | None] = mapped_column(SmallInteger)
    image_format: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[IssueReason | None] = mapped_column(str_enum(IssueReason, 32))
    error_detail: Mapped[str | None] = mapped_column(Text)
    duplicate_of_id: Mapped[int | None] = mapped_column(
        BigIntId,
        ForeignKey("samples.id", ondelete="SET NULL"),
        doc="The lowest-id sample with the same SHA-256 in this dataset, when this is a copy.",
    )
    missing: Mapped[bool] = mapped_column(
        default=False, doc="Absent from the last import's source."
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ImportRun(CreatedAt, Base):
    """One run of an import over a dataset's source, with its progress and counts."""

    __tablename__ = "imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[ImportStatus] = mapped_column(str_enum(ImportStatus, 16))
    total: Mapped[int] = mapped_column(default=0, doc="Files and rows found in the source.")
    processed: Mapped[int] = mapped_column(default=0)
    added: Mapped[int] = mapped_column(default=0)
    changed: Mapped[int] = mapped_column(default=0)
    unchanged: Mapped[int] = mapped_column(default=0)
    missing: Mapped[int] = mapped_column(default=0)
    issues: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text, doc="Why the run failed as a whole.")
    finished_at: Mapped[datetime | None]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class ImportIssue(Base):
    """A file or manifest row an import could not use, with the reason."""

    __tablename__ = "import_issues"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("imports.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text, doc="As found; undecodable bytes are escaped.")
    reason: Mapped[IssueReason] = mapped_column(str_enum(IssueReason, 32))
    detail: Mapped[str] = mapped_column(Text, default="")
