"""``thresher import NAME PATH``: import or re-import a dataset in this process, with progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from app.cli_support import database
from app.datasets import service
from app.datasets.schemas import StartedImport
from app.db import transaction
from app.errors import AppError
from app.models import ImportFormat, ImportRun, ImportStatus
from app.settings import Settings, get_settings

#: How many issues the summary lists before pointing at the full report.
SHOWN_ISSUES = 20


def import_command(
    name: Annotated[
        str, typer.Argument(help="The dataset's name; an existing one is re-imported.")
    ],
    path: Annotated[
        Path, typer.Argument(help="An ImageFolder root (root/<class>/<image>) or a manifest file.")
    ],
    format: Annotated[
        ImportFormat | None,
        typer.Option("--format", help="Detected from PATH when left out."),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(help="Manifests: the folder their paths are relative to (default: theirs)."),
    ] = None,
    classes: Annotated[
        Path | None,
        typer.Option(help="A text file of the allowed class names, one per line."),
    ] = None,
) -> None:
    """Imports a dataset: probes every new or changed image, then prints what it found.

    Running it again with the same NAME and PATH re-imports: new files are added, changed ones
    re-probed, files gone from the source marked missing. Exits 1 if the import failed.
    """
    settings = get_settings()
    console = Console(stderr=True, soft_wrap=True)
    try:
        with database(settings) as factory:
            with transaction(factory) as session:
                started = service.start_import(
                    session,
                    name=name,
                    path=str(path),
                    format=format,
                    root=str(root) if root is not None else None,
                    classes=str(classes) if classes is not None else None,
                )
            run = run_with_progress(factory, started, settings, console, name)
            print_summary(factory, run, console)
    except AppError as exc:
        console.print(f"[bold red]error:[/] {escape(exc.message)}")
        raise typer.Exit(1) from exc
    if run.status is not ImportStatus.SUCCEEDED:
        raise typer.Exit(1)


def run_with_progress(
    factory: sessionmaker[Session],
    started: StartedImport,
    settings: Settings,
    console: Console,
    name: str,
) -> ImportRun:
    """Runs a started import in this process with a progress bar on ``console``."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"importing {name}", total=None)

        def on_progress(run: ImportRun) -> None:
            progress.update(task, total=run.total or None, completed=run.processed)

        return service.run_started_import(
            factory, started, settings=settings, on_progress=on_progress
        )


def print_summary(factory: sessionmaker[Session], run: ImportRun, console: Console) -> None:
    """The run's counts, its issues by reason (the first few files) and label conflicts."""
    table = Table(title=f"import {run.id}: {run.status.value}", show_header=False)
    for label, value in (
        ("files and rows", run.total),
        ("added", run.added),
        ("changed", run.changed),
        ("unchanged", run.unchanged),
        ("missing from the source", run.missing),
        ("issues", run.issues),
    ):
        table.add_row(label, f"{value:,}")
    console.print(table)
    if run.error:
        console.print(f"[bold red]failed:[/] {escape(run.error)}")
        return
    with transaction(factory) as session:
        report = service.import_report(session, run, limit=SHOWN_ISSUES)
    for count in report.by_reason:
        console.print(f"  {count.reason.value:24} {count.count:,}")
    for issue in report.issues:
        console.print(
            f"  [yellow]{issue.reason.value}[/] {escape(repr(issue.path))}: {escape(issue.detail)}"
        )
    if report.total_issues > len(report.issues):
        console.print(f"  … the whole report: GET /api/imports/{run.id}/report")
    for group in report.conflicts:
        labels = escape(", ".join(f"{m.path!r} ({m.class_name})" for m in group.samples))
        console.print(f"  [red]conflict[/] {group.sha256[:12]}: {labels}")
