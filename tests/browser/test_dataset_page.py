"""An engineer signs in with the real login form and reads a dataset page in Chromium."""

from __future__ import annotations

from app.db import transaction
from app.models import Dataset, ImportFormat, ImportRun, ImportStatus, utcnow
from tests.browser.conftest import (
    BAD_FILES,
    CLASS_SIZES,
    NEEDS_CHROMIUM,
    Browser,
    LiveServer,
    sign_in_at,
)

pytestmark = NEEDS_CHROMIUM


def open_dataset_page(browser: Browser, server: LiveServer, dataset_id: int | None = None) -> None:
    """Opens a dataset page, which sends us through the login form and back."""
    url = f"{server.url}/datasets/{dataset_id or server.dataset_id}"
    sign_in_at(browser.page, url, server.username, server.password)


def test_dataset_page_shows_class_chart_modes_and_import_report(
    live_server: LiveServer, browser: Browser
) -> None:
    page = browser.page
    open_dataset_page(browser, live_server)

    bars = page.locator("#class-sizes svg rect.bar")
    assert bars.count() == len(CLASS_SIZES)
    titles = [bars.nth(i).locator("title").text_content() for i in range(bars.count())]
    assert titles == ["cat: 6 images", "dog: 4 images", "bird: 1 image"]
    heights = [float(bars.nth(i).get_attribute("height") or 0) for i in range(bars.count())]
    assert heights == sorted(heights, reverse=True)
    assert heights[-1] > 0
    drawn = page.eval_on_selector_all(
        "#class-sizes svg rect.bar", "bars => bars.map(b => b.getBoundingClientRect().height)"
    )
    assert all(height > 0 for height in drawn)

    modes = page.locator("#modes tbody tr")
    assert [modes.nth(i).locator("td").first.inner_text() for i in range(modes.count())] == [
        "RGB",
        "L not RGB",
    ]

    report = page.locator("#import-report")
    assert "succeeded" in report.locator("header").inner_text()
    for path, reason in BAD_FILES.items():
        row = report.locator("#import-issues tr", has_text=path)
        assert reason in row.inner_text()

    thumbnail = page.locator(".conflict img").first
    thumbnail.scroll_into_view_if_needed()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle()
    )
    assert thumbnail.evaluate("img => img.naturalWidth") == 96

    assert browser.problems.all() == []


def test_reason_filter_swaps_the_file_list_through_htmx_with_the_csrf_header(
    live_server: LiveServer, browser: Browser
) -> None:
    page = browser.page
    open_dataset_page(browser, live_server)
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")

    with page.expect_request(lambda request: "/issues" in request.url) as sent:
        page.click("#import-report .reasons a:has-text('Not an image')")
    assert sent.value.headers.get("hx-request") == "true"
    assert sent.value.headers.get("x-csrf-token") == csrf
    page.wait_for_selector("#import-issues a:has-text('show all')")

    rows = page.locator("#import-issues tbody tr")
    assert rows.count() == 1
    assert "dog/notes.jpg" in rows.first.inner_text()
    assert browser.problems.all() == []


def test_question_mark_toggles_the_keyboard_help(live_server: LiveServer, browser: Browser) -> None:
    page = browser.page
    open_dataset_page(browser, live_server)
    help_overlay = page.locator("#keys-help")
    assert help_overlay.is_hidden()

    page.keyboard.press("?")
    assert help_overlay.is_visible()
    assert "Show or hide this list" in help_overlay.inner_text()
    page.keyboard.press("Escape")
    assert help_overlay.is_hidden()
    assert browser.problems.all() == []


def test_report_of_a_running_import_follows_it_until_it_ends(
    live_server: LiveServer, browser: Browser
) -> None:
    with transaction(live_server.session_factory) as session:
        dataset = Dataset(
            name="growing", root="/nowhere", source="/nowhere", source_format=ImportFormat.CSV
        )
        session.add(dataset)
        session.flush()
        run = ImportRun(dataset_id=dataset.id, status=ImportStatus.RUNNING, total=10, processed=3)
        session.add(run)
        session.flush()
        dataset_id, run_id = dataset.id, run.id
    page = browser.page
    open_dataset_page(browser, live_server, dataset_id)
    assert "3 of 10" in page.inner_text("#import-report")

    with transaction(live_server.session_factory) as session:
        running = session.get(ImportRun, run_id)
        assert running is not None
        running.processed = 7
    page.wait_for_selector("#import-report:has-text('7 of 10')")

    # The import ends (committed first); the next poll's answer reloads the whole page.
    with page.expect_navigation(), transaction(live_server.session_factory) as session:
        running = session.get(ImportRun, run_id)
        assert running is not None
        running.processed = 10
        running.status = ImportStatus.SUCCEEDED
        running.finished_at = utcnow()
    page.wait_for_selector("#import-report .badge.ok")
    assert page.locator("#import-report[hx-trigger]").count() == 0
    assert browser.problems.all() == []
