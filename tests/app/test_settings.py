"""Settings: environment prefix, database defaults, and the generated secret key."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from app.settings import Settings, load_or_create_secret


def test_environment_variables_use_the_thresher_prefix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("THRESHER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("THRESHER_PORT", "9123")
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert settings.port == 9123


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/thresher.db"


def test_postgres_url_uses_psycopg3() -> None:
    settings = Settings(database_url="postgresql://u@db/thresher")
    assert settings.resolved_database_url == "postgresql+psycopg://u@db/thresher"


@pytest.mark.parametrize("secret", ["changeme", "secret", "short-but-not-placeholder"])
def test_placeholder_or_short_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValidationError, match="THRESHER_SECRET_KEY"):
        Settings(secret_key=secret)


def test_missing_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = settings.load_secret_key()
    assert len(first) >= 48
    assert Settings(data_dir=tmp_path / "data").load_secret_key() == first
    mode = (tmp_path / "data" / "secret_key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_racing_processes_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    with ThreadPoolExecutor(max_workers=8) as pool:
        secrets = set(pool.map(lambda _: load_or_create_secret(path), range(32)))
    assert len(secrets) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret_key"]


def test_secrets_can_come_from_files_and_not_from_both_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, password = tmp_path / "secret_key", tmp_path / "db_password"
    key.write_text("k" * 40 + "\n")
    password.write_text("p@ss word\n")
    monkeypatch.setenv("THRESHER_SECRET_KEY_FILE", str(key))
    monkeypatch.setenv("THRESHER_DATABASE_PASSWORD_FILE", str(password))
    monkeypatch.setenv("THRESHER_DATABASE_URL", "postgresql://thresher@db:5432/thresher")
    settings = Settings()
    assert settings.load_secret_key() == "k" * 40
    assert make_url(settings.resolved_database_url).password == "p@ss word"
    assert "p@ss" not in repr(settings) and "k" * 40 not in repr(settings)

    monkeypatch.setenv("THRESHER_SECRET_KEY", "s" * 40)
    with pytest.raises(ValidationError, match="THRESHER_SECRET_KEY or its _FILE"):
        Settings()
    monkeypatch.delenv("THRESHER_SECRET_KEY")
    monkeypatch.setenv("THRESHER_SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="cannot read"):
        Settings()
    key.write_text("changeme")
    monkeypatch.setenv("THRESHER_SECRET_KEY_FILE", str(key))
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings()
