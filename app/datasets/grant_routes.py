"""Dataset grants API (admins): who may see which datasets (see :mod:`app.datasets.access`)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.auth import service as auth_service
from app.auth.deps import AdminDep
from app.datasets import grants, service
from app.datasets.schemas import GrantCreate, GrantRead
from app.db import SessionDep

router = APIRouter(prefix="/api/grants", tags=["dataset access"])


@router.get("")
def list_grants(
    session: SessionDep,
    _: AdminDep,
    user_id: int | None = None,
    dataset_id: int | None = None,
) -> list[GrantRead]:
    rows = grants.list_grants(session, user_id=user_id, dataset_id=dataset_id)
    return [GrantRead.model_validate(row) for row in rows]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_grant(
    body: GrantCreate, session: SessionDep, principal: AdminDep, response: Response
) -> GrantRead:
    """Lets the user see the dataset (every dataset without ``dataset_id``); 200 when the
    grant exists already."""
    user = auth_service.user_by_username(session, body.username)
    dataset = service.get_dataset(session, body.dataset_id) if body.dataset_id else None
    row, created = grants.grant(session, user=user, dataset=dataset, by=principal.user)
    if not created:
        response.status_code = status.HTTP_200_OK
    return GrantRead.model_validate(row)


@router.delete("/{grant_id}")
def revoke_grant(grant_id: int, session: SessionDep, principal: AdminDep) -> GrantRead:
    return GrantRead.model_validate(grants.revoke(session, grant_id=grant_id, by=principal.user))
