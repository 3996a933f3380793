"""Browser tests: a real server on 127.0.0.1 and the system Chromium, driven by Playwright.

The server is uvicorn in a thread, on a free port, over a migrated SQLite database that holds
an engineer and a small dataset imported by the real importer. Playwright's sync API runs its
own event loop on this thread; it is started and stopped within each test (``page``), so no
test ever runs with that loop around.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.datasets import service as dataset_service
from app.db import transaction
from app.main import create_app
from app.models import Role
from app.settings import Settings
from tests.conftest import TEST_PASSWORD, TEST_SECRET, add_user

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Page, Request, Response

CHROMIUM = Path("/usr/bin/chromium")
NO_CHROMIUM = f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
#: ``pytestmark`` of a browser test module: marked, and skipped where there is no Chromium.
NEEDS_CHROMIUM = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM),
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ENGINEER = "ada"
#: The test dataset's usable images per class, largest first: a long tail down to one image.
CLASS_SIZES = {"cat": 6, "dog": 4, "bird": 1}
#: Files the import must report, with the reason shown on the page.
BAD_FILES = {"cat/broken.jpg": "Empty file (0 bytes)", "dog/notes.jpg": "Not an image"}


@dataclass(frozen=True)
class LiveServer:
    url: str
    username: str
    password: str
    dataset_id: int
    session_factory: sessionmaker[Session]


def build_image_folder(root: Path) -> None:
    """An ImageFolder with ``CLASS_SIZES`` usable images (one grayscale, and one copy of a cat
    under "dog": a label conflict), plus the ``BAD_FILES``."""
    for name in CLASS_SIZES:
        (root / name).mkdir(parents=True)
    for index in range(CLASS_SIZES["cat"]):
        Image.new("RGB", (48 + 8 * index, 40), (200, 30 * index, 60)).save(
            root / f"cat/{index}.jpg"
        )
    Image.new("RGB", (40, 60), (20, 160, 90)).save(root / "dog/0.jpg")
    Image.new("RGB", (60, 40), (20, 90, 160)).save(root / "dog/1.jpg")
    Image.new("L", (36, 36), 90).save(root / "dog/gray.png")
    shutil.copyfile(root / "cat/0.jpg", root / "dog/looks_like_a_cat.jpg")
    Image.new("RGB", (50, 50), (240, 200, 0)).save(root / "bird/0.jpg")
    (root / "cat/broken.jpg").write_bytes(b"")
    (root / "dog/notes.jpg").write_text("not a picture")


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("live")
    database = tmp / "thresher.db"
    shutil.copyfile(sqlite_template, database)
    images = tmp / "images"
    build_image_folder(images)
    settings = Settings(
        data_dir=tmp / "data",
        database_url=f"sqlite:///{database}",
        secret_key=TEST_SECRET,
        import_processes=1,
    )
    app = create_app(settings)
    with transaction(app.state.session_factory) as session:
        add_user(session, username=ENGINEER, role=Role.ENGINEER)
        started = dataset_service.start_import(session, name="pets", path=str(images))
    dataset_service.run_started_import(app.state.session_factory, started, settings=settings)

    with serve_in_thread(app) as url:
        yield LiveServer(
            url=url,
            username=ENGINEER,
            password=TEST_PASSWORD,
            dataset_id=started.dataset.id,
            session_factory=app.state.session_factory,
        )


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Serves ``app`` with uvicorn in a thread on a free port of 127.0.0.1; yields its URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", loop="asyncio", http="h11", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


@dataclass
class PageProblems:
    """What went wrong in the page: console errors (CSP violations among them), uncaught
    exceptions, failed requests and HTTP error responses."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    error_responses: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def on_page_error(self, error: Exception) -> None:
        self.page_errors.append(str(error))

    def on_request_failed(self, request: Request) -> None:
        self.failed_requests.append(f"{request.method} {request.url}: {request.failure}")

    def on_response(self, response: Response) -> None:
        if response.status >= 400:
            self.error_responses.append(f"{response.status} {response.url}")

    def all(self) -> list[str]:
        return self.console_errors + self.page_errors + self.failed_requests + self.error_responses


@dataclass
class Browser:
    page: Page
    problems: PageProblems


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A fresh Chromium page (1280×800) whose problems are recorded."""
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = chromium.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.set_default_timeout(15_000)
            problems = PageProblems()
            page.on("console", problems.on_console)
            page.on("pageerror", problems.on_page_error)
            page.on("requestfailed", problems.on_request_failed)
            page.on("response", problems.on_response)
            yield Browser(page=page, problems=problems)
            context.close()
        finally:
            chromium.close()


def sign_in_at(page: Page, url: str, username: str, password: str = TEST_PASSWORD) -> None:
    """Opens ``url``, which sends us to the login form; signs in there and waits to be back."""
    page.goto(url)
    assert "/login" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(url)
