"""An engineer opens a dataset's cleaning dashboard in Chromium at 1280×800: the funnel and the
class-size charts are drawn and visible, nothing overflows the window, nothing is blocked."""

from __future__ import annotations

import pytest

from app.db import transaction
from app.models import Dataset
from app.pipeline import service
from tests.browser.conftest import CHROMIUM, CLASS_SIZES, Browser, LiveServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium)",
    ),
]


def test_the_dashboard_draws_its_charts_at_1280_by_800(
    live_server: LiveServer, browser: Browser
) -> None:
    with transaction(live_server.session_factory) as session:
        dataset = session.get_one(Dataset, live_server.dataset_id)
        service.create_pipeline(session, dataset=dataset, config={}, auto=False, user=None)
    page = browser.page
    url = f"{live_server.url}/datasets/{live_server.dataset_id}/cleaning"
    page.goto(url)
    assert "/login" in page.url
    page.fill("input[name=username]", live_server.username)
    page.fill("input[name=password]", live_server.password)
    page.click("button[type=submit]")
    page.wait_for_url(url)

    funnel = page.locator("#cleaning-funnel svg.funnel-bar")
    assert funnel.count() > 0
    assert funnel.first.is_visible()

    charts = page.locator("#cleaning-classes figure svg")
    assert charts.count() == 3  # before, after, as sampled
    for index in range(3):
        chart = charts.nth(index)
        chart.scroll_into_view_if_needed()
        assert chart.is_visible()
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 80
        bars = chart.locator("rect.bar")
        assert bars.count() == len(CLASS_SIZES)
        drawn = bars.evaluate_all("bars => bars.map(b => b.getBoundingClientRect().height)")
        assert all(height > 0 for height in drawn)

    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert browser.problems.all() == []
