"""``thresher queue``: tasks from a CSV, seeded audits, counts (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.db import transaction
from app.models import ReviewTask, TaskKind
from app.review.cli import queue_cli
from tests.app.review.factories import Pets

cli = typer.Typer()
cli.add_typer(queue_cli, name="queue")


@cli.callback()
def _group() -> None:
    """Keeps ``queue`` a command group, as in the real ``thresher`` command."""


def tasks(factory: sessionmaker[Session]) -> list[ReviewTask]:
    with transaction(factory) as session:
        return list(session.scalars(select(ReviewTask).order_by(ReviewTask.id)))


def test_add_queues_label_checks_with_suggestions_from_a_csv(
    runner: CliRunner, pets: Pets, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    cat, dog = pets.samples["cat"][:2]
    csv_file = tmp_path / "tasks.csv"
    csv_file.write_text(
        "sample_id,priority,score,reason,suggestion_1,probability_1,suggestion_2,probability_2\n"
        f"{cat},2,0.91,odd colours,dog,0.7,{pets.classes['bird']},0.2\n"
        f"{dog},1,,,,,,\n"
    )
    args = ["queue", "add", "pets", "--kind", "label_check", "--csv", str(csv_file)]
    result = runner.invoke(cli, [*args, "--source", "round 1"])
    assert result.exit_code == 0, result.output
    assert "queued 2 label_check tasks in pets" in result.output
    first, second = tasks(session_factory)
    assert (first.sample_id, first.priority, first.score, first.reason) == (
        cat,
        2.0,
        0.91,
        "odd colours",
    )
    assert first.suggestions == [[pets.classes["dog"], 0.7], [pets.classes["bird"], 0.2]]
    assert (second.suggestions, second.source) == (None, "round 1")

    again = runner.invoke(cli, [*args, "--source", "round 1"])
    assert "queued 0 label_check tasks" in again.output
    assert "2 already queued" in again.output


def test_add_queues_class_checks_by_class_name(
    runner: CliRunner, pets: Pets, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    csv_file = tmp_path / "classes.csv"
    csv_file.write_text("class\nbird\ndog\n")
    result = runner.invoke(
        cli, ["queue", "add", str(pets.dataset_id), "--kind", "class_check", "--csv", str(csv_file)]
    )
    assert result.exit_code == 0, result.output
    assert [t.class_id for t in tasks(session_factory)] == [
        pets.classes["bird"],
        pets.classes["dog"],
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id\n1\n", "needs a sample_id column"),
        ("sample_id\nabc\n", "line 2: sample_id 'abc'"),
        ("sample_id,suggestion_1\n1,unicorn\n", "no class named 'unicorn'"),
        ("sample_id\n999999\n", "not samples of dataset"),
    ],
)
def test_add_reports_the_bad_row_and_queues_nothing(
    runner: CliRunner,
    pets: Pets,
    tmp_path: Path,
    session_factory: sessionmaker[Session],
    content: str,
    message: str,
) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(content)
    result = runner.invoke(
        cli, ["queue", "add", "pets", "--kind", "label_check", "--csv", str(csv_file)]
    )
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert tasks(session_factory) == []


def test_audit_queues_a_seeded_sample_once(
    runner: CliRunner, pets: Pets, session_factory: sessionmaker[Session]
) -> None:
    result = runner.invoke(cli, ["queue", "audit", "pets", "--n", "5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "queued 5 junk_audit tasks in pets (seed 3, source 'audit seed 3')" in result.output
    again = runner.invoke(cli, ["queue", "audit", "pets", "--n", "5", "--seed", "3"])
    assert "queued 0 junk_audit tasks" in again.output
    assert {t.kind for t in tasks(session_factory)} == {TaskKind.JUNK_AUDIT}
    assert len(tasks(session_factory)) == 5


def test_stats_prints_the_queues(runner: CliRunner, pets: Pets) -> None:
    runner.invoke(cli, ["queue", "audit", "pets", "--n", "4", "--seed", "1"])
    result = runner.invoke(cli, ["queue", "stats"])
    assert result.exit_code == 0, result.output
    assert "junk_audit" in result.output
    assert "4" in result.output


def test_unknown_dataset_is_an_error(runner: CliRunner, pets: Pets) -> None:
    result = runner.invoke(cli, ["queue", "audit", "birds", "--n", "1"])
    assert result.exit_code == 1
    assert "no dataset named 'birds'" in result.output
