"""``thresher import``: imports in-process and prints a summary, on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.datasets.cli import import_command
from app.models import ImportRun, Sample
from app.settings import get_settings
from tests.app.datasets.files import image_bytes, write, write_csv

cli = typer.Typer()
cli.command("import")(import_command)


@cli.callback()
def _group() -> None:
    """Keeps ``import`` a subcommand, as in the real ``thresher`` command."""


@pytest.fixture
def runner(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The shared runner (tests/conftest.py), importing with two processes."""
    monkeypatch.setenv("THRESHER_IMPORT_PROCESSES", "2")
    get_settings.cache_clear()
    return runner


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write(root / "cat" / "a.jpg", image_bytes("JPEG", seed=1))
    write(root / "dog" / "b.jpg", image_bytes("JPEG", seed=2))
    write(root / "dog" / "[odd] name.jpg", b"not an image")
    return root


def test_import_prints_counts_and_issues(
    runner: CliRunner, folder: Path, session_factory: sessionmaker[Session]
) -> None:
    result = runner.invoke(cli, ["import", "pets", str(folder)])
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output
    assert "not_an_image" in result.output
    assert "'dog/[odd] name.jpg'" in result.output
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Sample)) == 3


def test_running_it_again_reimports(
    runner: CliRunner, folder: Path, session_factory: sessionmaker[Session]
) -> None:
    assert runner.invoke(cli, ["import", "pets", str(folder)]).exit_code == 0
    result = runner.invoke(cli, ["import", "pets", str(folder)])
    assert result.exit_code == 0, result.output
    with session_factory() as session:
        runs = session.scalars(select(ImportRun).order_by(ImportRun.id)).all()
    assert [(run.added, run.unchanged) for run in runs] == [(3, 0), (0, 3)]


def test_manifest_with_root_and_class_list(
    runner: CliRunner, folder: Path, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    manifest = write_csv(tmp_path / "m.csv", [["cat/a.jpg", "cat"], ["dog/b.jpg", "wolf"]])
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    result = runner.invoke(
        cli,
        [
            "import", "csv", str(manifest), "--format", "csv",
            "--root", str(folder), "--classes", str(tmp_path / "classes.txt"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "unknown_label" in result.output
    with session_factory() as session:
        assert session.scalars(select(Sample.path)).all() == ["cat/a.jpg"]


def test_bad_path_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["import", "x", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "does not exist" in result.output
