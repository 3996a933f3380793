"""The review pages as HTML: the annotator's home, the three review pages, fragments, stats."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.db import transaction
from app.models import Role, TaskKind
from tests.app.review.factories import Pets, make_pets, queue
from tests.conftest import MakeAccount, browser_login


@pytest.fixture
def pets(app: FastAPI, tmp_path: Path) -> Pets:
    with transaction(app.state.session_factory) as session:
        return make_pets(session, tmp_path / "pets", class_sizes={"cat": 30, "dog": 30, "bird": 4})


@pytest.fixture
def annotator(client: TestClient, make_account: MakeAccount) -> str:
    """Signs ``client`` in as the annotator "grace"; returns the CSRF token."""
    make_account(Role.ANNOTATOR, username="grace", token=False)
    return browser_login(client, "grace")


def add(
    app: FastAPI, pets: Pets, kind: TaskKind, subjects: list[int], **options: object
) -> list[int]:
    with transaction(app.state.session_factory) as session:
        return queue(session, pets, kind, subjects, **options)  # type: ignore[arg-type]


def task_ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'data-task-id="(\d+)"', html)]


def test_home_lists_the_queues_with_counts(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.samples["cat"])
    add(app, pets, TaskKind.CLASS_CHECK, [pets.classes["bird"]])
    html = client.get("/").text
    assert "Hello, grace" in html
    assert f'href="/review/{pets.dataset_id}/junk_check"' in html
    assert f'href="/review/{pets.dataset_id}/class_check"' in html
    assert "<b>30</b> to review" in html
    assert 'id="my-progress"' in html
    assert 'href="/datasets"' not in html


def test_home_says_when_there_is_nothing_to_review(client: TestClient, annotator: str) -> None:
    assert "Nothing to review right now" in client.get("/").text


def test_grid_page_shows_a_page_of_thumbnails_and_the_keys(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.all_samples)
    html = client.get(f"/review/{pets.dataset_id}/junk_check").text
    assert len(task_ids(html)) == 48
    assert html.count('<li class="tile"') == 48
    assert '/thumb/128"' in html
    assert 'data-mode="grid"' in html
    assert '<script src="/static/review.js" defer></script>' in html
    assert "<dt><kbd>Space</kbd></dt><dd>Mark or unmark junk</dd>" in html
    assert "<b>16</b> left" in html


def test_reloading_a_review_page_gives_back_the_same_tasks(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.all_samples)
    first = task_ids(client.get(f"/review/{pets.dataset_id}/junk_check").text)
    again = task_ids(client.get(f"/review/{pets.dataset_id}/junk_check").text)
    assert again == first


def test_grid_page_offers_larger_pages_and_refuses_other_sizes(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.all_samples)
    html = client.get(f"/review/{pets.dataset_id}/junk_check?size=96").text
    assert len(task_ids(html)) == 64
    assert "--columns: 16" in html
    assert f'<a href="/review/{pets.dataset_id}/junk_check?size=48">48</a>' in html
    assert "<b>96</b>" in html
    assert client.get(f"/review/{pets.dataset_id}/junk_check?size=50").status_code == 422


def test_next_fragment_leases_tasks_the_page_does_not_hold(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.samples["cat"])
    shown = task_ids(client.get(f"/review/{pets.dataset_id}/junk_check").text)
    assert len(shown) == 30
    add(app, pets, TaskKind.JUNK_CHECK, pets.samples["dog"])
    response = client.post(
        f"/review/{pets.dataset_id}/junk_check/next",
        data={"n": "48", "exclude": ",".join(map(str, shown))},
        headers={"X-CSRF-Token": annotator},
    )
    assert response.status_code == 200
    fresh = task_ids(response.text)
    assert len(fresh) == 30
    assert not set(fresh) & set(shown)
    empty = client.post(
        f"/review/{pets.dataset_id}/junk_check/next",
        data={"n": "48", "exclude": ",".join(map(str, shown + fresh))},
        headers={"X-CSRF-Token": annotator},
    )
    assert "data-empty" in empty.text


def test_next_fragment_needs_the_csrf_token(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    response = client.post(f"/review/{pets.dataset_id}/junk_check/next", data={"n": "1"})
    assert response.status_code == 403


def test_label_page_shows_the_image_given_class_and_suggestions_with_references(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    dog, cat = pets.classes["dog"], pets.classes["cat"]
    subject = pets.samples["cat"][0]
    add(app, pets, TaskKind.LABEL_CHECK, [subject], suggestions=[[(dog, 0.62), (cat, 0.3)]])
    html = client.get(f"/review/{pets.dataset_id}/label_check").text
    assert f'src="/media/samples/{subject}/thumb/512"' in html
    assert 'Given: <strong class="class-name">cat</strong>' in html
    given = html[html.index('class="given"') : html.index('class="suggestions"')]
    assert given.count("/thumb/96") == 8
    assert f"/media/samples/{subject}/thumb/96" not in given
    assert '<kbd>1</kbd> <span class="class-name">dog</span> <span class="prob">62%</span>' in html
    assert 'class="is-given"' in html
    assert f'data-classes-url="/api/review/datasets/{pets.dataset_id}/classes"' in html
    assert 'id="class-search-input"' in html


def test_class_page_shows_the_class_and_a_grid_of_its_images(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.CLASS_CHECK, [pets.classes["bird"]])
    html = client.get(f"/review/{pets.dataset_id}/class_check").text
    assert '<h2 class="class-name">bird</h2>' in html
    assert "4 images" in html
    assert html.count("/thumb/128") == 4
    assert "<dt><kbd>K</kbd></dt><dd>Keep the class</dd>" in html


def test_an_empty_queue_says_so(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    html = client.get(f"/review/{pets.dataset_id}/label_check").text
    assert "data-empty" in html
    assert "This queue is empty" in html


def test_progress_fragment_counts_what_is_left(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.samples["dog"])
    html = client.get(f"/review/{pets.dataset_id}/junk_check/progress").text
    assert "<b>30</b> left" in html
    assert 'hx-trigger="review:decided from:body' in html


def test_stats_page_is_for_engineers(
    app: FastAPI, client: TestClient, make_account: MakeAccount, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.samples["dog"])
    make_account(Role.ANNOTATOR, username="grace", token=False)
    browser_login(client, "grace")
    assert client.get("/review/stats").status_code == 403
    client.cookies.clear()
    make_account(Role.ENGINEER, username="eve", token=False)
    browser_login(client, "eve")
    html = client.get("/review/stats").text
    assert f'<td>pets</td><td><a href="/review/{pets.dataset_id}/junk_check"' in html
    assert 'Junk check</a></td><td class="num">30</td>' in html
    assert "No task has been decided twice yet" in html
