"""``thresher grants``: who may see which datasets (admins see all of them)."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.orm import Session

from app.auth import repository as auth_repository
from app.auth import service as auth_service
from app.cli_support import console, database, reported_errors
from app.datasets import grants, service
from app.db import transaction
from app.errors import Invalid, NotFound
from app.models import Dataset
from app.settings import get_settings

grants_cli = typer.Typer(
    help="Dataset access: which annotators and engineers see which datasets.",
    no_args_is_help=True,
)

DatasetOption = Annotated[
    str | None, typer.Option("--dataset", help="The dataset's name or id.", show_default=False)
]
EveryOption = Annotated[bool, typer.Option("--all", help="Every dataset, present and future.")]


def _dataset(session: Session, dataset: str | None, every: bool) -> Dataset | None:
    if (dataset is None) == (not every):
        raise Invalid("give --dataset NAME or --all")
    if dataset is None:
        return None
    return service.dataset_by_name_or_id(session, dataset)


@grants_cli.command("add")
def add(username: str, dataset: DatasetOption = None, every: EveryOption = False) -> None:
    """Lets USERNAME see a dataset (--dataset) or every dataset (--all)."""
    with reported_errors(), database(get_settings()) as factory, transaction(factory) as session:
        user = auth_service.user_by_username(session, username)
        target = _dataset(session, dataset, every)
        _, created = grants.grant(session, user=user, dataset=target, by=None)
        what = target.name if target is not None else "every dataset"
        console.print(f"{username} {'may now see' if created else 'already sees'} {what}")


@grants_cli.command("remove")
def remove(username: str, dataset: DatasetOption = None, every: EveryOption = False) -> None:
    """Takes back USERNAME's grant of a dataset (--dataset) or of every dataset (--all)."""
    with reported_errors(), database(get_settings()) as factory, transaction(factory) as session:
        user = auth_service.user_by_username(session, username)
        target = _dataset(session, dataset, every)
        target_id = target.id if target is not None else None
        rows = [
            g for g in grants.list_grants(session, user_id=user.id) if g.dataset_id == target_id
        ]
        if not rows:
            raise NotFound(f"{username} has no such grant")
        grants.revoke(session, grant_id=rows[0].id, by=None)
        console.print(f"{username} no longer sees {target.name if target else 'every dataset'}")


@grants_cli.command("list")
def list_grants(
    username: Annotated[str | None, typer.Argument(help="Only this user's grants.")] = None,
) -> None:
    """Lists the grants (admins see every dataset without one)."""
    with (
        reported_errors(),
        database(get_settings()) as factory,
        transaction(factory, read_only=True) as session,
    ):
        user_id = auth_service.user_by_username(session, username).id if username else None
        rows = grants.list_grants(session, user_id=user_id)
        names = {d.dataset.id: d.dataset.name for d in service.list_datasets(session)}
        users = {u.id: u.username for u in auth_repository.list_users(session)}
        lines = [
            f"{users.get(g.user_id, g.user_id)}\t"
            f"{names.get(g.dataset_id, g.dataset_id) if g.dataset_id else 'every dataset'}"
            for g in rows
        ]
    typer.echo("\n".join(lines) if lines else "no grants")
