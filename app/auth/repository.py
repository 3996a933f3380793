"""Every query on users, tokens and browser sessions."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.models import ApiToken, Role, TokenScope, User, WebSession


def get_user(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def get_user_by_username(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).one_or_none()


def list_users(session: Session) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.username)).all()


def lock_active_admins(session: Session) -> list[int]:
    """The ids of the active admins, their rows locked until the transaction ends (PostgreSQL;
    SQLite's writers hold the database lock already), so two admins demoting each other at
    once cannot both see the other one left."""
    return list(
        session.scalars(
            select(User.id)
            .where(User.role == Role.ADMIN, User.is_active.is_(True))
            .order_by(User.id)
            .with_for_update()
        ).all()
    )


def lock_user(session: Session, user: User) -> None:
    """Re-reads ``user`` and locks its row until the transaction ends."""
    session.refresh(user, with_for_update=True)


def get_token_by_digest(session: Session, digest: str) -> tuple[ApiToken, User] | None:
    row = session.execute(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == digest)
    ).one_or_none()
    return (row[0], row[1]) if row else None


def list_tokens(session: Session, user_id: int | None = None) -> Sequence[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return session.scalars(query).all()


def get_token(session: Session, token_id: int) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def set_password_hash(session: Session, user_id: int, password_hash: str) -> None:
    session.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))


def touch_token(session: Session, token_id: int, *, now: datetime) -> None:
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))


def get_web_session_by_digest(session: Session, digest: str) -> tuple[WebSession, User] | None:
    row = session.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.token_hash == digest)
    ).one_or_none()
    return (row[0], row[1]) if row else None


def delete_web_session(session: Session, digest: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == digest))


def delete_expired_web_sessions(session: Session, now: datetime) -> None:
    session.execute(delete(WebSession).where(WebSession.expires_at < now))


def delete_web_sessions_of(session: Session, user_id: int) -> None:
    session.execute(delete(WebSession).where(WebSession.user_id == user_id))


def revoke_tokens_of(
    session: Session, user_id: int, *, scopes: Collection[TokenScope], now: datetime
) -> int:
    """Revokes the user's live tokens of these scopes; returns how many."""
    if not scopes:
        return 0
    result = session.execute(
        update(ApiToken)
        .where(
            ApiToken.user_id == user_id,
            ApiToken.scope.in_(list(scopes)),
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session="fetch")
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def revoke_tokens_named(session: Session, *, user_id: int, name: str, now: datetime) -> int:
    """Revokes the user's live tokens named ``name``; returns how many."""
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.name == name, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def revoke_tokens(session: Session, token_ids: Sequence[int], *, now: datetime) -> None:
    session.execute(
        update(ApiToken)
        .where(ApiToken.id.in_(token_ids), ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def count_active_tokens_named(session: Session, name: str) -> int:
    query = select(func.count()).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    return int(session.scalar(query) or 0)
