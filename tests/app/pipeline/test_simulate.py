"""Simulated annotators over the HTTP API: they sign in, lease, and answer from the truth with
the error rate asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.db import transaction
from app.models import Role, SampleStatus, TaskKind
from app.pipeline.simulate import Simulator, WaitLog
from app.pipeline.truth import load_truth
from app.review.service import leases as lease_service
from tests.app.pipeline.factories import Toy
from tests.app.review.factories import make_user
from tests.conftest import Account, MakeAccount


def _truth_file(toy: Toy, path: Path) -> Path:
    names = {cid: name for name, cid in toy.classes.items()}
    lines = ["path,clean,junk"]
    for sample_id, true in sorted(toy.true.items()):
        label = names[true] if true else ""
        lines.append(f"{toy.paths[sample_id]},{label},{1 if true is None else 0}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _simulator(
    app: FastAPI, admin: Account, toy: Toy, tmp_path: Path, **options: object
) -> Simulator:
    """Simulated annotators working with the admin's token, answering from the toy's truth."""
    truth = _truth_file(toy, tmp_path / "truth.csv")
    assert admin.token
    return Simulator(
        client_factory=lambda: TestClient(app),
        token=admin.token,
        dataset="toy",
        truth=load_truth(truth, column="clean"),
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("error_rate", [0.0, 1.0])
def test_simulated_annotators_answer_the_junk_queue_from_the_truth(
    error_rate: float,
    client: TestClient,
    app: FastAPI,
    toy: Toy,
    make_account: MakeAccount,
    tmp_path: Path,
) -> None:
    admin = make_account(Role.ADMIN)
    base = f"/api/pipelines/{toy.dataset_id}"
    client.post(base, json={"config": {"seed_random_samples": 0}}, headers=admin.headers)
    client.post(f"{base}/steps", json={"kind": "junk_seed"}, headers=admin.headers)
    simulator = _simulator(app, admin, toy, tmp_path, annotators=2, error_rate=error_rate)
    stats = simulator.run()
    simulator.close()
    assert stats.total == len(toy.non_rgb) and stats.unmatched == 0
    assert stats.wrong == (len(toy.non_rgb) if error_rate else 0)
    client.post(f"{base}/reconcile", headers=admin.headers)
    statuses = client.get(base, headers=admin.headers).json()["funnel"]["statuses"]
    junk = len(toy.non_rgb & toy.junk)
    expected = junk if error_rate == 0 else len(toy.non_rgb) - junk
    assert statuses.get(SampleStatus.JUNK.value, 0) == expected


def test_simulated_annotators_relabel_to_the_true_class(
    client: TestClient, app: FastAPI, toy: Toy, make_account: MakeAccount, tmp_path: Path
) -> None:
    admin = make_account(Role.ADMIN)
    noisy = sorted(toy.noisy)[:3]
    client.post(
        "/api/review/tasks",
        json={
            "dataset_id": toy.dataset_id,
            "kind": "label_check",
            "items": [{"sample_id": sid} for sid in noisy],
        },
        headers=admin.headers,
    )
    simulator = _simulator(app, admin, toy, tmp_path)
    stats = simulator.run()
    simulator.close()
    assert stats.decisions == {"relabel": 3}
    for sample_id in noisy:
        history = client.get(f"/api/review/samples/{sample_id}", headers=admin.headers).json()
        assert history["current"]["class_id"] == toy.true[sample_id]


@pytest.mark.parametrize(("class_error_rate", "verdict"), [(None, "drop"), (0.0, "keep")])
def test_class_decisions_have_their_own_error_rate(
    class_error_rate: float | None,
    verdict: str,
    client: TestClient,  # runs the app's lifespan, which closes its database connections
    app: FastAPI,
    toy: Toy,
    make_account: MakeAccount,
    tmp_path: Path,
) -> None:
    admin = make_account(Role.ADMIN)
    simulator = _simulator(
        app, admin, toy, tmp_path, error_rate=1.0, class_error_rate=class_error_rate
    )
    real_class = next(iter(toy.classes.values()))
    try:
        answer = simulator.answer({"kind": "class_check", "class_id": real_class})
    finally:
        simulator.close()
    assert answer == {"verdict": verdict}


def test_a_lone_simulated_annotator_brings_a_second_voter_for_a_class_drop(
    client: TestClient, app: FastAPI, toy: Toy, make_account: MakeAccount, tmp_path: Path
) -> None:
    admin = make_account(Role.ADMIN)
    base = f"/api/pipelines/{toy.dataset_id}"
    client.post(base, json={"config": {"min_class_size": 1000}}, headers=admin.headers)
    client.patch(base, json={"stage": "class"}, headers=admin.headers)
    started = client.post(f"{base}/steps", json={"kind": "class_review"}, headers=admin.headers)
    assert started.status_code == 201, started.text
    simulator = _simulator(
        app,
        admin,
        toy,
        tmp_path,
        annotators=1,
        class_error_rate=1.0,  # every class looks wrong: drop them all
    )
    try:
        assert simulator.run().decisions == {"drop": len(toy.classes)}
        client.post(f"{base}/reconcile", headers=admin.headers)  # asks for second votes
        assert simulator.run().decisions == {"drop": 2 * len(toy.classes)}
        assert len(simulator.people) == 2
    finally:
        simulator.close()
    client.post(f"{base}/reconcile", headers=admin.headers)
    classes = client.get(f"{base}/classes", headers=admin.headers).json()
    assert {item["state"] for item in classes} == {"dropped"}
    assert client.get(base, headers=admin.headers).json()["open_round"] is None


def test_following_the_pipeline_says_what_it_waits_for(
    client: TestClient, app: FastAPI, toy: Toy, make_account: MakeAccount, tmp_path: Path
) -> None:
    admin = make_account(Role.ADMIN)
    base = f"/api/pipelines/{toy.dataset_id}"
    client.post(base, json={"config": {"seed_random_samples": 0}}, headers=admin.headers)
    client.post(f"{base}/steps", json={"kind": "junk_seed"}, headers=admin.headers)
    with transaction(app.state.session_factory) as session:
        alice = make_user(session, "alice")
        held = lease_service.lease_tasks(session, user=alice, kind=TaskKind.JUNK_CHECK, n=200)
    simulator = _simulator(app, admin, toy, tmp_path)
    said: list[str] = []
    try:
        stats = simulator.run(follow=True, timeout=0.5, poll=0.1, on_wait=WaitLog(said.append))
    finally:
        simulator.close()
    assert stats.total == 0
    until = held[0].lease_expires_at.strftime("%H:%M:%S")
    assert said == [
        f"waiting: {len(held)} junk_check tasks leased by alice until {until} UTC (junk seed 1)"
    ]
