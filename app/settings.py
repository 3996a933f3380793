"""Settings from the environment (prefix ``THRESHER_``) and the secret key in the data directory."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

#: Where the repository's templates, static files and migrations live.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "dev", "development", "please-change"}
SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name, not a secret)


class Settings(BaseSettings):
    """Everything configurable. Each field reads ``THRESHER_<NAME>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="THRESHER_", extra="ignore")

    data_dir: Path = Field(
        default=Path("thresher-data"),
        description="Holds the SQLite database, the secret key, thumbnails and artifacts.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; defaults to SQLite in the data directory. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    database_password: str | None = Field(
        default=None,
        repr=False,
        description="Put into THRESHER_DATABASE_URL, so the URL itself holds no secret.",
    )
    database_password_file: Path | None = Field(
        default=None, description="A file holding the database password (e.g. a Docker secret)."
    )
    secret_key: str | None = Field(
        default=None,
        repr=False,
        description="Signs one-time links. Generated once into the data directory when unset.",
    )
    secret_key_file: Path | None = Field(
        default=None, description="A file holding the secret key (e.g. a Docker secret)."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    base_url: str | None = Field(
        default=None, description="Public URL, for links printed by the CLI."
    )
    secure_cookies: bool = Field(default=False, description="Set when served over HTTPS.")
    session_hours: int = 24 * 14
    max_image_pixels: int = Field(
        default=89_478_485,
        description="Images with more pixels are refused as decompression bombs "
        "(Pillow's default limit).",
    )
    import_processes: int | None = Field(
        default=None, description="Probe processes for imports; defaults to the CPU count."
    )
    thumbnail_sizes: tuple[int, ...] = (96, 128, 256, 512)
    review_lease_seconds: int = Field(
        default=600, gt=0, description="An API client's hold on leased review tasks."
    )
    review_browser_lease_seconds: int = Field(
        default=60,
        gt=0,
        description="A signed-in page's hold on its review tasks; the page renews it while it "
        "is open and visible, and releases it when hidden or closed.",
    )
    log_format: str = Field(default="console", description="console or json")
    import_roots: Annotated[tuple[Path, ...] | None, NoDecode] = Field(
        default=None,
        description="The folders datasets, manifests and class lists may be imported from "
        "through the API, separated by ':' (the CLI, run on the server, may import from "
        "anywhere). Default: the demo's folder in the data directory.",
    )
    max_body_bytes: int = Field(
        default=1 << 20, gt=0, description="Largest JSON or form body of a request."
    )
    max_import_body_bytes: int = Field(
        default=64 << 20,
        gt=0,
        description="Largest body of a dataset registration or import (class lists may be inline).",
    )
    body_idle_seconds: float = Field(
        default=15.0, gt=0, description="A request body that pauses longer gets 408."
    )
    body_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A JSON or form body that takes longer in all gets 408 "
        "(streamed uploads are bounded by the pause alone).",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """``<name>_file`` settings: the secret is read from the file (its surrounding
        whitespace dropped), so it need not sit in the environment or a command line."""
        if not isinstance(data, dict):
            return data
        for name in ("database_password", "secret_key"):
            path = data.get(f"{name}_file")
            if not path:
                continue
            if data.get(name):
                raise ValueError(f"set THRESHER_{name.upper()} or its _FILE, not both")
            try:
                data = {**data, name: Path(path).read_text(encoding="utf-8").strip()}
            except OSError as exc:
                raise ValueError(
                    f"THRESHER_{name.upper()}_FILE: cannot read {path}: {exc.strerror}"
                ) from exc
        return data

    @field_validator("secret_key")
    @classmethod
    def _refuse_placeholder_secret(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.strip().lower() in _PLACEHOLDER_SECRETS or len(value) < 32:
            raise ValueError(
                "THRESHER_SECRET_KEY must be a random string of at least 32 characters "
                "(leave it unset to have one generated into the data directory)"
            )
        return value

    @field_validator("import_roots", mode="before")
    @classmethod
    def _split_import_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(part) for part in value.split(os.pathsep) if part.strip())
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_postgres_driver(cls, value: str | None) -> str | None:
        # Users write postgresql://…; we always talk to it through psycopg 3.
        if value and value.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url and self.database_password:
            url = make_url(self.database_url).set(password=self.database_password)
            return url.render_as_string(hide_password=False)
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'thresher.db').resolve()}"

    @property
    def allowed_import_roots(self) -> tuple[Path, ...]:
        """Where the API may import from (see ``import_roots``)."""
        if self.import_roots is not None:
            return self.import_roots
        return (self.demo_dir,)

    @property
    def demo_dir(self) -> Path:
        """Where ``thresher demo`` builds its dataset."""
        return self.data_dir / "demo"

    @property
    def thumbnail_dir(self) -> Path:
        return self.data_dir / "thumbnails"

    @property
    def public_url(self) -> str:
        return self.base_url or f"http://{self.host}:{self.port}"

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir

    def load_secret_key(self) -> str:
        """The configured secret, else the one in the data directory (created on first use)."""
        if self.secret_key:
            return self.secret_key
        return load_or_create_secret(self.ensure_data_dir() / SECRET_KEY_FILE)


def load_or_create_secret(path: Path) -> str:
    """Reads the secret at ``path``; creates it (mode 0600) if missing.

    Safe when several processes start at once: the secret is written to a private file first and
    linked into place, so a reader never sees a half-written key and only one key ever wins.
    """
    if path.exists():
        return path.read_text().strip()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
