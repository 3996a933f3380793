"""The ``thresher`` command: server, database, accounts, datasets, demo, and the ML library."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from app.auth.cli import tokens_cli, users_cli
from app.cli_support import console, database, reported_errors
from app.datasets.cli import import_command
from app.datasets.grant_cli import grants_cli
from app.db import create_db_engine
from app.logging import configure_logging
from app.migrate import current_revision, upgrade
from app.pipeline.cli import export_command, pipeline_cli
from app.pipeline.simulate_cli import simulate_command
from app.review.cli import queue_cli
from app.settings import Settings, get_settings
from ml.cli import augment_preview, ml_app, weights_app
from ml.worker.cli import worker as worker_command

cli = typer.Typer(
    help="Thresher: clean noisy, long-tailed image datasets with people in the loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="The database schema.", no_args_is_help=True)


@cli.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress events.")] = False,
) -> None:
    configure_logging(get_settings().log_format, logging.INFO if verbose else logging.WARNING)


cli.add_typer(db_cli, name="db")
cli.add_typer(users_cli, name="users")
cli.add_typer(tokens_cli, name="tokens")
cli.command("import")(import_command)
cli.add_typer(grants_cli, name="grants")
cli.add_typer(queue_cli, name="queue")
cli.command("worker")(worker_command)
cli.add_typer(ml_app, name="ml")
cli.add_typer(weights_app, name="weights")
cli.command("augment-preview")(augment_preview)
cli.add_typer(pipeline_cli, name="pipeline")
cli.command("simulate")(simulate_command)
cli.command("export")(export_command)


# --- db ---------------------------------------------------------------------------------------


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Migrates the database to the latest schema (safe to run again)."""
    settings = get_settings()
    settings.ensure_data_dir()
    upgrade(settings.resolved_database_url)
    console.print("database schema is up to date")


@db_cli.command("current")
def db_current() -> None:
    """Prints the schema revision the database is at."""
    engine = create_db_engine(get_settings().resolved_database_url)
    try:
        console.print(current_revision(engine) or "empty (run `thresher db upgrade`)")
    finally:
        engine.dispose()


# --- serving ----------------------------------------------------------------------------------


def _export_overrides(**values: object) -> None:
    """Passes CLI overrides to the server process(es) through the environment."""
    for name, value in values.items():
        if value is not None:
            os.environ[f"THRESHER_{name.upper()}"] = str(value)
    get_settings.cache_clear()


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run_server(settings: Settings, *, workers: int = 1, local_workers: int = 0) -> None:
    """Serves the app (and ``local_workers`` worker processes against it) until interrupted."""
    import uvicorn

    from app.jobs.local_workers import start_local_workers

    handle = start_local_workers(settings, local_workers) if local_workers else None
    console.print(f"Thresher is serving on [bold]{settings.public_url}[/]  (Ctrl+C stops it)")
    # uvicorn shuts down on SIGTERM, then raises the signal again: with its default action the
    # process would die before the local workers are stopped below.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level="warning",
            proxy_headers=True,
        )
    finally:
        if handle is not None:
            handle.stop()


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    local_workers: Annotated[
        int,
        typer.Option(
            min=0, help="Also start N ML workers against this server (needs the ml extra)."
        ),
    ] = 0,
) -> None:
    """Upgrades the database schema, then serves the web app and the API."""
    _export_overrides(host=host, port=port)
    settings = get_settings()
    with reported_errors(), database(settings, upgrade_schema=True):
        pass
    with reported_errors():
        run_server(settings, workers=workers, local_workers=local_workers)


@cli.command()
def demo(
    source: Annotated[
        Path | None,
        typer.Option("--from", help="An ImageFolder to use instead of the built-in demo data."),
    ] = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    local_workers: Annotated[int, typer.Option(min=0, help="ML workers to start.")] = 1,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Prepare, but do not serve.")
    ] = False,
) -> None:
    """Sets everything up on this machine (SQLite), imports a demo dataset and serves the app."""
    from app.demo_setup import prepare_demo

    _export_overrides(host=host, port=port)
    settings = get_settings()
    with reported_errors(), database(settings, upgrade_schema=True) as factory:
        prepare_demo(settings, factory, source=source)
    if not no_serve:
        with reported_errors():
            run_server(settings, local_workers=local_workers)


def main() -> None:
    cli()
