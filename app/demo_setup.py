"""``thresher demo``: an admin account, the demo dataset imported, ready to serve."""

from __future__ import annotations

from pathlib import Path

from rich.panel import Panel
from sqlalchemy.orm import Session, sessionmaker

from app.auth import repository as auth_repository
from app.auth import service as auth_service
from app.cli_support import console
from app.datasets import service as dataset_service
from app.datasets.cli import print_summary, run_with_progress
from app.db import transaction
from app.demo import build_demo_dataset
from app.errors import AppError
from app.models import ImportFormat, ImportStatus, Role, User
from app.settings import Settings

ADMIN = "admin"
DEMO_DATASET = "demo-digits"


def prepare_demo(
    settings: Settings, factory: sessionmaker[Session], *, source: Path | None
) -> None:
    """Creates the admin (printing its password once), builds and imports the demo dataset."""
    admin, password = _ensure_admin(factory)
    if source is None:
        demo = build_demo_dataset(settings.data_dir / "demo")
        console.print(
            f"demo dataset: {demo.files:,} images in {demo.images} "
            f"({demo.junk} junk photos, {demo.flipped} flipped labels; truth in {demo.truth.name})"
        )
        name, path = DEMO_DATASET, demo.images
    else:
        name, path = source.resolve().name, source
    with transaction(factory) as session:
        started = dataset_service.start_import(
            session, name=name, path=str(path), format=ImportFormat.IMAGEFOLDER, user=admin
        )
    run = run_with_progress(factory, started, settings, console, name)
    print_summary(factory, run, console)
    if run.status is not ImportStatus.SUCCEEDED:
        raise AppError(f"the import of {name!r} failed: {run.error}")
    _print_welcome(settings, password)


def _ensure_admin(factory: sessionmaker[Session]) -> tuple[User, str | None]:
    with transaction(factory) as session:
        admin = auth_repository.get_user_by_username(session, ADMIN)
        if admin is not None:
            return admin, None
        admin, password = auth_service.create_user(session, username=ADMIN, role=Role.ADMIN)
    return admin, password


def _print_welcome(settings: Settings, password: str | None) -> None:
    if password is not None:
        credentials = f"user [bold]{ADMIN}[/], password [bold]{password}[/]  (shown only this once)"
    else:
        credentials = (
            f"user [bold]{ADMIN}[/] (created earlier; `thresher users set-password {ADMIN}` "
            "prints a new password)"
        )
    console.print(
        Panel.fit(
            f"Open [bold]{settings.public_url}[/] and sign in:\n{credentials}",
            title="Thresher is ready",
        )
    )
