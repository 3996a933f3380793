"""An annotator reviews in Chromium with the keyboard: the grid, label and class pages.

Each test signs in a new annotator through the real login form, works a queue of its own, and
then reads the database: it must hold exactly the decisions the keys made.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.auth import service as auth_service
from app.db import transaction
from app.main import create_app
from app.models import ReviewDecision, Role, TaskKind, Verdict
from app.settings import Settings
from tests.app.review.factories import Pets, make_pets, queue
from tests.browser.conftest import Browser, serve_in_thread
from tests.conftest import TEST_PASSWORD, TEST_SECRET

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


@dataclass(frozen=True)
class ReviewServer:
    url: str
    root: Path
    factory: sessionmaker[Session]
    names: Iterator[int]


@pytest.fixture(scope="module")
def review_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[ReviewServer]:
    """The app under uvicorn in a thread, on a free port, over a migrated SQLite database."""
    tmp = tmp_path_factory.mktemp("review-live")
    database = tmp / "thresher.db"
    shutil.copyfile(sqlite_template, database)
    settings = Settings(
        data_dir=tmp / "data", database_url=f"sqlite:///{database}", secret_key=TEST_SECRET
    )
    app = create_app(settings)
    with serve_in_thread(app) as url:
        yield ReviewServer(
            url=url,
            root=tmp / "images",
            factory=app.state.session_factory,
            names=count(1),
        )


@dataclass(frozen=True)
class Setup:
    pets: Pets
    username: str
    task_ids: list[int]


def prepare(
    server: ReviewServer,
    kind: TaskKind,
    *,
    class_sizes: dict[str, int],
    subjects: str = "all",
    with_suggestions: bool = False,
) -> Setup:
    """A new dataset (real image files), an annotator, and a queue of ``kind`` over it. Tasks
    get falling priorities, so they come in the order of ``task_ids``."""
    number = next(server.names)
    with transaction(server.factory) as session:
        pets = make_pets(
            session, server.root / f"set{number}", name=f"set{number}", class_sizes=class_sizes
        )
        username = f"annotator{number}"
        auth_service.create_user(
            session, username=username, role=Role.ANNOTATOR, password=TEST_PASSWORD
        )
        ids = list(pets.classes.values()) if kind is TaskKind.CLASS_CHECK else pets.all_samples
        suggestions = None
        if with_suggestions:
            ranked = [pets.classes["dog"], pets.classes["bird"], pets.classes["cat"]]
            suggestions = [[(c, p) for c, p in zip(ranked, (0.6, 0.3, 0.1), strict=True)]] * len(
                ids
            )
        task_ids = queue(
            session,
            pets,
            kind,
            ids,
            priorities=[float(len(ids) - i) for i in range(len(ids))],
            suggestions=suggestions,
        )
    return Setup(pets=pets, username=username, task_ids=task_ids)


def sign_in(page: Page, server: ReviewServer, setup: Setup, kind: TaskKind) -> None:
    target = f"/review/{setup.pets.dataset_id}/{kind.value}"
    page.goto(f"{server.url}{target}")
    assert "/login" in page.url
    page.fill("input[name=username]", setup.username)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}{target}")


def decisions(server: ReviewServer, username: str) -> list[ReviewDecision]:
    with transaction(server.factory) as session:
        user = auth_service.user_by_username(session, username)
        return list(
            session.scalars(
                select(ReviewDecision)
                .where(ReviewDecision.user_id == user.id)
                .order_by(ReviewDecision.id)
            )
        )


def press_and_wait(page: Page, key: str, url_part: str = "/api/review/decisions") -> None:
    """Presses ``key`` and waits for the request it sends to be answered."""
    with page.expect_response(lambda response: url_part in response.url) as answered:
        page.keyboard.press(key)
    assert answered.value.ok, answered.value.text()


def showing(page: Page, task_id: int) -> None:
    page.wait_for_selector(f'#stage .item[data-task-id="{task_id}"]')


def wait_for_images(page: Page, selector: str) -> None:
    """Waits until every image under ``selector`` has loaded (fails if one cannot)."""
    page.wait_for_function(
        "selector => { const imgs = [...document.querySelectorAll(selector)];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        arg=selector,
    )


def test_grid_review_marks_junk_with_the_keyboard_and_submits_page_after_page(
    review_server: ReviewServer, browser: Browser
) -> None:
    setup = prepare(review_server, TaskKind.JUNK_CHECK, class_sizes={"cat": 30, "dog": 30})
    page = browser.page
    sign_in(page, review_server, setup, TaskKind.JUNK_CHECK)
    tiles = page.locator("#stage .tile")
    assert tiles.count() == 48
    page.wait_for_function("() => document.querySelectorAll('#prefetch .tile').length === 12")

    page.keyboard.press("?")
    assert "Submit the page" in page.locator("#keys-help").inner_text()
    page.keyboard.press("Escape")

    page.keyboard.press("Space")  # tile 0
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Space")  # tile 2
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Space")  # tile 2 + one row
    columns = page.eval_on_selector(
        "#stage .tiles", "el => getComputedStyle(el).gridTemplateColumns.split(' ').length"
    )
    tiles.nth(20).click()
    tiles.nth(22).click(modifiers=["Shift"])  # 20..22
    marked = [0, 2, 2 + columns, 20, 21, 22]
    assert page.locator("#stage .tile.junk").count() == len(marked)
    first_page = setup.task_ids[:48]
    assert [int(tiles.nth(i).get_attribute("data-task-id") or 0) for i in range(48)] == first_page
    box = page.locator("[data-submit]").bounding_box()
    assert box is not None and box["y"] + box["height"] <= 800

    press_and_wait(page, "Enter")
    page.wait_for_function("() => document.querySelectorAll('#stage .tile').length === 12")
    wait_for_images(page, "#stage .tile img")
    page.keyboard.press("Space")
    press_and_wait(page, "Enter")
    page.wait_for_selector("#queue-empty:not([hidden])")

    recorded = decisions(review_server, setup.username)
    assert len(recorded) == 60
    junk = {d.task_id for d in recorded if d.verdict is Verdict.JUNK}
    assert junk == {first_page[i] for i in marked} | {setup.task_ids[48]}
    assert {d.task_id for d in recorded} == set(setup.task_ids)
    assert all(d.seconds > 0 for d in recorded)
    assert browser.problems.all() == []


def test_label_review_with_keys_search_and_undo(
    review_server: ReviewServer, browser: Browser
) -> None:
    setup = prepare(
        review_server,
        TaskKind.LABEL_CHECK,
        class_sizes={"cat": 6, "dog": 5, "bird": 4, "bird of paradise": 3},
        with_suggestions=True,
    )
    pets, tasks = setup.pets, setup.task_ids
    page = browser.page
    sign_in(page, review_server, setup, TaskKind.LABEL_CHECK)
    showing(page, tasks[0])
    wait_for_images(page, "#stage .item .given img")
    subject = page.locator("#stage .subject").bounding_box()
    assert subject is not None and subject["y"] + subject["height"] <= 800

    press_and_wait(page, "a")  # tasks[0]: accept
    showing(page, tasks[1])
    press_and_wait(page, "1")  # tasks[1]: suggestion 1, dog
    showing(page, tasks[2])
    press_and_wait(page, "2")  # tasks[2]: suggestion 2, bird
    showing(page, tasks[3])
    press_and_wait(page, "j")  # tasks[3]: junk
    showing(page, tasks[4])
    press_and_wait(page, "u")  # tasks[4]: unsure
    showing(page, tasks[5])
    page.keyboard.press("/")
    page.wait_for_selector("#class-search:not([hidden])")
    page.keyboard.type("paradi")
    page.wait_for_selector("#class-search-results li.selected:has-text('bird of paradise')")
    press_and_wait(page, "Enter")  # tasks[5]: relabel, bird of paradise
    showing(page, tasks[6])
    press_and_wait(page, "Backspace", "/api/review/undo")  # withdraws tasks[5]'s decision
    showing(page, tasks[5])
    press_and_wait(page, "a")  # tasks[5] again: accept
    showing(page, tasks[6])
    assert browser.problems.all() == []

    recorded = decisions(review_server, setup.username)
    dog, bird, paradise = (pets.classes[n] for n in ("dog", "bird", "bird of paradise"))
    cat = pets.classes["cat"]
    undone = recorded[5].id
    assert [(d.task_id, d.verdict, d.class_id, d.supersedes_id) for d in recorded] == [
        (tasks[0], Verdict.ACCEPT, pets.class_of(pets.all_samples[0]), None),
        (tasks[1], Verdict.RELABEL, dog, None),
        (tasks[2], Verdict.RELABEL, bird, None),
        (tasks[3], Verdict.JUNK, None, None),
        (tasks[4], Verdict.UNSURE, None, None),
        (tasks[5], Verdict.RELABEL, paradise, None),
        (tasks[5], Verdict.UNDO, paradise, undone),
        (tasks[5], Verdict.ACCEPT, cat, None),
    ]
    assert all(d.seconds > 0 for d in recorded if d.verdict is not Verdict.UNDO)


def test_class_review_keeps_and_drops_with_k_and_d(
    review_server: ReviewServer, browser: Browser
) -> None:
    setup = prepare(
        review_server, TaskKind.CLASS_CHECK, class_sizes={"cat": 3, "dog": 2, "bird": 1}
    )
    page = browser.page
    sign_in(page, review_server, setup, TaskKind.CLASS_CHECK)
    showing(page, setup.task_ids[0])
    assert page.locator("#stage .class-name").inner_text() == "cat"
    assert page.locator("#stage .tile img").count() == 3
    press_and_wait(page, "k")
    showing(page, setup.task_ids[1])
    press_and_wait(page, "d")
    showing(page, setup.task_ids[2])
    press_and_wait(page, "k")
    page.wait_for_selector("#queue-empty:not([hidden])")
    recorded = decisions(review_server, setup.username)
    assert [(d.task_id, d.verdict) for d in recorded] == [
        (setup.task_ids[0], Verdict.KEEP),
        (setup.task_ids[1], Verdict.DROP),
        (setup.task_ids[2], Verdict.KEEP),
    ]
    assert browser.problems.all() == []
