"""The ``worker`` command: its options, and the docker-compose worker service that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from ml.worker.cli import _worker_token, worker

ROOT = Path(__file__).resolve().parents[3]


def command() -> typer.Typer:
    app = typer.Typer()
    app.command()(worker)
    return app


def test_the_compose_worker_service_runs_a_valid_worker_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["worker"]
    argv = service["command"]
    assert argv[:2] == ["thresher", "worker"]
    # The token file comes from the service's environment, as docker compose passes it.
    token_file = service["environment"]["THRESHER_WORKER_TOKEN_FILE"]
    monkeypatch.setenv("THRESHER_WORKER_TOKEN_FILE", token_file)
    parsed = typer.main.get_command(command()).make_context("worker", list(argv[2:]))
    assert parsed.params["server"] == "http://server:8000"
    assert parsed.params["device"] == "cuda:0"
    assert parsed.params["token_file"] == Path(token_file)


def test_the_token_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THRESHER_WORKER_TOKEN", "thr_secret")
    parsed = typer.main.get_command(command()).make_context("worker", ["--server", "http://s:1"])
    assert parsed.params["token"] == "thr_secret"


def test_gpu_lists_are_checked() -> None:
    result = CliRunner().invoke(
        command(), ["--server", "http://s:1", "--token", "t", "--gpus", "0,0"]
    )
    assert result.exit_code == 2
    assert "distinct" in result.output


def test_gpus_and_a_cpu_device_do_not_mix() -> None:
    result = CliRunner().invoke(
        command(), ["--server", "http://s:1", "--token", "t", "--device", "cpu", "--gpus", "0,1"]
    )
    assert result.exit_code == 2
    assert "--gpus runs on CUDA" in result.output


def test_the_worker_token_may_come_from_a_file_but_not_from_both(tmp_path: Path) -> None:
    token_file = tmp_path / "worker_token"
    token_file.write_text("thr_secret\n")
    assert _worker_token(None, token_file) == "thr_secret"
    assert _worker_token("thr_given", None) == "thr_given"
    for token, path in (("thr_given", token_file), (None, None)):
        with pytest.raises(typer.BadParameter, match="--token or --token-file"):
            _worker_token(token, path)
    with pytest.raises(typer.BadParameter, match="cannot read"):
        _worker_token(None, tmp_path / "missing")
