"""``thresher users`` and ``thresher tokens``: accounts, roles, offboarding and tokens.

The command line acts with every right (whoever runs it can read the server's database), so it
may change any account and revoke any token; the changes are logged as made by the command line.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape

from app.auth import repository, service
from app.cli_support import console, database, reported_errors
from app.db import transaction
from app.models import Role, TokenScope, User
from app.settings import get_settings

users_cli = typer.Typer(help="Accounts.", no_args_is_help=True)
tokens_cli = typer.Typer(help="API tokens for engineers and workers.", no_args_is_help=True)


def _read_password(from_stdin: bool) -> str | None:
    return sys.stdin.readline().rstrip("\n") if from_stdin else None


# --- users ------------------------------------------------------------------------------------


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
        user, generated = service.create_user(
            session, username=username, role=role, password=password
        )
    console.print(f"created {user.role.value} [bold]{escape(user.username)}[/]")
    if generated:
        console.print(f"password (shown once): [bold]{escape(generated)}[/]")


@users_cli.command("set-password")
def users_set_password(
    username: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    keep_tokens: Annotated[
        bool, typer.Option("--keep-tokens", help="Revoke none of the user's tokens.")
    ] = False,
    keep_worker_tokens: Annotated[
        bool,
        typer.Option(
            "--keep-worker-tokens",
            help="Revoke only API tokens; worker tokens keep running jobs.",
        ),
    ] = False,
) -> None:
    """Sets a new password (generated unless --password-stdin), signs the user out everywhere
    and revokes all their tokens, API and worker, unless told to keep them."""
    password = _read_password(password_stdin)
    if keep_tokens:
        revoke: frozenset[TokenScope] = frozenset()
    elif keep_worker_tokens:
        revoke = frozenset({TokenScope.API})
    else:
        revoke = service.ALL_SCOPES
    with reported_errors(), database(get_settings()) as factory, transaction(factory) as session:
        user = service.user_by_username(session, username)
        generated, revoked = service.set_password(
            session, user=user, password=password, revoke=revoke
        )
    console.print(
        f"password of [bold]{escape(username)}[/] changed; signed out everywhere; "
        f"{revoked} token(s) revoked"
    )
    if generated:
        console.print(f"password (shown once): [bold]{escape(generated)}[/]")


@users_cli.command("list")
def users_list() -> None:
    """Lists the accounts."""
    with (
        reported_errors(),
        database(get_settings()) as factory,
        transaction(factory, read_only=True) as session,
    ):
        for user in repository.list_users(session):
            state = "" if user.is_active else " (deactivated)"
            console.print(f"{escape(user.username):24} {user.role.value}{state}")


def _update(username: str, *, role: Role | None = None, is_active: bool | None = None) -> User:
    with reported_errors(), database(get_settings()) as factory, transaction(factory) as session:
        user = service.user_by_username(session, username)
        return service.update_user(session, user=user, by=None, role=role, is_active=is_active)


@users_cli.command("set-role")
def users_set_role(
    username: str,
    role: Annotated[Role, typer.Argument(help="annotator, engineer or admin")],
) -> None:
    """Changes a user's role from their next request on. A role below engineer revokes all
    their tokens. The last active admin keeps the role."""
    user = _update(username, role=role)
    console.print(f"[bold]{escape(user.username)}[/] is now {user.role.value}")


@users_cli.command("deactivate")
def users_deactivate(username: str) -> None:
    """Locks a user out at once: their browser sessions end and all their tokens are revoked.
    The last active admin cannot be deactivated."""
    user = _update(username, is_active=False)
    console.print(f"[bold]{escape(user.username)}[/] is deactivated; signed out and tokens revoked")


@users_cli.command("reactivate")
def users_reactivate(username: str) -> None:
    """Lets a deactivated user sign in again with their password (their old tokens stay
    revoked)."""
    user = _update(username, is_active=True)
    console.print(f"[bold]{escape(user.username)}[/] is active again")


# --- tokens -----------------------------------------------------------------------------------


@tokens_cli.command("create")
def tokens_create(
    user: Annotated[str, typer.Option(help="The token's owner (an engineer or admin).")],
    name: Annotated[str, typer.Option(help="What the token is for, e.g. gpu-box-1.")],
    scope: Annotated[
        TokenScope, typer.Option(help="api: the engineer API; worker: only the worker protocol.")
    ] = TokenScope.API,
) -> None:
    """Creates a token and prints it once. Send it as `Authorization: Bearer <token>`."""
    with reported_errors(), database(get_settings()) as factory, transaction(factory) as session:
        owner = service.user_by_username(session, user)
        token, secret = service.create_token(session, user=owner, name=name, scope=scope)
    console.print(
        f"token {token.id} ({token.scope.value}) for [bold]{escape(user)}[/], shown once:"
    )
    typer.echo(secret)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


@tokens_cli.command("list")
def tokens_list(
    user: Annotated[str | None, typer.Option(help="Only this user's tokens.")] = None,
    active: Annotated[bool, typer.Option("--active", help="Leave out revoked tokens.")] = False,
) -> None:
    """Lists everyone's tokens (or one user's), one a line, tab-separated: id, owner, scope,
    prefix, created, last used, state, name."""
    with (
        reported_errors(),
        database(get_settings()) as factory,
        transaction(factory, read_only=True) as session,
    ):
        user_id = service.user_by_username(session, user).id if user else None
        tokens = repository.list_tokens(session, user_id=user_id)
        owners = {u.id: u.username for u in repository.list_users(session)}
    lines = [
        "\t".join(
            [
                str(token.id),
                owners.get(token.user_id, str(token.user_id)),
                token.scope.value,
                token.prefix,
                _when(token.created_at),
                _when(token.last_used_at),
                f"revoked {_when(token.revoked_at)}" if token.revoked_at else "active",
                token.name,
            ]
        )
        for token in tokens
        if not (active and token.revoked_at is not None)
    ]
    typer.echo("\n".join(lines) if lines else "no tokens")


@tokens_cli.command("revoke")
def tokens_revoke(token_id: Annotated[int, typer.Argument(help="The token's id.")]) -> None:
    """Revokes a token (anyone's); it stops working at once. Revoking again changes nothing."""
    with reported_errors(), database(get_settings()) as factory, transaction(factory) as session:
        token = service.revoke_token(session, token_id=token_id, by=None)
        owner = service.user_or_404(session, token.user_id).username
    console.print(f"token {token.id} ({token.scope.value}) of [bold]{escape(owner)}[/] is revoked")
