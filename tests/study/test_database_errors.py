"""A wrong database path or an unreachable server is a one-line error, and nothing is created."""

from __future__ import annotations

import pytest

from hprune.errors import UserError
from study.db import open_database
from study.export import export_responses
from tests.study.conftest import run_cli

UNREACHABLE = "postgresql+psycopg://nobody:hunter2pw@127.0.0.1:1/nothing"


@pytest.mark.parametrize("command", [["export", "--out", "x"], ["list"], ["serve"]])
def test_cli_on_a_missing_sqlite_file_creates_nothing(tmp_path, command) -> None:
    missing = tmp_path / "typo" / "study.sqlite3"
    result = run_cli(
        "study", "--instance", str(tmp_path / "i"), "--db", f"sqlite:///{missing}", *command
    )
    assert result.exit_code == 2
    assert f"there is no study database at {missing}" in result.output
    assert "'hprune study init'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not missing.parent.exists()


def test_cli_on_an_unreachable_server_is_one_line_without_the_password(tmp_path) -> None:
    for command in (["export", "--out", str(tmp_path / "x")], ["init"]):
        result = run_cli("study", "--instance", str(tmp_path / "i"), "--db", UNREACHABLE, *command)
        assert result.exit_code == 2, result.output
        error = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(error) == 1 and "cannot open the database" in error[0]
        assert "postgresql+psycopg://nobody:***@127.0.0.1:1/nothing" in error[0]
        assert "hunter2pw" not in result.output and "Traceback" not in result.output


def test_library_readers_refuse_missing_files_unreachable_servers_and_empty_databases(
    tmp_path,
) -> None:
    missing = tmp_path / "nope.sqlite3"
    with pytest.raises(UserError, match="there is no study database"):
        export_responses(f"sqlite:///{missing}")
    assert not missing.exists()
    with pytest.raises(UserError, match="cannot open the database"):
        export_responses(UNREACHABLE)
    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="is not set up: run 'hprune study init'"):
        open_database(f"sqlite:///{empty}")
    from hprune.commands.analyze import read_responses

    with pytest.raises(UserError, match="there is no study database"):
        read_responses(f"sqlite:///{missing}")
    assert not missing.exists()


def test_health_check_says_whether_the_database_answers(app, instance_dir) -> None:
    from study.app import create_app

    response = app.test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"ok": True})
    down = create_app({"TESTING": True, "DATABASE_URL": UNREACHABLE, "SECRET_KEY": "x"})
    response = down.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"ok": False, "error": "The database cannot be reached."}
    down.extensions["hprune_db"].dispose()
