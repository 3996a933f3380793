"""Accounts API: who am I, users (admins), API tokens (engineers and admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.auth import repository, service
from app.auth.deps import AdminDep, AnnotatorDep, EngineerDep
from app.auth.schemas import (
    PasswordChanged,
    PasswordSet,
    TokenCreate,
    TokenCreated,
    TokenRead,
    UserCreate,
    UserCreated,
    UserRead,
    UserUpdate,
)
from app.db import SessionDep
from app.errors import Invalid
from app.models import User

router = APIRouter(prefix="/api", tags=["accounts"])


def user_or_404(user_id: int, session: SessionDep) -> User:
    return service.user_or_404(session, user_id)


UserDep = Annotated[User, Depends(user_or_404)]


@router.get("/me")
def read_me(principal: AnnotatorDep) -> UserRead:
    return UserRead.model_validate(principal.user)


@router.get("/users")
def list_users(session: SessionDep, _: AdminDep) -> list[UserRead]:
    return [UserRead.model_validate(user) for user in repository.list_users(session)]


@router.post("/users", status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, session: SessionDep, _: AdminDep) -> UserCreated:
    user, generated = service.create_user(
        session, username=body.username, role=body.role, password=body.password
    )
    return UserCreated.model_validate(
        {**UserRead.model_validate(user).model_dump(), "password": generated}
    )


@router.patch("/users/{user_id}", responses={409: {"description": "The last active admin."}})
def update_user(
    principal: AdminDep, body: UserUpdate, user: UserDep, session: SessionDep
) -> UserRead:
    """Changes a user's role and/or deactivates (`is_active: false`) or reactivates them, from
    their next request on. Deactivating, or a role below engineer, revokes all their tokens;
    deactivating also ends their browser sessions. 409 `last_admin` when no active admin would
    be left. Sending what the user already has changes nothing."""
    if body.role is None and body.is_active is None:
        raise Invalid("give role and/or is_active")
    updated = service.update_user(
        session, user=user, by=principal.user, role=body.role, is_active=body.is_active
    )
    return UserRead.model_validate(updated)


@router.post("/users/{user_id}/password")
def set_password(
    principal: AdminDep, body: PasswordSet, user: UserDep, session: SessionDep
) -> PasswordChanged:
    """Sets a new password (generated and returned once when left out), ends the user's browser
    sessions and revokes their tokens as `revoke_tokens` says (all by default)."""
    generated, revoked = service.set_password(
        session,
        user=user,
        password=body.password,
        revoke=body.revoke_tokens.scopes,
        by=principal.user,
    )
    return PasswordChanged(
        user=UserRead.model_validate(user), password=generated, tokens_revoked=revoked
    )


@router.get("/tokens")
def list_tokens(
    session: SessionDep,
    principal: EngineerDep,
    user_id: Annotated[
        int | None, Query(ge=1, description="Admins: this user's tokens instead of yours.")
    ] = None,
    every: Annotated[bool, Query(alias="all", description="Admins: everyone's tokens.")] = False,
) -> list[TokenRead]:
    """Your tokens, revoked ones included; admins may ask for another user's or everyone's."""
    tokens = service.list_tokens(session, by=principal.user, user_id=user_id, every=every)
    return [TokenRead.model_validate(token) for token in tokens]


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, session: SessionDep, principal: EngineerDep) -> TokenCreated:
    token, secret = service.create_token(
        session, user=principal.user, name=body.name, scope=body.scope
    )
    return TokenCreated.model_validate(
        {**TokenRead.model_validate(token).model_dump(), "token": secret}
    )


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: int, session: SessionDep, principal: EngineerDep) -> TokenRead:
    """Revokes one of your tokens; admins may revoke anyone's. Revoking again changes nothing;
    another user's token is a 404 for non-admins."""
    return TokenRead.model_validate(
        service.revoke_token(session, token_id=token_id, by=principal.user)
    )
