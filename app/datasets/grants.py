"""Dataset grants: an admin lets an annotator or engineer see a dataset, or every dataset
(who sees what: :mod:`app.datasets.access`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Invalid, NotFound
from app.logging import get_logger
from app.models import Dataset, DatasetGrant, Role, User

log = get_logger(__name__)


def granted_dataset_ids(session: Session, user_id: int) -> set[int | None]:
    """The datasets granted to the user; None among them: every dataset."""
    query = select(DatasetGrant.dataset_id).where(DatasetGrant.user_id == user_id)
    return set(session.scalars(query))


def list_grants(
    session: Session, *, user_id: int | None = None, dataset_id: int | None = None
) -> Sequence[DatasetGrant]:
    query = select(DatasetGrant).order_by(DatasetGrant.id)
    if user_id is not None:
        query = query.where(DatasetGrant.user_id == user_id)
    if dataset_id is not None:
        query = query.where(DatasetGrant.dataset_id == dataset_id)
    return session.scalars(query).all()


def grant(
    session: Session, *, user: User, dataset: Dataset | None, by: User | None
) -> tuple[DatasetGrant, bool]:
    """Grants ``user`` the dataset (every dataset when None). Returns the grant and whether it
    is new; granting again is a no-op."""
    if user.role is Role.ADMIN:
        raise Invalid(f"{user.username} is an admin and sees every dataset already")
    dataset_id = dataset.id if dataset is not None else None
    query = select(DatasetGrant).where(
        DatasetGrant.user_id == user.id,
        DatasetGrant.dataset_id.is_(None)
        if dataset_id is None
        else DatasetGrant.dataset_id == dataset_id,
    )
    existing = session.scalars(query).first()
    if existing is not None:
        return existing, False
    row = DatasetGrant(
        user_id=user.id, dataset_id=dataset_id, granted_by_id=by.id if by is not None else None
    )
    session.add(row)
    session.flush()
    log.info(
        "datasets.grant.added",
        user=user.username,
        dataset_id=dataset_id if dataset_id is not None else "all",
        by=by.username if by is not None else None,
    )
    return row, True


def revoke(session: Session, *, grant_id: int, by: User | None) -> DatasetGrant:
    row = session.get(DatasetGrant, grant_id)
    if row is None:
        raise NotFound(f"no grant {grant_id}")
    session.delete(row)
    session.flush()
    log.info(
        "datasets.grant.revoked",
        user_id=row.user_id,
        dataset_id=row.dataset_id if row.dataset_id is not None else "all",
        by=by.username if by is not None else None,
    )
    return row
