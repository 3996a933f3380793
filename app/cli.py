"""The ``thresher`` command: server, database, accounts, datasets, demo, and the ML library."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.auth import repository as auth_repository
from app.auth import service as auth_service
from app.cli_support import console, database, reported_errors
from app.datasets.cli import import_command
from app.db import create_db_engine, transaction
from app.logging import configure_logging
from app.migrate import current_revision, upgrade
from app.models import Role, TokenScope
from app.pipeline.cli import export_command, pipeline_cli, simulate_command
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
users_cli = typer.Typer(help="Accounts.", no_args_is_help=True)
tokens_cli = typer.Typer(help="API tokens for engineers and workers.", no_args_is_help=True)


@cli.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress events.")] = False,
) -> None:
    configure_logging(get_settings().log_format, logging.INFO if verbose else logging.WARNING)


cli.add_typer(db_cli, name="db")
cli.add_typer(users_cli, name="users")
cli.add_typer(tokens_cli, name="tokens")
cli.command("import")(import_command)
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


# --- users and tokens -------------------------------------------------------------------------


def _read_password(from_stdin: bool) -> str | None:
    return sys.stdin.readline().rstrip("\n") if from_stdin else None


@users_cli.command("create")
def users_create(
    username: str,
    role: Annotated[Role, typer.Option(help="annotator, engineer or admin")] = Role.ANNOTATOR,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Creates a user. Without --password-stdin a password is generated and printed once."""
    password = _read_password(password_stdin)
    with reported_errors(), database(get_settings()) as factory, transaction(factory) as session:
        user, generated = auth_service.create_user(
            session, username=username, role=role, password=password
        )
    console.print(f"created {user.role.value} [bold]{user.username}[/]")
    if generated:
        console.print(f"password (shown once): [bold]{generated}[/]")


@users_cli.command("set-password")
def users_set_password(
    username: str,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
) -> None:
    """Sets a new password (generated unless --password-stdin), signs the user out everywhere
    and revokes their API tokens (worker tokens stay)."""
    password = _read_password(password_stdin)
    with reported_errors(), database(get_settings()) as factory, transaction(factory) as session:
        user = auth_service.user_by_username(session, username)
        generated = auth_service.set_password(session, user=user, password=password)
    console.print(f"password of [bold]{username}[/] changed; their API tokens are revoked")
    if generated:
        console.print(f"password (shown once): [bold]{generated}[/]")


@users_cli.command("list")
def users_list() -> None:
    """Lists the accounts."""
    with reported_errors(), database(get_settings()) as factory, transaction(factory) as session:
        for user in auth_repository.list_users(session):
            state = "" if user.is_active else " (deactivated)"
            console.print(f"{user.username:24} {user.role.value}{state}")


@tokens_cli.command("create")
def tokens_create(
    user: Annotated[str, typer.Option(help="The token's owner (an engineer or admin).")],
    name: Annotated[str, typer.Option(help="What the token is for, e.g. gpu-box-1.")],
    scope: Annotated[
        TokenScope, typer.Option(help="api: the engineer API; worker: only the worker protocol.")
    ] = TokenScope.API,
) -> None:
    """Creates an API token and prints it once. Send it as `Authorization: Bearer <token>`."""
    with reported_errors(), database(get_settings()) as factory, transaction(factory) as session:
        owner = auth_service.user_by_username(session, user)
        token, secret = auth_service.create_token(session, user=owner, name=name, scope=scope)
    console.print(f"token {token.id} ({token.scope.value}) for [bold]{user}[/], shown once:")
    typer.echo(secret)


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
