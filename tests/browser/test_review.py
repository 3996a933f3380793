"""An annotator reviews in Chromium with the keyboard: the grid, label and class pages.

Each test signs in a new annotator through the real login form, works a queue of its own, and
then reads the database: it must hold exactly the decisions the keys made. The page's leases
are followed in the database too: taken by the page's script, renewed while it is visible,
given back by its beacon when it is hidden, left or closed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
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
from app.models import ReviewDecision, ReviewTask, Role, TaskKind, TaskState, Verdict, utcnow
from app.settings import Settings
from tests.app.review.factories import Pets, make_pets, queue
from tests.browser.conftest import Browser, serve_in_thread, sign_in_at
from tests.conftest import TEST_SECRET, add_user

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


@dataclass(frozen=True)
class ReviewServer:
    url: str
    root: Path
    factory: sessionmaker[Session]
    names: Iterator[int]
    settings: Settings


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
            settings=settings,
        )


@pytest.fixture
def short_lease(review_server: ReviewServer) -> Iterator[int]:
    """Page leases of two seconds (the server reads the setting on each request)."""
    before = review_server.settings.review_browser_lease_seconds
    review_server.settings.review_browser_lease_seconds = 2
    yield 2
    review_server.settings.review_browser_lease_seconds = before


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
        add_user(session, username=username, role=Role.ANNOTATOR)
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
    sign_in_at(page, f"{server.url}/review/{setup.pets.dataset_id}/{kind.value}", setup.username)


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


def live_leases(server: ReviewServer, username: str) -> dict[int, int]:
    """The user's tasks under a live lease, with their lease versions."""
    with transaction(server.factory) as session:
        user = auth_service.user_by_username(session, username)
        rows = session.execute(
            select(ReviewTask.id, ReviewTask.lease_version).where(
                ReviewTask.lease_owner_id == user.id,
                ReviewTask.state == TaskState.LEASED,
                ReviewTask.lease_expires_at > utcnow(),
            )
        )
        return {task_id: version for task_id, version in rows}


def eventually(check: Callable[[], bool], *, within: float = 5.0) -> None:
    """Polls ``check`` until it holds, for ``within`` seconds at most."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the server never got there"
        time.sleep(0.1)


def set_visibility(page: Page, state: str) -> None:
    """Hides or shows the page as switching tabs would, for its script."""
    page.evaluate(
        "state => { Object.defineProperty(document, 'visibilityState',"
        " { value: state, configurable: true });"
        " document.dispatchEvent(new Event('visibilitychange')); }",
        state,
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
    page.wait_for_function("() => document.querySelectorAll('#stage .tile').length === 48")
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


def test_the_page_leases_by_post_and_gives_the_leases_back_when_left_or_closed(
    review_server: ReviewServer, browser: Browser
) -> None:
    setup = prepare(review_server, TaskKind.JUNK_CHECK, class_sizes={"cat": 30, "dog": 30})
    page = browser.page
    leases: list[str] = []
    page.on("request", lambda r: leases.append(f"{r.method} {r.url}") if "/next" in r.url else None)
    sign_in(page, review_server, setup, TaskKind.JUNK_CHECK)
    page.wait_for_function("() => document.querySelectorAll('#prefetch .tile').length === 12")
    assert set(live_leases(review_server, setup.username)) == set(setup.task_ids)
    assert leases and all(entry.startswith("POST ") for entry in leases)

    page.goto(f"{review_server.url}/review")  # moving on: the beacon gives all 60 back
    eventually(lambda: live_leases(review_server, setup.username) == {})

    page.goto(f"{review_server.url}/review/{setup.pets.dataset_id}/junk_check")
    page.wait_for_function("() => document.querySelectorAll('#prefetch .tile').length === 12")
    assert len(live_leases(review_server, setup.username)) == 60
    page.close()
    eventually(lambda: live_leases(review_server, setup.username) == {})
    problems = browser.problems  # leaving a page aborts its image loads: not a problem
    assert problems.console_errors + problems.page_errors + problems.error_responses == []


def test_a_hidden_page_gives_its_leases_back_and_takes_them_again_when_shown(
    review_server: ReviewServer, browser: Browser
) -> None:
    setup = prepare(review_server, TaskKind.LABEL_CHECK, class_sizes={"cat": 3, "dog": 3})
    page = browser.page
    sign_in(page, review_server, setup, TaskKind.LABEL_CHECK)
    showing(page, setup.task_ids[0])
    eventually(lambda: len(live_leases(review_server, setup.username)) == 3)
    set_visibility(page, "hidden")
    eventually(lambda: live_leases(review_server, setup.username) == {})
    set_visibility(page, "visible")  # nobody took them: the heartbeat takes them back
    eventually(lambda: len(live_leases(review_server, setup.username)) == 3)
    press_and_wait(page, "a")
    showing(page, setup.task_ids[1])
    assert browser.problems.all() == []


def test_a_visible_page_keeps_its_leases_past_the_lease_length(
    review_server: ReviewServer, browser: Browser, short_lease: int
) -> None:
    setup = prepare(review_server, TaskKind.CLASS_CHECK, class_sizes={"cat": 3, "dog": 2})
    page = browser.page
    sign_in(page, review_server, setup, TaskKind.CLASS_CHECK)
    showing(page, setup.task_ids[0])
    first = live_leases(review_server, setup.username)
    assert set(first) == set(setup.task_ids)
    time.sleep(short_lease * 2.5)
    assert page.evaluate("document.visibilityState") == "visible"
    assert live_leases(review_server, setup.username) == first  # renewed, same versions
    press_and_wait(page, "k")
    showing(page, setup.task_ids[1])
    assert browser.problems.all() == []
