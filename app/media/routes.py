"""Sample images by id, thumbnails and originals, for signed-in users (annotators too) who may
see the sample's dataset (:mod:`app.datasets.access`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse

from app.auth.deps import optional_principal
from app.datasets import access
from app.db import transaction
from app.errors import NotAuthenticated
from app.media import service
from app.media.service import SampleFile
from app.settings import Settings

router = APIRouter(prefix="/media", tags=["media"])


def sample_file(request: Request, sample_id: int) -> SampleFile:
    """Authenticates the caller and finds the sample, if the caller may see its dataset
    (404 otherwise), in a short read-only transaction of its own: not ``SessionDep``, whose
    session stays open until the route returns, through image decoding."""
    with transaction(request.app.state.session_factory, read_only=True) as session:
        principal = optional_principal(request, session)
        if principal is None:
            raise NotAuthenticated("sign in or send an API token to see images")
        access.check_can_see_sample(session, principal, sample_id)
        return service.find_sample_file(session, sample_id)


SampleFileDep = Annotated[SampleFile, Depends(sample_file)]


@router.get("/samples/{sample_id}/thumb/{size}", response_class=Response)
def sample_thumbnail(
    request: Request,
    size: int,
    file: SampleFileDep,
    v: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """A JPEG whose longest side is ``size`` px (one of the configured thumbnail sizes); kept
    for good by the browser when ``v`` names the file's content (see
    :func:`app.media.service.thumbnail_cache_control`)."""
    settings: Settings = request.app.state.settings
    service.check_thumbnail_size(size, allowed=settings.thumbnail_sizes)
    etag = file.thumbnail_etag(size)
    headers = {"ETag": etag, "Cache-Control": service.thumbnail_cache_control(file, v)}
    if service.etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    data = service.get_thumbnail(file, size=size, cache_dir=settings.thumbnail_dir)
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get("/samples/{sample_id}/original", response_class=Response)
def sample_original(request: Request, file: SampleFileDep) -> Response:
    """The image file as imported, with its own content type."""
    headers = {"ETag": file.original_etag, "Cache-Control": service.ORIGINAL_CACHE_CONTROL}
    if service.etag_matches(request.headers.get("if-none-match"), file.original_etag):
        return Response(status_code=304, headers=headers)
    path = service.original_path(file)
    return FileResponse(path, media_type=file.media_type, headers=headers)
