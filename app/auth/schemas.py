"""Request and response bodies of the accounts API."""

from __future__ import annotations

import enum
import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.models import Role, TokenScope

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class UserCreate(BaseModel):
    username: str
    role: Role = Role.ANNOTATOR
    password: str | None = Field(
        default=None, description="Leave out to have a password generated and returned once."
    )

    @field_validator("username")
    @classmethod
    def _valid_username(cls, value: str) -> str:
        if not USERNAME_PATTERN.match(value):
            raise ValueError(
                "use 1–64 letters, digits, dots, dashes or underscores, starting with a letter "
                "or digit"
            )
        return value


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    is_active: bool
    created_at: datetime


class UserCreated(UserRead):
    password: str | None = Field(
        default=None, description="The generated password, shown only in this response."
    )


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = Field(default=None, description="The new role; leave out to keep it.")
    is_active: bool | None = Field(
        default=None,
        description=(
            "false deactivates: the user's browser sessions end and all their tokens are revoked "
            "at once. true reactivates: they can sign in again with the same password; revoked "
            "tokens stay revoked."
        ),
    )


class TokensToRevoke(enum.StrEnum):
    ALL = "all"
    API = "api"
    NONE = "none"

    @property
    def scopes(self) -> frozenset[TokenScope]:
        return {
            TokensToRevoke.ALL: frozenset(TokenScope),
            TokensToRevoke.API: frozenset({TokenScope.API}),
            TokensToRevoke.NONE: frozenset(),
        }[self]


class PasswordSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str | None = Field(
        default=None,
        max_length=1024,
        description="Leave out to have a password generated and returned once.",
    )
    revoke_tokens: TokensToRevoke = Field(
        default=TokensToRevoke.ALL,
        description=(
            "Which of the user's tokens the new password revokes: all (API and worker), api "
            "(worker tokens keep running jobs) or none. Browser sessions end in every case."
        ),
    )


class PasswordChanged(BaseModel):
    user: UserRead
    password: str | None = Field(
        default=None, description="The generated password, shown only in this response."
    )
    tokens_revoked: int


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scope: TokenScope = TokenScope.API


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    name: str
    scope: TokenScope
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    token: str = Field(description="The secret, shown only in this response. Send as Bearer.")
