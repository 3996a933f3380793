"""Dataset grants: an admin lets an annotator or engineer see a dataset, or every dataset
(who sees what: :mod:`app.datasets.access`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from app.datasets import repository
from app.errors import Invalid, NotFound
from app.logging import get_logger
from app.models import Dataset, DatasetGrant, Role, User

log = get_logger(__name__)


def granted_dataset_ids(session: Session, user_id: int) -> set[int | None]:
    """The datasets granted to the user; None among them: every dataset."""
    return repository.granted_dataset_ids(session, user_id)


def list_grants(
    session: Session, *, user_id: int | None = None, dataset_id: int | None = None
) -> Sequence[DatasetGrant]:
    return repository.list_grants(session, user_id=user_id, dataset_id=dataset_id)


def grant(
    session: Session, *, user: User, dataset: Dataset | None, by: User | None
) -> tuple[DatasetGrant, bool]:
    """Grants ``user`` the dataset (every dataset when None). Returns the grant and whether it
    is new; granting again is a no-op."""
    if user.role is Role.ADMIN:
        raise Invalid(f"{user.username} is an admin and sees every dataset already")
    dataset_id = dataset.id if dataset is not None else None
    existing = repository.find_grant(session, user_id=user.id, dataset_id=dataset_id)
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
    row = repository.get_grant(session, grant_id)
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
