"""The cleaning dashboard: who may see it, what it shows for a toy pipeline driven through its
stages (every number against what the database holds), the links behind the numbers, and the
live part htmx polls while a round is open."""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import unquote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import (
    TRAINABLE,
    JobMetric,
    PipelineRound,
    Role,
    RoundKind,
    RoundState,
    Sample,
    SampleStatus,
)
from app.pipeline.config import PipelineEnv
from app.web.formatting import rate_text
from tests.app.pipeline.factories import FakeAnnotator, Toy
from tests.app.pipeline.fake_worker import FakeWorker
from tests.app.pipeline.loop import Loop
from tests.conftest import MakeAccount, browser_login


@pytest.fixture
def engineer_client(client: TestClient, make_account: MakeAccount) -> TestClient:
    """The client, signed in as an engineer with the login form (the page's cookie)."""
    browser_login(client, make_account(Role.ENGINEER, token=False).user.username)
    return client


@pytest.fixture
def loop(app: FastAPI, env: PipelineEnv, toy: Toy) -> Loop:
    return Loop(app.state.session_factory, env, toy)


@pytest.fixture
def finished(
    loop: Loop, app: FastAPI, env: PipelineEnv, toy: Toy, annotator: FakeAnnotator
) -> Loop:
    """The toy pipeline through cross-validation, a human sample and final training."""
    worker = FakeWorker(app.state.session_factory, env, toy)
    loop.run_through_final(worker, annotator)
    return loop


def _page(client: TestClient, toy: Toy) -> str:
    response = client.get(f"/datasets/{toy.dataset_id}/cleaning")
    assert response.status_code == 200, response.text
    return response.text


def _funnel(html: str) -> dict[str, tuple[int, str | None]]:
    """Each funnel step's count as shown, and the link around it."""
    steps = re.findall(
        r'data-step="(\w+)">.*?funnel-count num">(?:<a href="([^"]*)"[^>]*>)?([\d,]+)',
        html,
        flags=re.DOTALL,
    )
    return {
        key: (int(count.replace(",", "")), unquote(url.replace("&amp;", "&")) or None)
        for key, url, count in steps
    }


def _section(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    end = html.find("</section>", start)
    return html[start:end]


def _imported(factory: sessionmaker[Session], toy: Toy) -> int:
    with transaction(factory) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Sample).where(Sample.dataset_id == toy.dataset_id)
            )
            or 0
        )


# --- who sees it --------------------------------------------------------------------------------


def test_annotators_are_refused_the_dashboard(
    client: TestClient, toy: Toy, make_account: MakeAccount
) -> None:
    browser_login(client, make_account(Role.ANNOTATOR, token=False).user.username)
    assert client.get(f"/datasets/{toy.dataset_id}/cleaning").status_code == 403
    assert client.get(f"/datasets/{toy.dataset_id}/cleaning/live").status_code == 403


def test_signed_out_visitors_are_sent_to_the_login_page(client: TestClient, toy: Toy) -> None:
    response = client.get(f"/datasets/{toy.dataset_id}/cleaning", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next=/datasets/{toy.dataset_id}/cleaning"


def test_without_a_pipeline_the_page_says_how_to_create_one(
    engineer_client: TestClient, toy: Toy
) -> None:
    html = _page(engineer_client, toy)
    assert "No pipeline yet" in html
    assert "thresher pipeline create toy" in html
    assert f"POST /api/pipelines/{toy.dataset_id}" in html


def test_an_unknown_dataset_is_not_found(engineer_client: TestClient) -> None:
    assert engineer_client.get("/datasets/999999/cleaning").status_code == 404


def test_the_dataset_pages_link_to_the_dashboard(engineer_client: TestClient, toy: Toy) -> None:
    link = f'href="/datasets/{toy.dataset_id}/cleaning"'
    assert link in engineer_client.get(f"/datasets/{toy.dataset_id}").text
    assert link in engineer_client.get("/datasets").text


# --- what it shows ------------------------------------------------------------------------------


def test_a_new_pipeline_shows_its_stage_and_the_next_step(
    engineer_client: TestClient, loop: Loop, toy: Toy
) -> None:
    loop.create(auto=True)
    html = _page(engineer_client, toy)
    status = _section(html, "cleaning-status")
    assert 'aria-current="step">junk<' in status
    assert re.search(r'id="auto-mode">on<', status)
    assert re.search(r'id="open-round">\s*none', status)
    assert "start a junk seed round" in status
    assert "hx-get" not in html  # nothing open: nothing to poll
    funnel = _funnel(html)
    assert funnel["imported"][0] == _imported(loop.factory, toy)
    assert funnel["final"][0] == len(toy.given)
    assert funnel["duplicates"][0] == len(toy.duplicates)
    assert "No rounds yet." in html and "No final training yet." in html


def test_the_funnel_shows_what_the_database_holds_and_links_to_those_samples(
    engineer_client: TestClient, finished: Loop, toy: Toy
) -> None:
    html = _page(engineer_client, toy)
    funnel = _funnel(html)
    statuses = Counter(finished.statuses().values())
    assert statuses[SampleStatus.REJECTED] and statuses[SampleStatus.RELABELLED]
    for status in SampleStatus:
        key = {SampleStatus.DUPLICATE: "duplicates", SampleStatus.CANDIDATE: "candidate"}.get(
            status, status.value
        )
        assert funnel[key][0] == statuses[status], key
    assert funnel["final"][0] == sum(n for s, n in statuses.items() if s in TRAINABLE)
    assert funnel["usable"][0] == sum(statuses.values())
    assert funnel["imported"][0] == _imported(finished.factory, toy)
    # Every linked count lists exactly the samples it counts.
    for key, (count, url) in funnel.items():
        assert url is not None, key
        if key == "imported":
            assert url == f"/api/datasets/{toy.dataset_id}/samples"
            continue
        body = engineer_client.get(url).json()  # the toy fits in one page of 100
        assert len(body["samples"]) == count, key
    assert funnel["kept"][1] == f"/api/pipelines/{toy.dataset_id}/samples?status=kept"


def test_rounds_link_to_their_jobs_and_their_samples(
    engineer_client: TestClient, finished: Loop, toy: Toy
) -> None:
    html = _page(engineer_client, toy)
    rounds = _section(html, "cleaning-rounds")
    cross, human, final = finished.rounds()
    with transaction(finished.factory) as session:
        from app.pipeline import repository

        fold_jobs = [job.id for job, _ in repository.round_jobs(session, cross.id)]
    assert len(fold_jobs) >= 3
    for job_id in fold_jobs:
        assert f'href="/jobs/{job_id}"' in rounds
    row = rounds[rounds.index(f'data-round="{cross.id}"') :]
    row = row[: row.index("</tr>")]
    assert f">{len(fold_jobs)}/{len(fold_jobs)}<" in row
    assert f"rejected <strong>{cross.stats['rejected']}</strong>" in row
    link = f"/api/pipelines/{toy.dataset_id}/samples?event=rejected&amp;round_id={cross.id}"
    assert f'href="{link}"' in row
    listed = engineer_client.get(link.replace("&amp;", "&")).json()["samples"]
    assert len(listed) == cross.stats["rejected"]
    human_row = rounds[rounds.index(f'data-round="{human.id}"') :]
    human_row = human_row[: human_row.index("</tr>")]
    assert f"sampled <strong>{human.stats['sampled']}</strong>" in human_row
    assert re.search(r'class="num">\s*0\s*</td>', human_row)  # no task left waiting
    assert f">{final.source}</a>" in rounds


def test_estimates_show_their_bounds_and_the_sample_behind_them(
    engineer_client: TestClient, finished: Loop, toy: Toy
) -> None:
    html = _page(engineer_client, toy)
    estimates = _section(html, "cleaning-estimates")
    human = next(r for r in finished.rounds() if r.kind is RoundKind.HUMAN_SAMPLE)
    for key, title in (
        ("estimate", "Good samples left among the rejected"),
        ("usable", "Usable samples left among the rejected"),
    ):
        stats = human.stats[key]
        row = estimates[estimates.index(title) :]
        row = row[: row.index("</tr>")]
        assert f"<strong>{rate_text(stats['rate'])}</strong>" in row
        assert f"{rate_text(stats['high'])} <span" in row  # the upper bound
        assert rate_text(stats["low"]) in row
        assert f"{stats['successes']} of {stats['trials']}" in row
        assert human.source in row


def test_the_final_model_shows_its_metrics_and_what_it_was_validated_on(
    engineer_client: TestClient, finished: Loop, toy: Toy
) -> None:
    html = _page(engineer_client, toy)
    final = _section(html, "cleaning-final")
    shown = dict(
        re.findall(r'data-metric="([^"]+)"><dt>[^<]*</dt><dd>([^<]*)</dd>', final, re.DOTALL)
    )
    # The fake worker's evaluation: top-1 0.8, top-5 1.0, balanced 0.75, no many-shot class.
    assert shown == {
        "Top-1": "80.0%",
        "Top-5": "100.0%",
        "Balanced accuracy": "75.0%",
        "Many-shot": "–",
        "Medium-shot": "–",
        "Few-shot": "75.0%",
    }
    round_ = next(r for r in finished.rounds() if r.kind is RoundKind.FINAL_TRAINING)
    assert round_.stats["eval_source"] == "held_out"
    assert f"Validated on {round_.stats['eval']} samples: a random held-out split" in final
    assert f'href="/jobs/{round_.stats["job_id"]}"' in final


def test_class_sizes_are_drawn_before_after_and_as_sampled(
    engineer_client: TestClient, finished: Loop, toy: Toy
) -> None:
    html = _page(engineer_client, toy)
    classes = _section(html, "cleaning-classes")
    for key in ("before", "after", "sampled"):
        chart = classes[classes.index(f'id="classes-{key}"') :]
        chart = chart[: chart.index("</figure>")]
        assert chart.count('<rect class="bar"') == len(toy.classes), key
        assert "per class (log scale)" in chart
    before = classes[classes.index('id="classes-before"') :]
    given = Counter(toy.given.values())
    name, class_id = max(toy.classes.items(), key=lambda item: (given[item[1]], item[0]))
    assert f"<title>{name}: {given[class_id]} images</title>" in before


def test_training_curves_are_drawn_from_the_jobs_metrics(
    engineer_client: TestClient, finished: Loop, toy: Toy
) -> None:
    final = next(r for r in finished.rounds() if r.kind is RoundKind.FINAL_TRAINING)
    job_id = final.stats["job_id"]
    with transaction(finished.factory) as session:
        for epoch, (loss, accuracy) in enumerate([(2.0, 0.3), (1.2, 0.5), (0.7, 0.7)], 1):
            session.add(
                JobMetric(
                    job_id=job_id,
                    fence=1,
                    epoch=epoch,
                    values={"train_loss": loss, "val_accuracy": accuracy},
                )
            )
    html = _page(engineer_client, toy)
    training = _section(html, "cleaning-training")
    run = training[training.index(f'href="/jobs/{job_id}"') :]
    run = run[: run.index("</article>")]
    assert run.count("<polyline") == 2  # loss and accuracy
    assert "train_loss <strong>0.7</strong>" in run
    assert "val_accuracy <strong>70%</strong>" in run


# --- the live part ------------------------------------------------------------------------------


def test_the_live_part_is_polled_while_a_round_is_open_then_reloads_the_page(
    engineer_client: TestClient, loop: Loop, toy: Toy, annotator: FakeAnnotator
) -> None:
    loop.create(seed_random_samples=5)
    seed = loop.start(RoundKind.JUNK_SEED)
    live_url = f"/datasets/{toy.dataset_id}/cleaning/live"
    html = _page(engineer_client, toy)
    assert f'hx-get="{live_url}" hx-trigger="every 5s"' in html
    assert f">{seed.source}</a>" in _section(html, "cleaning-status")

    response = engineer_client.get(live_url, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "HX-Refresh" not in response.headers
    assert response.text.lstrip().startswith('<div id="cleaning-live"')
    assert "<html" not in response.text
    waiting = re.search(r'data-round="\d+">.*?class="num">([\d,]+)</td>', response.text, re.DOTALL)
    assert waiting is not None and int(waiting.group(1)) == len(toy.non_rgb) + 5

    annotator.review_all()
    loop.reconcile()
    assert loop.round(seed.id).state is RoundState.DONE
    response = engineer_client.get(live_url, headers={"HX-Request": "true"})
    assert response.headers["HX-Refresh"] == "true"
    assert "hx-get" not in response.text
    assert _funnel(response.text)["junk"][0] == len(toy.non_rgb & toy.junk)


def test_the_page_counts_the_rounds_the_database_holds(
    engineer_client: TestClient, finished: Loop, toy: Toy
) -> None:
    html = _page(engineer_client, toy)
    with transaction(finished.factory) as session:
        count = session.scalar(
            select(func.count())
            .select_from(PipelineRound)
            .where(PipelineRound.dataset_id == toy.dataset_id)
        )
    assert len(re.findall(r'<tr data-round="\d+">', _section(html, "cleaning-rounds"))) == count
