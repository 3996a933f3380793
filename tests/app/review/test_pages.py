"""The review pages as HTML: the annotator's home, the three review pages, fragments, stats;
and how the pages lease: never on a GET, only by a POST with the CSRF token, for a short
while that the page renews, and given back by the page's beacon."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import transaction
from app.models import ReviewTask, Role, TaskKind, TaskState, utcnow
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


def next_batch(
    client: TestClient, pets: Pets, kind: TaskKind, csrf: str, n: int, exclude: list[int] = ()
) -> str:
    """What the page's script does first: leases a batch with a POST and the CSRF token."""
    response = client.post(
        f"/review/{pets.dataset_id}/{kind.value}/next",
        data={"n": str(n), "exclude": ",".join(map(str, exclude))},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status_code == 200, response.text
    return response.text


def thumbs(html: str, pets: Pets) -> list[tuple[int, int]]:
    """Every thumbnail the HTML shows, as (sample id, size), checking that each URL names its
    sample's content (so the browser may keep it for good)."""
    found = re.findall(r'src="/media/samples/(\d+)/thumb/(\d+)([^"]*)"', html)
    for sample_id, _, query in found:
        assert query == f"?v={pets.sha256[int(sample_id)][:16]}", (sample_id, query)
    return [(int(sample_id), int(size)) for sample_id, size, _ in found]


def held(app: FastAPI) -> dict[int, int | None]:
    """Every task under a live lease, with its holder."""
    with transaction(app.state.session_factory) as session:
        rows = session.execute(
            select(ReviewTask.id, ReviewTask.lease_owner_id).where(
                ReviewTask.state == TaskState.LEASED, ReviewTask.lease_expires_at > utcnow()
            )
        )
        return {task_id: owner for task_id, owner in rows}


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


@pytest.mark.parametrize("kind", list(TaskKind))
def test_opening_a_review_page_leases_nothing(
    kind: TaskKind, app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    subjects = list(pets.classes.values()) if kind.is_about_a_class else pets.all_samples
    add(app, pets, kind, subjects)
    for _ in range(2):
        response = client.get(f"/review/{pets.dataset_id}/{kind.value}")
        assert response.status_code == 200, response.text
        assert task_ids(response.text) == []
    assert held(app) == {}
    assert f'data-next-url="/review/{pets.dataset_id}/{kind.value}/next"' in response.text
    assert f"<b>{len(subjects)}</b> left" in response.text


def test_grid_page_shows_a_page_of_thumbnails_and_the_keys(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.all_samples)
    page = client.get(f"/review/{pets.dataset_id}/junk_check").text
    assert 'data-mode="grid"' in page
    assert 'data-page-size="48"' in page
    assert 'data-lease-seconds="60"' in page
    assert '<script type="module" src="/static/review.js"></script>' in page
    assert "<dt><kbd>Space</kbd></dt><dd>Mark or unmark junk</dd>" in page
    html = next_batch(client, pets, TaskKind.JUNK_CHECK, annotator, 48)
    assert len(task_ids(html)) == 48
    assert html.count('<li class="tile"') == 48
    newest = sorted(pets.all_samples, reverse=True)[:48]  # equal priorities: newest first
    assert thumbs(html, pets) == [(sample_id, 128) for sample_id in newest]
    assert len(held(app)) == 48


def test_leasing_again_without_exclude_gives_back_the_same_tasks(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.all_samples)
    first = task_ids(next_batch(client, pets, TaskKind.JUNK_CHECK, annotator, 48))
    again = task_ids(next_batch(client, pets, TaskKind.JUNK_CHECK, annotator, 48))
    assert again == first


def test_grid_page_offers_larger_pages_and_refuses_other_sizes(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.all_samples)
    page = client.get(f"/review/{pets.dataset_id}/junk_check?size=96").text
    assert 'data-page-size="96"' in page
    assert f'<a href="/review/{pets.dataset_id}/junk_check?size=48">48</a>' in page
    assert "<b>96</b>" in page
    html = next_batch(client, pets, TaskKind.JUNK_CHECK, annotator, 96)
    assert len(task_ids(html)) == 64
    assert "--columns: 16" in html
    assert client.get(f"/review/{pets.dataset_id}/junk_check?size=50").status_code == 422


def test_next_fragment_leases_tasks_the_page_does_not_hold(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.samples["cat"])
    shown = task_ids(next_batch(client, pets, TaskKind.JUNK_CHECK, annotator, 48))
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


def test_a_cross_site_post_without_the_csrf_token_leases_nothing(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.all_samples)
    # A form or script on another site, had the browser sent the session cookie with it
    # (SameSite=Lax browsers do not on a cross-site POST; the token does not depend on that).
    foreign = {"Origin": "https://elsewhere.example", "Referer": "https://elsewhere.example/"}
    page = client.post(
        f"/review/{pets.dataset_id}/junk_check/next", data={"n": "48"}, headers=foreign
    )
    api = client.post(
        "/api/review/leases",
        json={"kind": "junk_check", "dataset_id": pets.dataset_id, "n": 48},
        headers=foreign,
    )
    wrong = client.post(
        f"/review/{pets.dataset_id}/junk_check/next",
        data={"n": "48", "csrf_token": "not-the-token"},
        headers=foreign,
    )
    assert (page.status_code, api.status_code, wrong.status_code) == (403, 403, 403)
    assert api.json()["error"]["code"] == "csrf_failed"
    assert held(app) == {}


def test_the_page_beacon_gives_leases_back_with_the_token_in_its_form_body(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.all_samples)
    shown = task_ids(next_batch(client, pets, TaskKind.JUNK_CHECK, annotator, 48))
    ids = ",".join(map(str, shown))
    refused = client.post("/review/release", data={"task_ids": ids})
    assert refused.status_code == 403
    assert len(held(app)) == 48
    # navigator.sendBeacon posts a form and cannot set headers: the token rides in the body.
    released = client.post("/review/release", data={"task_ids": ids, "csrf_token": annotator})
    assert released.status_code == 204
    assert held(app) == {}
    again = client.post("/review/release", data={"task_ids": ids, "csrf_token": annotator})
    assert again.status_code == 204
    bad = client.post("/review/release", data={"task_ids": "1,x", "csrf_token": annotator})
    assert bad.status_code == 422


def test_a_released_task_goes_to_the_next_annotator_and_the_heartbeat_says_it_is_lost(
    app: FastAPI,
    client: TestClient,
    annotator: str,
    pets: Pets,
    make_account: MakeAccount,
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.samples["bird"])
    shown = task_ids(next_batch(client, pets, TaskKind.JUNK_CHECK, annotator, 48))
    client.post("/review/release", data={"task_ids": str(shown[0]), "csrf_token": annotator})
    make_account(Role.ANNOTATOR, username="henry", token=False)
    with TestClient(app) as other:
        henry = browser_login(other, "henry")
        taken = task_ids(next_batch(other, pets, TaskKind.JUNK_CHECK, henry, 48))
    assert taken == [shown[0]]
    renewal = client.post(
        "/api/review/leases/renew", json={"task_ids": shown}, headers={"X-CSRF-Token": annotator}
    )
    assert renewal.status_code == 200, renewal.text
    assert renewal.json()["lost"] == [shown[0]]
    assert renewal.json()["renewed"] == sorted(shown[1:])


def test_a_page_lease_is_short_and_the_heartbeat_renews_it(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    app.state.settings.review_browser_lease_seconds = 1
    add(app, pets, TaskKind.JUNK_CHECK, pets.samples["bird"])
    shown = task_ids(next_batch(client, pets, TaskKind.JUNK_CHECK, annotator, 48))
    assert len(held(app)) == len(shown) == 4
    for _ in range(3):
        time.sleep(0.5)
        renewal = client.post(
            "/api/review/leases/renew",
            json={"task_ids": shown},
            headers={"X-CSRF-Token": annotator},
        )
        assert renewal.json()["renewed"] == sorted(shown)
    assert len(held(app)) == 4  # 1.5 s after the lease was taken, 1 s long


def test_an_abandoned_page_lease_lapses_after_the_short_lease(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets, make_account: MakeAccount
) -> None:
    app.state.settings.review_browser_lease_seconds = 1
    add(app, pets, TaskKind.JUNK_CHECK, pets.samples["bird"])
    shown = task_ids(next_batch(client, pets, TaskKind.JUNK_CHECK, annotator, 48))
    assert len(held(app)) == 4
    time.sleep(1.2)  # no heartbeat, no beacon: the tab is gone
    assert held(app) == {}
    make_account(Role.ANNOTATOR, username="henry", token=False)
    with TestClient(app) as other:
        henry = browser_login(other, "henry")
        assert task_ids(next_batch(other, pets, TaskKind.JUNK_CHECK, henry, 48)) == shown


def test_an_api_token_lease_keeps_the_long_lease(
    app: FastAPI, client: TestClient, pets: Pets, make_account: MakeAccount
) -> None:
    add(app, pets, TaskKind.JUNK_CHECK, pets.samples["bird"])
    engineer = make_account(Role.ENGINEER)
    response = client.post(
        "/api/review/leases",
        json={"kind": "junk_check", "dataset_id": pets.dataset_id, "n": 4},
        headers=engineer.headers,
    )
    expires = [task["lease_expires_at"] for task in response.json()["tasks"]]
    with transaction(app.state.session_factory) as session:
        ends = session.scalars(select(ReviewTask.lease_expires_at)).all()
    assert len(expires) == 4
    assert all(600 - 30 < (end - utcnow()).total_seconds() <= 600 for end in ends)


def test_label_page_shows_the_image_given_class_and_suggestions_with_references(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    dog, cat = pets.classes["dog"], pets.classes["cat"]
    subject = pets.samples["cat"][0]
    add(app, pets, TaskKind.LABEL_CHECK, [subject], suggestions=[[(dog, 0.62), (cat, 0.3)]])
    page = client.get(f"/review/{pets.dataset_id}/label_check").text
    assert f'data-classes-url="/api/review/datasets/{pets.dataset_id}/classes"' in page
    assert 'id="class-search-input"' in page
    html = next_batch(client, pets, TaskKind.LABEL_CHECK, annotator, 3)
    assert thumbs(html, pets)[0] == (subject, 512)
    assert 'Given: <strong class="class-name">cat</strong>' in html
    given = html[html.index('class="given"') : html.index('class="suggestions"')]
    assert thumbs(given, pets) == [(sample_id, 96) for sample_id in pets.samples["cat"][1:9]]
    suggested = html[html.index('class="suggestions"') :]
    assert (pets.samples["dog"][0], 96) in thumbs(suggested, pets)
    assert '<kbd>1</kbd> <span class="class-name">dog</span> <span class="prob">62%</span>' in html
    assert 'class="is-given"' in html


def test_class_page_shows_the_class_and_a_grid_of_its_images(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    add(app, pets, TaskKind.CLASS_CHECK, [pets.classes["bird"]])
    page = client.get(f"/review/{pets.dataset_id}/class_check").text
    assert "<dt><kbd>K</kbd></dt><dd>Keep the class</dd>" in page
    html = next_batch(client, pets, TaskKind.CLASS_CHECK, annotator, 3)
    assert '<h2 class="class-name">bird</h2>' in html
    assert "4 images" in html
    assert thumbs(html, pets) == [(sample_id, 128) for sample_id in pets.samples["bird"]]


def test_an_empty_queue_says_so(
    app: FastAPI, client: TestClient, annotator: str, pets: Pets
) -> None:
    assert "This queue is empty" in client.get(f"/review/{pets.dataset_id}/label_check").text
    assert "data-empty" in next_batch(client, pets, TaskKind.LABEL_CHECK, annotator, 3)


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
