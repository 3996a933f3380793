"""Accounts API: who am I, users (admins), API tokens (engineers and admins)."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.auth import repository, service
from app.auth.deps import AdminDep, AnnotatorDep, EngineerDep
from app.auth.schemas import TokenCreate, TokenCreated, TokenRead, UserCreate, UserCreated, UserRead
from app.db import SessionDep

router = APIRouter(prefix="/api", tags=["accounts"])


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


@router.get("/tokens")
def list_tokens(session: SessionDep, principal: EngineerDep) -> list[TokenRead]:
    tokens = repository.list_tokens(session, user_id=principal.user.id)
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
    return TokenRead.model_validate(
        service.revoke_token(session, principal=principal, token_id=token_id)
    )
