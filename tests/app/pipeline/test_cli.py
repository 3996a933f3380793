"""``thresher pipeline …`` and ``thresher export`` on the configured database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from tests.app.pipeline.factories import Toy


def test_the_cli_drives_a_pipeline_and_exports_it(
    runner: CliRunner, toy: Toy, tmp_path: Path
) -> None:
    created = runner.invoke(cli, ["pipeline", "create", "toy", "--set", "seed_random_samples=4"])
    assert created.exit_code == 0, created.output
    assert "created, stage junk" in created.output
    step = runner.invoke(cli, ["pipeline", "step", "toy", "junk_seed"])
    assert step.exit_code == 0, step.output
    assert "junk seed 1" in step.output and "reviewing" in step.output
    busy = runner.invoke(cli, ["pipeline", "step", "toy", "junk_audit"])
    assert busy.exit_code == 1 and "must finish first" in busy.output
    config = runner.invoke(cli, ["pipeline", "config", "toy", "--set", "audit_size=42"])
    assert json.loads(config.output)["audit_size"] == 42
    status = runner.invoke(cli, ["pipeline", "status", "toy", "--json"])
    body = json.loads(status.output)
    assert body["stage"] == "junk" and body["rounds"][0]["tasks"]["pending"] > 0
    pending = body["rounds"][0]["tasks"]["pending"]
    waiting = f"waiting: {pending} junk_check tasks for an annotator (junk seed 1)"
    assert body["waiting"] == [waiting]
    assert waiting in runner.invoke(cli, ["pipeline", "status", "toy"]).output
    out = tmp_path / "export"
    exported = runner.invoke(cli, ["export", "toy", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    assert (out / "manifest.csv").is_file() and (out / "report.json").is_file()


def test_an_unknown_dataset_is_an_error_message(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["pipeline", "status", "nope"])
    assert result.exit_code == 1 and "no dataset named 'nope'" in result.output


def test_simulate_needs_a_token(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("THRESHER_TOKEN", raising=False)
    truth = tmp_path / "truth.csv"
    truth.write_text("path,clean\na.png,cat\n")
    result = runner.invoke(cli, ["simulate", "toy", "--truth", str(truth), "--column", "clean"])
    assert result.exit_code == 1 and "give an API token" in result.output
