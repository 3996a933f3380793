"""404 dependencies: routes receive the dataset or import named in the path, or the client a 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.datasets import service
from app.db import SessionDep
from app.models import Dataset, ImportRun


def dataset_or_404(dataset_id: int, session: SessionDep) -> Dataset:
    return service.get_dataset(session, dataset_id)


def import_or_404(import_id: int, session: SessionDep) -> ImportRun:
    return service.get_import(session, import_id)


DatasetDep = Annotated[Dataset, Depends(dataset_or_404)]
ImportDep = Annotated[ImportRun, Depends(import_or_404)]
