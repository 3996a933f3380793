"""Imports in the dataset service tests: run one (or again) in its own transactions, as the
API's background task does, and read back what it left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.datasets import service
from app.db import transaction
from app.models import ImportRun, IssueReason, Sample
from app.settings import Settings

Factory = sessionmaker[Session]


def do_import(
    factory: Factory, settings: Settings, name: str, path: Path, **options: Any
) -> ImportRun:
    with transaction(factory) as session:
        started = service.start_import(session, name=name, path=str(path), **options)
    return service.run_started_import(factory, started, settings=settings)


def reimport(factory: Factory, settings: Settings, dataset_id: int) -> ImportRun:
    with transaction(factory) as session:
        dataset = service.get_dataset(session, dataset_id)
        started = service.restart_import(session, dataset=dataset)
    return service.run_started_import(factory, started, settings=settings)


def samples_by_path(factory: Factory, dataset_id: int) -> dict[str, Sample]:
    with factory() as session:
        rows = session.scalars(select(Sample).where(Sample.dataset_id == dataset_id))
        return {sample.path: sample for sample in rows}


def issues_of(factory: Factory, run: ImportRun) -> dict[str, IssueReason]:
    with factory() as session:
        report = service.import_report(session, run, limit=1000)
    assert report.total_issues == len(report.issues) == run.issues
    return {issue.path: issue.reason for issue in report.issues}


def counts(run: ImportRun) -> tuple[int, int, int, int, int]:
    return run.added, run.changed, run.unchanged, run.missing, run.issues
