"""``thresher queue``: queue review tasks from a CSV, queue a random audit, show the queues."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session

from app.cli_support import database
from app.datasets.service import dataset_by_name_or_id
from app.db import transaction
from app.errors import AppError, Invalid
from app.models import TaskKind
from app.review.records import Suggestion, TaskItem
from app.review.service import stats as stats_service
from app.review.service import tasks as task_service
from app.settings import get_settings

queue_cli = typer.Typer(help="Review queues: add tasks, audit a dataset, show counts.")

#: Suggestion columns of a label_check CSV: suggestion_1 … suggestion_10 (class id or name),
#: each with its probability_N.
MAX_SUGGESTION_COLUMNS = task_service.MAX_SUGGESTIONS

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class CsvProblem(Invalid):
    code = "bad_csv"


@contextmanager
def _session() -> Iterator[Session]:
    """A transaction on the configured database, after checking its schema is current."""
    with database(get_settings()) as factory, transaction(factory) as session:
        yield session


def _fail(exc: AppError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(exc.message)}")
    return typer.Exit(1)


@queue_cli.command("add")
def add(
    dataset: Annotated[str, typer.Argument(help="The dataset's name (or id).")],
    kind: Annotated[TaskKind, typer.Option(help="The kind of review to queue.")],
    csv_file: Annotated[
        Path,
        typer.Option(
            "--csv",
            exists=True,
            dir_okay=False,
            help="Header row, then one task per row: sample_id (class_check: class_id or "
            "class), optional priority, score, reason; label_check optionally "
            "suggestion_1..10 (class id or name) with probability_1..10.",
        ),
    ],
    source: Annotated[
        str, typer.Option(help="What queues them; the same rows from the same source are skipped.")
    ] = "manual",
    reason: Annotated[str, typer.Option(help="Why, for rows without a reason.")] = "",
) -> None:
    """Queues review tasks from a CSV. Running it again queues nothing twice."""
    try:
        with _session() as session:
            target = dataset_by_name_or_id(session, dataset)
            classes = {
                name: class_id for class_id, name in task_service.dataset_classes(session, target)
            }
            items = read_items(csv_file, kind=kind, class_ids=classes)
            created = task_service.create_tasks(
                session, dataset=target, kind=kind, items=items, source=source, reason=reason
            )
    except AppError as exc:
        raise _fail(exc) from exc
    console.print(
        f"queued {created.created:,} {kind.value} tasks in [bold]{escape(target.name)}[/]"
        + (
            f" ({created.skipped:,} already queued from {escape(source)!r})"
            if created.skipped
            else ""
        )
    )


@queue_cli.command("audit")
def audit(
    dataset: Annotated[str, typer.Argument(help="The dataset's name (or id).")],
    n: Annotated[int, typer.Option("--n", min=1, help="How many samples to audit.")],
    seed: Annotated[
        int | None, typer.Option(help="Random seed; the same seed draws the same samples.")
    ] = None,
    source: Annotated[str | None, typer.Option(help="Default: 'audit seed <seed>'.")] = None,
) -> None:
    """Queues junk_audit tasks for a random sample of the samples believed clean."""
    try:
        with _session() as session:
            target = dataset_by_name_or_id(session, dataset)
            created, used_seed, used_source = task_service.create_audit(
                session, dataset=target, n=n, seed=seed, source=source
            )
    except AppError as exc:
        raise _fail(exc) from exc
    console.print(
        f"queued {created.created:,} junk_audit tasks in [bold]{escape(target.name)}[/] "
        f"(seed {used_seed}, source {escape(used_source)!r}"
        + (f", {created.skipped:,} already queued" if created.skipped else "")
        + ")"
    )


@queue_cli.command("stats")
def stats(
    dataset: Annotated[str | None, typer.Argument(help="Only this dataset (name or id).")] = None,
) -> None:
    """Prints every queue's tasks by state."""
    try:
        with _session() as session:
            dataset_id = dataset_by_name_or_id(session, dataset).id if dataset else None
            counts = stats_service.queue_counts(session, dataset_id=dataset_id)
    except AppError as exc:
        raise _fail(exc) from exc
    table = Table("dataset", "kind", "pending", "leased", "done", "cancelled")
    for row in counts:
        table.add_row(
            escape(row.dataset_name),
            row.kind.value,
            f"{row.pending:,}",
            f"{row.leased:,}",
            f"{row.done:,}",
            f"{row.cancelled:,}",
        )
    console.print(table if counts else "no review tasks")


def read_items(path: Path, *, kind: TaskKind, class_ids: dict[str, int]) -> list[TaskItem]:
    """The tasks of a CSV file; raises CsvProblem naming the line of the first bad row."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = set(reader.fieldnames or [])
        subject_columns = {"class_id", "class"} if kind.is_about_a_class else {"sample_id"}
        if not fields & subject_columns:
            wanted = " or ".join(sorted(subject_columns))
            raise CsvProblem(f"{path}: the header needs a {wanted} column")
        items = []
        for row in reader:
            try:
                items.append(_item(row, kind=kind, class_ids=class_ids))
            except (ValueError, KeyError) as exc:
                raise CsvProblem(f"{path}, line {reader.line_num}: {exc}") from exc
    return items


def _item(row: dict[str, str], *, kind: TaskKind, class_ids: dict[str, int]) -> TaskItem:
    def number(name: str) -> float | None:
        text = (row.get(name) or "").strip()
        if not text:
            return None
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number")
        return value

    def class_of(text: str) -> int:
        text = text.strip()
        if text.isdigit():
            return int(text)
        if text not in class_ids:
            if not text:
                raise ValueError("the class is empty")
            raise KeyError(f"no class named {text!r} in this dataset")
        return class_ids[text]

    sample_id = class_id = None
    if kind.is_about_a_class:
        class_id = class_of(row.get("class_id") or row.get("class") or "")
    else:
        text = (row.get("sample_id") or "").strip()
        if not text.isdigit():
            raise ValueError(f"sample_id {text!r} is not a sample id")
        sample_id = int(text)
    suggestions = []
    for index in range(1, MAX_SUGGESTION_COLUMNS + 1):
        suggested = (row.get(f"suggestion_{index}") or "").strip()
        if suggested:
            probability = number(f"probability_{index}")
            suggestions.append(
                Suggestion(class_id=class_of(suggested), probability=probability or 0.0)
            )
    return TaskItem(
        sample_id=sample_id,
        class_id=class_id,
        priority=number("priority") or 0.0,
        score=number("score"),
        reason=(row.get("reason") or "").strip() or None,
        suggestions=tuple(suggestions),
    )
