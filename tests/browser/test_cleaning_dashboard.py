"""An engineer opens a dataset's cleaning dashboard in Chromium at 1280×800: the funnel and the
class-size charts are drawn and visible, nothing overflows the window, nothing is blocked; and
restores a class that two annotators dropped with its button."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from app.auth import service as auth_service
from app.db import transaction
from app.jobs.config import JobSettings
from app.models import ClassState, Dataset, LabelClass, PipelineClass, Role, TaskKind, Verdict
from app.pipeline import service
from app.pipeline.config import PipelineEnv
from app.review.records import DecisionInput, TaskItem
from app.review.service import decisions as decision_service
from app.review.service import leases as lease_service
from app.review.service import tasks as task_service
from tests.browser.conftest import CLASS_SIZES, NEEDS_CHROMIUM, Browser, LiveServer, sign_in_at

pytestmark = NEEDS_CHROMIUM


def test_the_dashboard_draws_its_charts_at_1280_by_800(
    live_server: LiveServer, browser: Browser
) -> None:
    with transaction(live_server.session_factory) as session:
        dataset = session.get_one(Dataset, live_server.dataset_id)
        service.create_pipeline(session, dataset=dataset, config={}, auto=False, user=None)
    page = browser.page
    url = f"{live_server.url}/datasets/{live_server.dataset_id}/cleaning"
    sign_in_at(page, url, live_server.username, live_server.password)

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


def test_an_engineer_restores_a_dropped_class_with_its_button(
    live_server: LiveServer, browser: Browser, tmp_path: Path
) -> None:
    factory = live_server.session_factory
    env = PipelineEnv(data_dir=tmp_path, jobs=JobSettings())
    with transaction(factory) as session:
        dataset = session.get_one(Dataset, live_server.dataset_id)
        service.create_pipeline(session, dataset=dataset, config={}, auto=False, user=None)
        bird = session.scalars(
            select(LabelClass.id).where(
                LabelClass.dataset_id == dataset.id, LabelClass.name == "bird"
            )
        ).one()
        task_service.create_tasks(
            session,
            dataset=dataset,
            kind=TaskKind.CLASS_CHECK,
            items=[TaskItem(class_id=bird)],
            source="manual",
        )
    for name in ("voter1", "voter2"):  # two people must say drop
        with transaction(factory) as session:
            voter, _ = auth_service.create_user(session, username=name, role=Role.ANNOTATOR)
            [task] = lease_service.lease_tasks(session, user=voter, kind=TaskKind.CLASS_CHECK)
            decision_service.decide(
                session,
                user=voter,
                decisions=[
                    DecisionInput(
                        task_id=task.id,
                        lease_version=task.lease_version,
                        verdict=Verdict.DROP,
                        idempotency_key=name,
                    )
                ],
            )
        with transaction(factory) as session:
            dataset = session.get_one(Dataset, live_server.dataset_id)
            service.reconcile_now(session, dataset=dataset, env=env)

    page = browser.page
    url = f"{live_server.url}/datasets/{live_server.dataset_id}/cleaning"
    sign_in_at(page, url, live_server.username, live_server.password)
    row = page.locator(f'#cleaning-dropped tr[data-class-id="{bird}"]')
    assert "voter1, voter2" in row.inner_text()
    row.locator("button", has_text="Restore").click()
    page.wait_for_url(f"{url}#cleaning-dropped")
    assert page.locator("#cleaning-dropped").count() == 0
    with transaction(factory) as session:
        state = session.get_one(PipelineClass, bird)
        assert state.state is ClassState.KEPT and state.restored_at is not None
    assert browser.problems.all() == []
