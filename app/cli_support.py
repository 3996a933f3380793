"""What every ``thresher`` command that touches the database shares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from alembic.util import CommandError
from rich.console import Console
from rich.markup import escape
from sqlalchemy.orm import Session, sessionmaker

from app.db import create_db_engine, create_session_factory, is_sqlite
from app.errors import AppError
from app.migrate import current_revision, heads, upgrade
from app.settings import Settings

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class SchemaOutdated(AppError):
    status_code = 503
    code = "schema_outdated"


@contextmanager
def database(
    settings: Settings, *, upgrade_schema: bool = False
) -> Iterator[sessionmaker[Session]]:
    """A session factory on the configured database, after checking (or upgrading) the schema.

    SQLite, the embedded database of this machine's data directory, is created or upgraded by
    any command that finds it behind. A PostgreSQL schema is migrated on purpose: by ``serve``,
    ``demo`` and ``db upgrade`` (``upgrade_schema``) only; elsewhere a schema that is not at
    this version's head raises ``SchemaOutdated``, which names the command to run.
    """
    url = settings.resolved_database_url
    settings.ensure_data_dir()
    engine = create_db_engine(url)
    try:
        expected = set(heads(url))
        found = current_revision(engine)
        if found not in expected and (upgrade_schema or is_sqlite(url)):
            try:
                upgrade(url)
            except CommandError as exc:  # a revision this version does not know: a newer one's
                raise SchemaOutdated(
                    f"cannot upgrade the database schema from {found}: {exc}"
                ) from exc
            found = current_revision(engine)
        if found not in expected:
            raise SchemaOutdated(
                f"the database schema is at {found or 'nothing'}, this version needs "
                f"{', '.join(sorted(expected))}: run `thresher db upgrade`"
            )
        yield create_session_factory(engine)
    finally:
        engine.dispose()


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turns an ``AppError`` into a one-line message on stderr and exit status 1."""
    try:
        yield
    except AppError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}")
        raise typer.Exit(1) from exc
