"""``thresher demo``: an admin account, the demo dataset imported and its cleaning loop created in
auto mode, ready to serve with a local worker.

Served, the loop starts at once: its junk seed (the images that are not 3-channel plus a random
sample) waits for review in the browser, and every step after it starts when the one before has
finished and its queue is empty, so the demo goes as far as the reviews that are done.
"""

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
from app.models import Dataset, ImportFormat, ImportStatus, Role, User
from app.pipeline import service as pipeline_service
from app.settings import Settings

ADMIN = "admin"
DEMO_DATASET = "demo-digits"

#: The demo's loop, sized for 1,857 images on a CPU: a smaller junk seed and audit than a
#: web-scale dataset needs, and a junk target the audit's bound can reach at that size.
DEMO_PIPELINE_CONFIG: dict[str, object] = {
    "seed_random_samples": 150,
    "audit_size": 200,
    "junk_target_rate": 0.03,
    "max_junk_iterations": 2,
    "min_class_size": 20,
}


def prepare_demo(
    settings: Settings, factory: sessionmaker[Session], *, source: Path | None
) -> None:
    """Creates the admin (printing its password once), builds and imports the demo dataset."""
    admin, password = _ensure_admin(factory)
    if source is None:
        demo = build_demo_dataset(settings.demo_dir)
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
    dataset_id = _ensure_pipeline(factory, started.dataset.id, admin, builtin=source is None)
    truth = settings.demo_dir / "truth.csv" if source is None else None
    _print_welcome(settings, password, dataset_id=dataset_id, name=name, truth=truth)


def _ensure_pipeline(
    factory: sessionmaker[Session], dataset_id: int, admin: User, *, builtin: bool
) -> int:
    """The dataset's cleaning loop in auto mode (an existing one is left as it is)."""
    with transaction(factory) as session:
        dataset = session.get_one(Dataset, dataset_id)
        pipeline, created = pipeline_service.create_pipeline(
            session,
            dataset=dataset,
            config=DEMO_PIPELINE_CONFIG if builtin else None,
            auto=True,
            user=admin,
        )
        if created:
            console.print(f"cleaning loop created for {dataset.name!r}, in auto mode")
        else:
            console.print(
                f"cleaning loop of {dataset.name!r} resumed at its {pipeline.stage.value} stage"
            )
    return dataset_id


def _ensure_admin(factory: sessionmaker[Session]) -> tuple[User, str | None]:
    with transaction(factory) as session:
        admin = auth_repository.get_user_by_username(session, ADMIN)
        if admin is not None:
            return admin, None
        admin, password = auth_service.create_user(session, username=ADMIN, role=Role.ADMIN)
    return admin, password


def _print_welcome(
    settings: Settings,
    password: str | None,
    *,
    dataset_id: int,
    name: str,
    truth: Path | None,
) -> None:
    if password is not None:
        credentials = f"user [bold]{ADMIN}[/], password [bold]{password}[/]  (shown only this once)"
    else:
        credentials = (
            f"user [bold]{ADMIN}[/] (created earlier; `thresher users set-password {ADMIN}` "
            "prints a new password)"
        )
    url = settings.public_url.rstrip("/")
    lines = [
        f"Open [bold]{url}[/] and sign in:\n{credentials}",
        "",
        f"Review:     {url}/review  (press ? for the keys)",
        f"Dashboard:  {url}/datasets/{dataset_id}/cleaning",
        f"Jobs:       {url}/jobs  (one local worker runs them)",
    ]
    console.print(Panel.fit("\n".join(lines), title="Thresher is ready"))
    if truth is not None:
        console.print(
            "To let simulated annotators answer from the ground truth instead, run in another "
            "terminal:"
        )
        # Plain output: a terminal's width must not wrap or cut the command.
        print(
            f"  THRESHER_TOKEN=$(.venv/bin/thresher tokens create --user {ADMIN} "
            f"--name simulate | tail -n 1) .venv/bin/thresher simulate {name} --truth {truth} "
            "--column clean_label --follow"
        )
