"""404 dependencies: routes receive the dataset or import named in the path, or the client a 404
(also when the caller may not see the dataset: :mod:`app.datasets.access`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.auth.deps import CurrentPrincipal
from app.datasets import access, service
from app.db import SessionDep
from app.errors import NotFound
from app.models import Dataset, ImportRun


def dataset_or_404(dataset_id: int, session: SessionDep, principal: CurrentPrincipal) -> Dataset:
    return access.visible_dataset(session, principal, dataset_id)


def import_or_404(import_id: int, session: SessionDep, principal: CurrentPrincipal) -> ImportRun:
    run = service.get_import(session, import_id)
    if not access.can_see(session, principal, run.dataset_id):
        raise NotFound(f"no import {import_id}")
    return run


DatasetDep = Annotated[Dataset, Depends(dataset_or_404)]
ImportDep = Annotated[ImportRun, Depends(import_or_404)]
