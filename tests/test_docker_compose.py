"""docker-compose.yml cannot run here (no Docker engine); check that it agrees with the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_has_postgres_server_and_worker(compose: dict[str, Any]) -> None:
    assert {"postgres", "server", "worker"} <= set(compose["services"])


def _worker_variables() -> set[str]:
    """The environment variables ``thresher worker`` reads for its options."""
    import typer
    from typer.main import get_command

    from ml.worker.cli import worker

    app = typer.Typer()
    app.command()(worker)
    return {p.envvar for p in get_command(app).params if isinstance(p.envvar, str)}


def test_every_thresher_variable_is_a_setting(compose: dict[str, Any]) -> None:
    fields = {f"THRESHER_{name.upper()}" for name in Settings.model_fields} | _worker_variables()
    for service in compose["services"].values():
        for variable in service.get("environment", {}):
            if variable.startswith("THRESHER_"):
                assert variable in fields, f"{variable} is not a Thresher setting"


def test_server_database_url_points_at_the_postgres_service(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    server = compose["services"]["server"]
    environment = server["environment"]
    postgres = compose["services"]["postgres"]["environment"]
    # The URL holds no password: both services read it from the same secret file.
    password = tmp_path / "postgres_password"
    password.write_text("hunter2-but-longer\n")
    settings = Settings(
        database_url=environment["THRESHER_DATABASE_URL"], database_password_file=password
    )
    url = make_url(settings.resolved_database_url)
    assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "postgres", 5432)
    assert (url.username, url.database) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
    assert url.password == "hunter2-but-longer"
    assert make_url(environment["THRESHER_DATABASE_URL"]).password is None
    secret = Path(environment["THRESHER_DATABASE_PASSWORD_FILE"]).name
    assert postgres["POSTGRES_PASSWORD_FILE"] == f"/run/secrets/{secret}"
    for name in ("postgres", "server"):
        assert secret in compose["services"][name]["secrets"]
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_server_runs_thresher_serve_which_migrates(compose: dict[str, Any]) -> None:
    assert compose["services"]["server"]["command"][:2] == ["thresher", "serve"]


def test_data_dirs_are_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name in ("server", "worker"):
        service = compose["services"][name]
        data_dir = service["environment"]["THRESHER_DATA_DIR"]
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        assert data_dir in mounts, f"{name}: THRESHER_DATA_DIR {data_dir} is not mounted"
        assert mounts[data_dir] in declared


def test_worker_reserves_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]


def test_worker_talks_to_the_server_service_over_http(compose: dict[str, Any]) -> None:
    command = compose["services"]["worker"]["command"]
    server_url = command[command.index("--server") + 1]
    port = compose["services"]["server"]["environment"]["THRESHER_PORT"]
    assert re.fullmatch(rf"http://server:{port}", server_url)


def test_the_worker_token_comes_from_a_secret_file_not_the_command_line(
    compose: dict[str, Any],
) -> None:
    worker = compose["services"]["worker"]
    assert not any(part.startswith("--token") for part in worker["command"])
    assert "THRESHER_WORKER_TOKEN_FILE" in _worker_variables()
    path = Path(worker["environment"]["THRESHER_WORKER_TOKEN_FILE"])
    assert path.parent == Path("/run/secrets") and path.name in worker["secrets"]
    assert path.name in compose["secrets"]


def test_no_secret_sits_in_the_compose_environment(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for name, value in service.get("environment", {}).items():
            assert not re.search(r"PASSWORD$|TOKEN$|SECRET_KEY$", name), name
            assert "${" not in str(value) or "PASSWORD" not in str(value), name


def test_the_image_runs_as_an_unprivileged_user_owning_the_data_dirs(
    compose: dict[str, Any],
) -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    text = "\n".join(lines)
    for name in ("server", "worker"):
        data_dir = compose["services"][name]["environment"]["THRESHER_DATA_DIR"]
        assert f"chown {users[-1]}:{users[-1]}" in text and data_dir in text
