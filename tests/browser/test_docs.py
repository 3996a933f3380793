"""The API docs render in Chromium from this server's own files, with no CSP violation."""

from __future__ import annotations

from tests.browser.conftest import NEEDS_CHROMIUM, Browser, LiveServer

pytestmark = NEEDS_CHROMIUM


def test_docs_render_the_operations_from_local_files_only(
    live_server: LiveServer, browser: Browser
) -> None:
    page = browser.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(f"{live_server.url}/docs")

    me = page.locator('.opblock-get .opblock-summary-path[data-path="/api/me"]')
    me.wait_for(state="visible")
    assert page.locator(".opblock").count() > 10
    page.wait_for_load_state("networkidle")
    assert browser.problems.all() == []  # CSP violations are console errors
    assert requested
    assert [url for url in requested if not url.startswith(f"{live_server.url}/")] == []
