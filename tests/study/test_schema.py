"""The schema comes only from the Alembic migrations, and they agree with the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from study.db import Database, is_current
from study.models import Base
from tests.study.conftest import run_cli


def test_migrated_database_matches_the_models(db_url):
    db = Database(db_url)
    try:
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
        assert is_current(db.engine)
        assert {"studies", "trials", "answers", "participants"} <= set(
            inspect(db.engine).get_table_names()
        )
    finally:
        db.dispose()


def test_init_is_idempotent_and_writes_a_private_secret_key(tmp_path):
    instance = tmp_path / "inst"
    for _ in range(2):
        result = run_cli(
            "study", "--instance", str(instance), "--db", f"sqlite:///{instance}.db", "init"
        )
        assert result.exit_code == 0, result.output
    key = instance / "secret_key"
    assert key.stat().st_mode & 0o077 == 0
    assert len(key.read_text().strip()) == 64
