"""The dataset pages and the start page: what each role sees, and the htmx fragments."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.datasets import service as dataset_service
from app.db import transaction
from app.models import (
    Dataset,
    ImportFormat,
    ImportIssue,
    ImportRun,
    ImportStatus,
    IssueReason,
    LabelClass,
    Role,
    Sample,
    utcnow,
)
from app.settings import Settings
from tests.conftest import MakeAccount, browser_login


@dataclass(frozen=True)
class Stored:
    dataset_id: int
    import_id: int


def store_dataset(
    app: FastAPI,
    *,
    name: str = "birds",
    class_sizes: dict[str, int] | None = None,
    issues: int = 2,
    status: ImportStatus = ImportStatus.SUCCEEDED,
) -> Stored:
    """A dataset as an import leaves it, written with the ORM: RGB samples per class (the
    first one grayscale), ``issues`` empty files, and one image stored under two classes."""
    class_sizes = class_sizes or {"sparrow": 12, "owl": 3, "kiwi": 1}
    with transaction(app.state.session_factory) as session:
        dataset = Dataset(
            name=name,
            root="/data/birds",
            source="/data/birds",
            source_format=ImportFormat.IMAGEFOLDER,
        )
        session.add(dataset)
        session.flush()
        labels = {}
        for class_name, size in class_sizes.items():
            labels[class_name] = LabelClass(
                dataset_id=dataset.id, name=class_name, sample_count=size
            )
            session.add(labels[class_name])
        session.flush()
        number = 0
        for class_name, size in class_sizes.items():
            for _ in range(size):
                number += 1
                session.add(
                    Sample(
                        dataset_id=dataset.id,
                        class_id=labels[class_name].id,
                        path=f"{class_name}/{number}.jpg",
                        sha256=f"{number:064x}",
                        byte_size=1000,
                        mode="L" if number == 1 else "RGB",
                        channels=1 if number == 1 else 3,
                        image_format="JPEG",
                    )
                )
        first_two = list(class_sizes)[:2]
        session.add(
            Sample(
                dataset_id=dataset.id,
                class_id=labels[first_two[1]].id,
                path=f"{first_two[1]}/copy.jpg",
                sha256=f"{1:064x}",
                byte_size=1000,
                mode="L",
                channels=1,
                image_format="JPEG",
            )
        )
        run = ImportRun(
            dataset_id=dataset.id,
            status=status,
            total=number + issues + 1,
            processed=number + 1 if status is ImportStatus.RUNNING else number + issues + 1,
            added=number + 1,
            issues=issues,
            finished_at=None if status is ImportStatus.RUNNING else utcnow(),
        )
        session.add(run)
        session.flush()
        for index in range(issues):
            session.add(
                ImportIssue(
                    import_id=run.id,
                    path=f"sparrow/bad{index:03d}.jpg",
                    reason=IssueReason.EMPTY_FILE if index % 2 == 0 else IssueReason.NOT_AN_IMAGE,
                    detail="the file is empty" if index % 2 == 0 else "not an image",
                )
            )
        return Stored(dataset_id=dataset.id, import_id=run.id)


@pytest.fixture
def engineer_client(client: TestClient, make_account: MakeAccount) -> TestClient:
    engineer = make_account(Role.ENGINEER, token=False)
    browser_login(client, engineer.user.username)
    return client


def bar_titles(html: str) -> list[str]:
    return re.findall(r'<rect class="bar"[^>]*><title>([^<]*)</title>', html)


# --- who may see what -------------------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_login(app: FastAPI, client: TestClient) -> None:
    stored = store_dataset(app)
    response = client.get(f"/datasets/{stored.dataset_id}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next=/datasets/{stored.dataset_id}"


def test_annotator_gets_a_403_page_on_dataset_pages(
    app: FastAPI, client: TestClient, make_account: MakeAccount
) -> None:
    stored = store_dataset(app)
    annotator = make_account(Role.ANNOTATOR, token=False)
    browser_login(client, annotator.user.username)
    for url in ("/datasets", f"/datasets/{stored.dataset_id}"):
        response = client.get(url)
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("text/html")
        assert "engineer" in response.text


def test_home_sends_engineers_to_the_datasets(engineer_client: TestClient) -> None:
    response = engineer_client.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/datasets"


def test_home_greets_an_annotator_by_name(client: TestClient, make_account: MakeAccount) -> None:
    annotator = make_account(Role.ANNOTATOR, username="grace", token=False)
    browser_login(client, annotator.user.username)
    response = client.get("/")
    assert response.status_code == 200
    assert "Hello, grace" in response.text
    assert 'href="/datasets"' not in response.text


# --- the list ---------------------------------------------------------------------------------


def test_dataset_list_shows_each_dataset_with_counts_and_last_import(
    app: FastAPI, engineer_client: TestClient
) -> None:
    birds = store_dataset(app, name="birds")
    store_dataset(app, name="trees", class_sizes={"oak": 2, "elm": 1}, status=ImportStatus.RUNNING)
    html = engineer_client.get("/datasets").text
    assert f'<a href="/datasets/{birds.dataset_id}">birds</a>' in html
    birds_row = html[html.index(">birds<") : html.index(">trees<")]
    assert '<td class="num">17</td>' in birds_row  # 16 + the copy, all usable
    assert '<td class="num">3</td>' in birds_row
    assert "succeeded" in birds_row
    assert "running" in html[html.index(">trees<") :]


def test_empty_dataset_list_says_how_to_import(engineer_client: TestClient) -> None:
    assert "thresher import NAME PATH" in engineer_client.get("/datasets").text


# --- the dataset page -------------------------------------------------------------------------


def test_dataset_page_draws_a_bar_per_class_largest_first(
    app: FastAPI, engineer_client: TestClient
) -> None:
    stored = store_dataset(app)
    html = engineer_client.get(f"/datasets/{stored.dataset_id}").text
    assert bar_titles(html) == ["sparrow: 12 images", "owl: 3 images", "kiwi: 1 image"]
    assert [label for label in re.findall(r'class="tick"[^>]*>([^<]+)<', html)] == [
        "1",
        "10",
        "100",
    ]


def test_dataset_page_shows_headline_counts_and_modes(
    app: FastAPI, engineer_client: TestClient
) -> None:
    stored = store_dataset(app)
    html = engineer_client.get(f"/datasets/{stored.dataset_id}").text
    stats = dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", html))
    assert stats["Usable samples"] == "17"
    assert stats["Classes"] == "3"
    assert stats["Label conflicts"] == "1"
    modes = html[html.index('id="modes"') : html.index('id="import-report"')]
    assert re.search(r"<td>RGB</td>\s*<td class=\"num\">3</td>\s*<td class=\"num\">15</td>", modes)
    assert "not RGB" in modes


def test_dataset_page_shows_the_import_report_with_files_and_conflicts(
    app: FastAPI, engineer_client: TestClient
) -> None:
    stored = store_dataset(app, issues=3)
    html = engineer_client.get(f"/datasets/{stored.dataset_id}").text
    report = html[html.index('id="import-report"') :]
    assert "succeeded" in report
    assert "Empty file (0 bytes)" in report and "Not an image" in report
    assert "sparrow/bad000.jpg" in report and "sparrow/bad002.jpg" in report
    assert "/media/samples/1/thumb/96?v=" in report  # the conflicting image
    assert "sparrow/1.jpg" in report and "owl/copy.jpg" in report
    assert "hx-trigger" not in report


def test_dataset_page_of_a_real_import(
    engineer_client: TestClient, app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "pictures"
    for name, size in {"boat": 3, "car": 1}.items():
        (root / name).mkdir(parents=True)
        for index in range(size):
            Image.new("RGB", (32 + index, 24), (index * 60, 80, 160)).save(
                root / name / f"{index}.jpg"
            )
    (root / "car" / "zero.jpg").write_bytes(b"")
    with transaction(app.state.session_factory) as session:
        started = dataset_service.start_import(session, name="vehicles", path=str(root))
    dataset_service.run_started_import(app.state.session_factory, started, settings=settings)

    html = engineer_client.get(f"/datasets/{started.dataset.id}").text
    assert bar_titles(html) == ["boat: 3 images", "car: 1 image"]
    assert "car/zero.jpg" in html
    assert "Empty file (0 bytes)" in html


def test_dataset_never_imported_says_so(app: FastAPI, engineer_client: TestClient) -> None:
    with transaction(app.state.session_factory) as session:
        dataset = Dataset(
            name="new", root="/x", source="/x", source_format=ImportFormat.IMAGEFOLDER
        )
        session.add(dataset)
        session.flush()
        dataset_id = dataset.id
    html = engineer_client.get(f"/datasets/{dataset_id}").text
    assert "Never imported." in html
    assert "No classes yet." in html


def test_unknown_dataset_gets_a_404_page(engineer_client: TestClient) -> None:
    response = engineer_client.get("/datasets/424242")
    assert response.status_code == 404
    assert "no dataset 424242" in response.text


# --- the import report while it runs ----------------------------------------------------------


def test_running_import_report_polls_every_second(
    app: FastAPI, engineer_client: TestClient
) -> None:
    stored = store_dataset(app, status=ImportStatus.RUNNING)
    html = engineer_client.get(f"/datasets/{stored.dataset_id}").text
    poll = f'hx-get="/datasets/{stored.dataset_id}/imports/{stored.import_id}/report"'
    assert poll in html
    assert 'hx-trigger="every 1s"' in html
    assert "<progress" in html

    fragment = engineer_client.get(
        f"/datasets/{stored.dataset_id}/imports/{stored.import_id}/report"
    )
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<section class="panel" id="import-report"')
    assert 'hx-trigger="every 1s"' in fragment.text
    assert "HX-Refresh" not in fragment.headers


def test_report_fragment_of_a_finished_import_reloads_the_page(
    app: FastAPI, engineer_client: TestClient
) -> None:
    stored = store_dataset(app)
    fragment = engineer_client.get(
        f"/datasets/{stored.dataset_id}/imports/{stored.import_id}/report"
    )
    assert fragment.headers["HX-Refresh"] == "true"
    assert "hx-trigger" not in fragment.text


def test_import_of_another_dataset_gets_404(app: FastAPI, engineer_client: TestClient) -> None:
    first = store_dataset(app, name="first")
    second = store_dataset(app, name="second")
    response = engineer_client.get(
        f"/datasets/{first.dataset_id}/imports/{second.import_id}/report"
    )
    assert response.status_code == 404


# --- the problem-file list --------------------------------------------------------------------


def test_issue_list_filters_by_reason(app: FastAPI, engineer_client: TestClient) -> None:
    stored = store_dataset(app, issues=6)
    response = engineer_client.get(
        f"/datasets/{stored.dataset_id}/imports/{stored.import_id}/issues?reason=not_an_image"
    )
    assert response.status_code == 200
    html = response.text
    assert html.lstrip().startswith('<div id="import-issues">')
    assert re.findall(r"sparrow/bad\d+\.jpg", html) == [
        "sparrow/bad001.jpg",
        "sparrow/bad003.jpg",
        "sparrow/bad005.jpg",
    ]
    assert "show all" in html


def test_dataset_page_can_open_filtered_by_reason(
    app: FastAPI, engineer_client: TestClient
) -> None:
    stored = store_dataset(app, issues=4)
    html = engineer_client.get(f"/datasets/{stored.dataset_id}?reason=empty_file").text
    listed = html[html.index('id="import-issues"') :]
    assert re.findall(r"sparrow/bad\d+\.jpg", listed) == [
        "sparrow/bad000.jpg",
        "sparrow/bad002.jpg",
    ]


def test_show_more_returns_the_next_rows_and_another_button(
    app: FastAPI, engineer_client: TestClient
) -> None:
    stored = store_dataset(app, issues=230)
    base = f"/datasets/{stored.dataset_id}/imports/{stored.import_id}/issues"
    page = engineer_client.get(f"/datasets/{stored.dataset_id}").text
    assert page.count('<td class="path">') == 100
    assert f'hx-get="{base}?offset=100"' in page

    more = engineer_client.get(f"{base}?offset=100").text
    assert more.lstrip().startswith("<tr>")
    assert more.count('<td class="path">') == 100
    assert "sparrow/bad100.jpg" in more
    assert f'hx-get="{base}?offset=200"' in more
    assert "Show 30 more (30 left)" in more

    last = engineer_client.get(f"{base}?offset=200").text
    assert last.count('<td class="path">') == 30
    assert "hx-get" not in last


def test_unknown_reason_gets_422(app: FastAPI, engineer_client: TestClient) -> None:
    stored = store_dataset(app)
    response = engineer_client.get(
        f"/datasets/{stored.dataset_id}/imports/{stored.import_id}/issues?reason=bogus"
    )
    assert response.status_code == 422
