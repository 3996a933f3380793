"""Who may see which dataset: its review queues, classes and images.

- Admins see every dataset.
- Annotators and engineers see the datasets an admin granted them; a grant may cover every
  dataset, present and future. An engineer who registers a dataset through the API is granted
  it.
- A worker token sees the images of the datasets whose jobs it holds now, and nothing else.

What a caller may not see is answered 404, as if it did not exist.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.datasets import grants, repository
from app.errors import Invalid, NotFound
from app.jobs import repository as jobs_repository
from app.models import Dataset, Role, TokenScope


def visible_dataset_ids(session: Session, principal: Principal) -> frozenset[int] | None:
    """The ids of the datasets ``principal`` may see; None when it may see them all."""
    if principal.token_scope is TokenScope.WORKER:
        return frozenset(jobs_repository.datasets_held_by_token(session, principal.token_id))
    if principal.role is Role.ADMIN:
        return None
    granted = grants.granted_dataset_ids(session, principal.user.id)
    return None if None in granted else frozenset(i for i in granted if i is not None)


def can_see(session: Session, principal: Principal, dataset_id: int) -> bool:
    visible = visible_dataset_ids(session, principal)
    return visible is None or dataset_id in visible


def check_can_see(session: Session, principal: Principal, dataset_id: int) -> None:
    """NotFound unless ``principal`` may see the dataset (the same 404 as a missing one)."""
    if not can_see(session, principal, dataset_id):
        _not_found(dataset_id)


def check_can_see_sample(session: Session, principal: Principal, sample_id: int) -> None:
    """NotFound unless the sample exists and ``principal`` may see its dataset."""
    dataset_id = repository.sample_dataset_id(session, sample_id)
    if dataset_id is None or not can_see(session, principal, dataset_id):
        raise NotFound(f"no sample {sample_id}")


def visible_or_named(
    session: Session, principal: Principal, dataset_id: int | None
) -> list[int] | None:
    """The datasets a request that may name one (``dataset_id``) covers: that one, if the
    caller may see it; else those the caller may see, by id; None: every dataset."""
    if dataset_id is not None:
        check_can_see(session, principal, dataset_id)
        return [dataset_id]
    visible = visible_dataset_ids(session, principal)
    return None if visible is None else sorted(visible)


def visible_dataset(session: Session, principal: Principal, dataset_id: int) -> Dataset:
    """The dataset, if ``principal`` may see it; NotFound otherwise."""
    check_can_see(session, principal, dataset_id)
    return repository.get_dataset(session, dataset_id) or _not_found(dataset_id)


def _not_found(dataset_id: int) -> Dataset:
    raise NotFound(f"no dataset {dataset_id}")


def check_scope(session: Session, principal: Principal, dataset_id: int | None) -> None:
    """For a request about one dataset, or (``dataset_id`` None) about all of them: NotFound
    when the caller may not see that one; Invalid when it may not see them all."""
    if dataset_id is not None:
        check_can_see(session, principal, dataset_id)
    elif visible_dataset_ids(session, principal) is not None:
        raise Invalid("name the dataset_id: you may see only some datasets")
