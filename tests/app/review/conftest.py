"""Fixtures of the review tests: a small dataset and three users, committed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import Role, User
from tests.app.review.factories import Pets, make_pets, make_user


@dataclass(frozen=True)
class People:
    ann: User
    bob: User
    eve: User  # an engineer


@pytest.fixture
def pets(session_factory: sessionmaker[Session], tmp_path: Path) -> Pets:
    with transaction(session_factory) as session:
        return make_pets(session, tmp_path / "pets", files=False)


@pytest.fixture
def people(session_factory: sessionmaker[Session]) -> People:
    with transaction(session_factory) as session:
        return People(
            ann=make_user(session, "ann"),
            bob=make_user(session, "bob"),
            eve=make_user(session, "eve", Role.ENGINEER),
        )
