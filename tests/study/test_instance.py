"""Where the study's data lives: one resolution for every command, never inside the installed
packages, the old default's data named with the move, and the online backup."""

from __future__ import annotations

import sqlite3
import sysconfig
from pathlib import Path

import platformdirs
import pytest

from hprune.errors import UserError
from study import instance
from tests.conftest import REPO_ROOT
from tests.study.conftest import run_cli


@pytest.fixture
def no_overrides(monkeypatch, tmp_path):
    """No instance or database set in the environment; the user's data folder under tmp."""
    for name in ("HPRUNE_INSTANCE", "DATABASE_URL", "HPRUNE_MEDIA_DIR", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def installed_root(tmp_path: Path) -> Path:
    """A site-packages-like folder: the packages without hprune's pyproject.toml."""
    root = tmp_path / "site-packages"
    (root / "study").mkdir(parents=True)
    return root


def test_hprune_instance_wins(no_overrides, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HPRUNE_INSTANCE", str(tmp_path / "mine"))
    assert instance.instance_folder(installed_root(tmp_path)) == tmp_path / "mine"
    assert instance.instance_folder(REPO_ROOT) == tmp_path / "mine"


def test_a_source_checkout_keeps_its_instance_folder(no_overrides) -> None:
    assert instance.is_source_checkout(REPO_ROOT)
    assert instance.instance_folder(REPO_ROOT) == REPO_ROOT / "instance"


def test_an_installed_hprune_keeps_its_data_in_the_users_data_folder(no_overrides, tmp_path):
    root = installed_root(tmp_path)
    assert not instance.is_source_checkout(root)
    folder = instance.instance_folder(root)
    assert folder == platformdirs.user_data_path("hprune") / "instance"
    assert folder == tmp_path / "xdg" / "hprune" / "instance"  # XDG_DATA_HOME is honoured
    assert instance.database_url(folder) == f"sqlite:///{folder / 'study.sqlite3'}"
    assert not folder.exists()  # resolving creates nothing


def test_data_at_the_old_default_is_an_error_that_says_how_to_move_it(no_overrides, tmp_path):
    root = installed_root(tmp_path)
    old = root / "instance"
    old.mkdir()
    (old / "study.sqlite3").write_bytes(b"answers")
    with pytest.raises(UserError) as caught:
        instance.instance_folder(root)
    new = tmp_path / "xdg" / "hprune" / "instance"
    assert f"mv '{old}' '{new}'" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert (old / "study.sqlite3").read_bytes() == b"answers"  # nothing moved behind the back
    new.mkdir(parents=True)  # once moved (or set up anew), the new place is used
    assert instance.instance_folder(root) == new


def test_init_says_where_the_instance_is_when_it_creates_it(tmp_path) -> None:
    folder = tmp_path / "inst"
    args = ("study", "--instance", str(folder), "--db", f"sqlite:///{folder}/study.sqlite3")
    first = run_cli(*args, "init")
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[0] == f"instance folder: {folder} (created)"
    again = run_cli(*args, "init")
    assert again.exit_code == 0, again.output
    assert again.output.splitlines()[0] == f"instance folder: {folder}"


def test_admin_create_says_which_database_holds_the_login(tmp_path) -> None:
    database = tmp_path / "inst" / "study.sqlite3"
    base = ("study", "--instance", str(tmp_path / "inst"), "--db", f"sqlite:///{database}")
    assert run_cli(*base, "init").exit_code == 0
    result = run_cli(*base, "admin", "create", "--username", "alice", "--generate")
    assert result.exit_code == 0, result.output
    created, password = result.output.splitlines()
    assert created == f"admin 'alice' created in sqlite:///{database}"
    assert password.startswith("temporary password (first login only, then choose your own): ")


@pytest.mark.parametrize("where", ["instance", "database"])
def test_init_refuses_to_keep_data_inside_the_installed_packages(tmp_path, where) -> None:
    site_packages = Path(sysconfig.get_path("purelib"))
    inside = site_packages / "hprune-test-instance"
    if where == "instance":
        args = ("--instance", str(inside), "--db", f"sqlite:///{tmp_path}/study.sqlite3")
    else:
        args = ("--instance", str(tmp_path / "inst"), "--db", f"sqlite:///{inside}/study.sqlite3")
    result = run_cli("study", *args, "init")
    assert result.exit_code == 2, result.output
    assert "refusing to keep the" in result.output and str(site_packages) in result.output
    assert not inside.exists() and not (tmp_path / "inst").exists()


def test_import_refuses_to_copy_images_into_the_installed_packages(
    tmp_path, monkeypatch, stimuli_dir
) -> None:
    base = ["study", "--instance", str(tmp_path / "inst"), "--db", f"sqlite:///{tmp_path}/db"]
    assert run_cli(*base, "init").exit_code == 0
    media = Path(sysconfig.get_path("purelib")) / "hprune-test-media"
    monkeypatch.setenv("HPRUNE_MEDIA_DIR", str(media))
    spec = tmp_path / "study.yaml"
    spec.write_text("name: refused\ncriteria: [{name: quality, question: Which is better}]\n")
    result = run_cli(*base, "import", "--manifest", str(stimuli_dir), "--spec", str(spec))
    assert result.exit_code == 2, result.output
    assert "refusing to keep the image copies inside the installed packages" in result.output
    assert not media.exists()


def test_import_says_where_the_image_copies_go(no_overrides, tmp_path, stimuli_dir) -> None:
    base = ["study", "--instance", str(tmp_path / "inst"), "--db", f"sqlite:///{tmp_path}/db"]
    assert run_cli(*base, "init").exit_code == 0
    spec = tmp_path / "study.yaml"
    spec.write_text("name: placed\ncriteria: [{name: quality, question: Which is better}]\n")
    result = run_cli(*base, "import", "--manifest", str(stimuli_dir), "--spec", str(spec))
    assert result.exit_code == 0, result.output
    media = tmp_path / "inst" / "media"
    assert f"  image copies in {media}" in result.output.splitlines()
    rendered = len(list((stimuli_dir / "images").glob("*.png")))
    assert len(list(media.rglob("*.png"))) == 2 * rendered  # a copy for attention trials each


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_backup_copies_what_is_committed_while_a_writer_is_busy(tmp_path) -> None:
    from study.db import Database
    from study.models import Admin

    database = tmp_path / "inst" / "study.sqlite3"
    base = ["study", "--instance", str(tmp_path / "inst"), "--db", f"sqlite:///{database}"]
    assert run_cli(*base, "init").exit_code == 0
    copy = tmp_path / "backups" / "copy.sqlite3"
    db = Database(f"sqlite:///{database}")
    try:
        with db.write() as session:
            session.add(Admin(username="committed", password_hash="x"))
        with db.write() as session:  # a writer in the middle of its transaction
            session.add(Admin(username="in flight", password_hash="y"))
            session.flush()
            result = run_cli(*base, "backup", "--out", str(copy))
    finally:
        db.dispose()
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {copy} (a copy of sqlite:///{database})\n"
    assert _count(copy, "admins") == 1
    assert _count(database, "admins") == 2
    again = run_cli(*base, "backup", "--out", str(copy))
    assert again.exit_code == 2 and "already exists" in again.output
    assert _count(copy, "admins") == 1
    assert sorted(p.name for p in copy.parent.iterdir()) == ["copy.sqlite3"]  # no temporary left


def test_backup_of_postgresql_names_pg_dump(tmp_path) -> None:
    from study.db import backup_sqlite

    url = "postgresql+psycopg://study:secret@db.example.org/study"
    with pytest.raises(UserError) as caught:
        backup_sqlite(url, tmp_path / "x")
    message = str(caught.value)
    assert (
        "pg_dump --format=custom --file study.dump 'postgresql://study:***@db.example.org/study'"
        in message
    )
    assert "secret" not in message
    assert not (tmp_path / "x").exists()


def test_analyze_study_db_reads_the_database_hprune_study_uses(no_overrides, monkeypatch, tmp_path):
    monkeypatch.setenv("HPRUNE_INSTANCE", str(tmp_path / "inst"))
    args = ("analyze", "--study-db", "--out", str(tmp_path / "report"))
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    assert f"no study database at {tmp_path / 'inst' / 'study.sqlite3'}" in result.output
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}")
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    assert f"no study database at {tmp_path / 'elsewhere.sqlite3'}" in result.output
    both = run_cli(*args, "--responses", "x.csv")
    assert both.exit_code == 2 and "either --responses or --study-db" in both.output


def test_every_study_command_takes_db_and_instance_after_the_subcommand(
    no_overrides, tmp_path, stimuli_dir
) -> None:
    """Was: `--db` only before the subcommand (`hprune study simulate --db ...` failed)."""
    folder = tmp_path / "inst"
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"
    where = ("--instance", str(folder), "--db", url)
    assert run_cli("study", "init", *where).exit_code == 0
    assert (tmp_path / "elsewhere.sqlite3").is_file() and (folder / "secret_key").is_file()
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: after\nkind: pair\ntrials_per_criterion: 2\n")
    runs = {
        "import": run_cli("study", "import", *where, "--manifest", str(stimuli_dir),
                          "--spec", str(spec)),
        "list": run_cli("study", "list", "--db", url),
        "export": run_cli("study", "export", "--db", url, "--out", str(tmp_path / "out")),
        "backup": run_cli("study", "backup", "--db", url, "--out", str(tmp_path / "b.sqlite3")),
        "admin": run_cli("study", "admin", "create", "--db", url, "--username", "alice",
                         "--generate"),
    }  # fmt: skip
    for name, result in runs.items():
        assert result.exit_code == 0, f"{name}: {result.output}"
    assert runs["list"].output.startswith("after\topen")
    assert str(tmp_path / "elsewhere.sqlite3") in runs["admin"].output
    simulate = run_cli("study", "simulate", "--db", url, "-n", "1", "--url", "http://127.0.0.1:9")
    assert simulate.exit_code == 2 and "cannot reach the study server" in simulate.output


def test_a_missing_database_names_the_demo_when_make_demo_set_one_up(
    no_overrides, monkeypatch, tmp_path
):
    """Was: after `make demo` the CLI looked in <checkout>/instance and said to run init."""
    root = tmp_path / "checkout"
    (root / "instance" / "demo").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "hprune"\n')
    (root / "instance" / "demo" / "study.sqlite3").write_bytes(b"")
    monkeypatch.setattr(instance, "PACKAGES_ROOT", root)
    result = run_cli("study", "list", "--db", f"sqlite:///{root / 'instance' / 'study.sqlite3'}")
    assert result.exit_code == 2
    demo = root / "instance" / "demo"
    assert f"make demo) is in {demo}: export HPRUNE_INSTANCE={demo}" in result.output
