"""Accounts: creating users and tokens, checking credentials, browser sessions."""

from __future__ import annotations

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


def set_password(session: Session, *, user: User, password: str | None = None) -> str | None:
    """Sets (or generates and returns) a new password, ends the user's browser sessions and
    revokes their API tokens: a new password is how a leaked credential is cut off. Worker
    tokens stay: they run jobs and cannot act as the user."""
    generated = None
    if password is None:
        password = generated = security.generate_password()
    if len(password) < security.MIN_PASSWORD_LENGTH:
        raise Invalid(f"password must have at least {security.MIN_PASSWORD_LENGTH} characters")
    user.password_hash = security.hash_password(password)
    repository.delete_web_sessions_of(session, user.id)
    revoked = repository.revoke_api_tokens_of(session, user.id, now=utcnow())
    log.info("auth.password.changed", user=user.username, api_tokens_revoked=revoked)
    return generated


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
    """Creates an API token. Returns the row and the secret, which is never stored."""
    if scope is TokenScope.API and not user.role.includes(Role.ENGINEER):
        raise Forbidden("API tokens are for engineers and admins")
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


def revoke_token(session: Session, *, principal: Principal, token_id: int) -> ApiToken:
    token = repository.get_token(session, token_id)
    if token is None or (
        token.user_id != principal.user.id and not principal.role.includes(Role.ADMIN)
    ):
        raise NotFound(f"no token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
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
