"""The schema comes only from migrations: they reach head on both engines and match the models."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from app.migrate import alembic_config, current_revision, heads, upgrade
from app.models import Base


def test_there_is_exactly_one_head(db_url: str) -> None:
    assert len(heads(db_url)) == 1


def test_migrated_schema_matches_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_database_is_at_head(engine: Engine, db_url: str) -> None:
    assert current_revision(engine) == heads(db_url)[0]


def test_every_model_table_exists(engine: Engine) -> None:
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())


def test_upgrade_is_idempotent(db_url: str, engine: Engine) -> None:
    upgrade(db_url)
    assert current_revision(engine) == heads(db_url)[0]


def test_downgrade_to_base_and_back(db_url: str, engine: Engine) -> None:
    command.downgrade(alembic_config(db_url), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(db_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
