"""Accounts: creating users and tokens, checking credentials, browser sessions, offboarding.

**Who owns a token.** Tokens of both scopes belong to engineers and admins only, and are checked
at every use as well as at creation: a token whose owner is deactivated or no longer an engineer
or admin is refused (401), whatever the token says.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app import security
from app.auth import repository
from app.db import transaction
from app.errors import Conflict, Forbidden, Invalid, NotAuthenticated, NotFound
from app.logging import get_logger
from app.models import ApiToken, Role, TokenScope, User, WebSession, utcnow

log = get_logger(__name__)

#: A token's last use is written at most this often, so reads stay reads.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)
#: The role a token's owner needs, for tokens of either scope.
TOKEN_OWNER_ROLE = Role.ENGINEER
ALL_SCOPES = frozenset(TokenScope)


class LastAdmin(Conflict):
    code = "last_admin"


@dataclass(frozen=True)
class Principal:
    """Who is making a request, and how they proved it."""

    user: User
    via: str  # "session" or "token"
    token_scope: TokenScope | None = None
    csrf_token: str | None = None
    token_id: int | None = None  # the bearer token's id (the lease of a job is bound to it)
    token_last_used_at: datetime | None = None

    @property
    def role(self) -> Role:
        return self.user.role


def create_user(
    session: Session, *, username: str, role: Role, password: str | None = None
) -> tuple[User, str | None]:
    """Creates a user. Returns the user and the generated password when none was given."""
    generated = None
    if password is None:
        password = generated = security.generate_password()
    if len(password) < security.MIN_PASSWORD_LENGTH:
        raise Invalid(f"password must have at least {security.MIN_PASSWORD_LENGTH} characters")
    if repository.get_user_by_username(session, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, role=role, password_hash=security.hash_password(password))
    session.add(user)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict(f"user {username!r} already exists") from exc
    log.info("auth.user.created", username=username, role=role.value)
    return user, generated


def set_password(
    session: Session,
    *,
    user: User,
    password: str | None = None,
    revoke: Collection[TokenScope] = ALL_SCOPES,
    by: User | None = None,
) -> tuple[str | None, int]:
    """Sets (or generates) a new password, ends the user's browser sessions and revokes their
    tokens of the ``revoke`` scopes (all by default: a new password is how a leaked credential is
    cut off, and whoever held the password could have made tokens of either scope).

    Returns the generated password (None when one was given) and how many tokens were revoked.
    ``by`` is the admin setting it (None: the command line).
    """
    generated = None
    if password is None:
        password = generated = security.generate_password()
    if len(password) < security.MIN_PASSWORD_LENGTH:
        raise Invalid(f"password must have at least {security.MIN_PASSWORD_LENGTH} characters")
    user.password_hash = security.hash_password(password)
    repository.delete_web_sessions_of(session, user.id)
    revoked = repository.revoke_tokens_of(session, user.id, scopes=revoke, now=utcnow())
    log.info(
        "auth.password.changed",
        by=_actor(by),
        user=user.username,
        tokens_revoked=revoked,
        scopes_revoked=sorted(scope.value for scope in revoke),
    )
    return generated, revoked


def update_user(
    session: Session,
    *,
    user: User,
    by: User | None,
    role: Role | None = None,
    is_active: bool | None = None,
) -> User:
    """Changes the user's role and/or deactivates or reactivates them (None: leave as is).

    Takes effect from the user's next request, since every request reads the user afresh.
    Deactivating ends their browser sessions and revokes all their tokens; so does a role below
    engineer (annotators own no tokens). Reactivating gives back sign-in with the same password,
    not the tokens. Refuses (409 ``last_admin``) to leave no active admin. ``by`` is the admin
    making the change (None: the command line); each change is logged with both names.
    """
    active_admins = repository.lock_active_admins(session)
    repository.lock_user(session, user)
    new_role = user.role if role is None else role
    new_active = user.is_active if is_active is None else is_active
    if new_role is user.role and new_active == user.is_active:
        return user
    stays_admin = new_active and new_role is Role.ADMIN
    if active_admins == [user.id] and not stays_admin:
        raise LastAdmin(f"{user.username} is the last active admin; make another user admin first")
    actor = _actor(by)
    if new_role is not user.role:
        log.info(
            "auth.user.role_changed",
            by=actor,
            user=user.username,
            previous=user.role.value,
            role=new_role.value,
        )
        user.role = new_role
    if new_active != user.is_active:
        user.is_active = new_active
        log.info(
            "auth.user.deactivated" if not new_active else "auth.user.reactivated",
            by=actor,
            user=user.username,
        )
    if not new_active:
        repository.delete_web_sessions_of(session, user.id)
    if not new_active or not new_role.includes(TOKEN_OWNER_ROLE):
        revoked = repository.revoke_tokens_of(session, user.id, scopes=ALL_SCOPES, now=utcnow())
        if revoked:
            log.info("auth.user.tokens_revoked", by=actor, user=user.username, count=revoked)
    session.flush()
    return user


def _actor(by: User | None) -> str:
    """Who made a change, for the logs."""
    return by.username if by is not None else "command line"


def user_or_404(session: Session, user_id: int) -> User:
    user = repository.get_user(session, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


def user_by_username(session: Session, username: str) -> User:
    user = repository.get_user_by_username(session, username)
    if user is None:
        raise NotFound(f"no user named {username!r}")
    return user


def authenticate(factory: sessionmaker[Session], *, username: str, password: str) -> User:
    """The active user with these credentials. The same error for every failure.

    Takes a session factory, not a session: the user is read in one short read-only
    transaction and the (deliberately slow) password check runs outside any, so a flood of
    wrong passwords holds no database lock. Upgrading an outdated hash is a second, short write.
    """
    with transaction(factory, read_only=True) as session:
        user = repository.get_user_by_username(session, username)
    if user is None:
        # Spend the same time as a real check, so timing does not reveal which names exist.
        security.verify_password(_dummy_hash(), password)
        raise NotAuthenticated("wrong username or password")
    if not security.verify_password(user.password_hash, password) or not user.is_active:
        raise NotAuthenticated("wrong username or password")
    if security.password_needs_rehash(user.password_hash):
        new_hash = security.hash_password(password)
        with transaction(factory) as session:
            repository.set_password_hash(session, user.id, new_hash)
    return user


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return security.hash_password("not a real password")


def create_token(
    session: Session, *, user: User, name: str, scope: TokenScope = TokenScope.API
) -> tuple[ApiToken, str]:
    """Creates a token for an active engineer or admin. Returns the row and the secret, which
    is never stored."""
    if not user.role.includes(TOKEN_OWNER_ROLE):
        raise Forbidden(
            f"{scope.value} tokens are for engineers and admins; {user.username} is an "
            f"{user.role.value}"
        )
    if not user.is_active:
        raise Conflict(f"{user.username} is deactivated; reactivate them first")
    secret = security.new_token(security.API_TOKEN_PREFIX)
    token = ApiToken(
        user_id=user.id,
        name=name,
        scope=scope,
        prefix=secret[: len(security.API_TOKEN_PREFIX) + 6],
        token_hash=security.token_digest(secret),
    )
    session.add(token)
    session.flush()
    log.info("auth.token.created", user=user.username, token_id=token.id, scope=scope.value)
    return token, secret


def list_tokens(
    session: Session, *, by: User, user_id: int | None = None, every: bool = False
) -> Sequence[ApiToken]:
    """``by``'s own tokens; another user's (``user_id``) or everyone's (``every``) for admins.
    Revoked tokens are listed too."""
    if every and user_id is not None:
        raise Invalid("give user_id or all, not both")
    others = every or (user_id is not None and user_id != by.id)
    if others and not by.role.includes(Role.ADMIN):
        raise Forbidden("only admins may list other users' tokens")
    if every:
        return repository.list_tokens(session)
    if user_id is not None:
        user_or_404(session, user_id)
    return repository.list_tokens(session, user_id=by.id if user_id is None else user_id)


def revoke_token(session: Session, *, token_id: int, by: User | None) -> ApiToken:
    """Revokes a token (again: a no-op). Admins and the command line (``by`` None) may revoke
    any token; others only their own, and someone else's is a 404, as if it did not exist."""
    token = repository.get_token(session, token_id)
    if token is None or (
        by is not None and token.user_id != by.id and not by.role.includes(Role.ADMIN)
    ):
        raise NotFound(f"no token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        owner = repository.get_user(session, token.user_id)
        log.info(
            "auth.token.revoked",
            by=_actor(by),
            owner=owner.username if owner is not None else token.user_id,
            token_id=token.id,
            scope=token.scope.value,
        )
    return token


def principal_from_bearer(session: Session, secret: str) -> Principal:
    found = repository.get_token_by_digest(session, security.token_digest(secret))
    if found is None:
        raise NotAuthenticated("unknown API token")
    token, user = found
    if token.revoked_at is not None:
        raise NotAuthenticated("this API token was revoked")
    if not user.is_active:
        raise NotAuthenticated("this API token's user is deactivated")
    if not user.role.includes(TOKEN_OWNER_ROLE):
        raise NotAuthenticated("this API token's owner is no longer an engineer or admin")
    return Principal(
        user=user,
        via="token",
        token_scope=token.scope,
        token_id=token.id,
        token_last_used_at=token.last_used_at,
    )


def token_use_is_stale(principal: Principal) -> bool:
    """Whether the token's last use should be written now (at most once a TOKEN_TOUCH_INTERVAL,
    so that reading with a token stays a read)."""
    if principal.token_id is None:
        return False
    last = principal.token_last_used_at
    return last is None or utcnow() - last > TOKEN_TOUCH_INTERVAL


def record_token_use(session: Session, principal: Principal) -> None:
    if principal.token_id is not None:
        repository.touch_token(session, principal.token_id, now=utcnow())


def start_web_session(session: Session, *, user: User, lifetime: timedelta) -> tuple[str, str]:
    """Starts a browser session. Returns the cookie secret and the session's CSRF token."""
    now = utcnow()
    repository.delete_expired_web_sessions(session, now)
    secret = security.new_token()
    csrf = security.new_token()[:43]
    session.add(
        WebSession(
            user_id=user.id,
            token_hash=security.token_digest(secret),
            csrf_token=csrf,
            expires_at=now + lifetime,
        )
    )
    session.flush()
    log.info("auth.session.started", user=user.username)
    return secret, csrf


def principal_from_session_cookie(session: Session, secret: str) -> Principal | None:
    found = repository.get_web_session_by_digest(session, security.token_digest(secret))
    if found is None:
        return None
    web_session, user = found
    if web_session.expires_at < utcnow() or not user.is_active:
        return None
    return Principal(user=user, via="session", csrf_token=web_session.csrf_token)


def end_web_session(session: Session, secret: str) -> None:
    repository.delete_web_session(session, security.token_digest(secret))
