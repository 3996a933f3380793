"""The start page: engineers go to their datasets; annotators see their own home."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.auth.deps import AnnotatorDep
from app.models import Role
from app.web import render

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class HomeView:
    username: str


@router.get("/")
def home(request: Request, principal: AnnotatorDep) -> Response:
    if principal.role.includes(Role.ENGINEER):
        return RedirectResponse("/datasets", status_code=303)
    view = HomeView(username=principal.user.username)
    return render(request, "home.html", principal=principal, view=view)
