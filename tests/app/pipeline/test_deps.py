"""The pipeline routes' 404 dependency (:data:`app.pipeline.deps.PipelineDep`): a dataset
without a pipeline answers 404 with what to do; once created, the same routes answer."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.models import Role
from tests.app.pipeline.factories import Toy
from tests.conftest import MakeAccount

READS = (
    "",
    "/rounds",
    "/next",
    "/funnel",
    "/estimates",
    "/classes",
    "/training",
    "/final",
    "/samples",
    "/export/manifest.csv",
    "/export/report.json",
)


def test_reads_before_the_pipeline_exists_are_404s_that_say_to_create_it(
    client: TestClient, toy: Toy, make_account: MakeAccount
) -> None:
    headers = make_account(Role.ENGINEER).headers
    base = f"/api/pipelines/{toy.dataset_id}"
    for path in READS:
        response = client.get(f"{base}{path}", headers=headers)
        assert response.status_code == 404, path
        assert "create it first" in response.json()["error"]["message"], path
    assert client.post(base, json={"config": {}}, headers=headers).status_code == 201
    for path in READS:
        assert client.get(f"{base}{path}", headers=headers).status_code == 200, path
