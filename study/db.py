"""Database engines, transactions and migrations. Flask-free: the CLI and the export use it too.

SQLite is opened in WAL mode with a busy timeout, and every write transaction starts with
``BEGIN IMMEDIATE``, so that two writers are serialised at BEGIN instead of failing halfway
(pysqlite's own transaction handling is replaced, as SQLAlchemy's documentation recommends).
On PostgreSQL, write paths that must be serialised lock a row with ``SELECT ... FOR UPDATE``.
The schema is created and changed only by the Alembic migrations in ``migrations/``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from hprune.errors import UserError

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, create: bool = False) -> Engine:
    """An engine for ``url`` (``sqlite:///file`` or ``postgresql+psycopg://...``).

    A SQLite file must exist unless ``create`` (``hprune study init``): connecting to a
    mistyped path would otherwise leave an empty database there.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.is_file():
                raise UserError(
                    f"there is no study database at {path} (create one with 'hprune study init')"
                )
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _serialise_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    raise UserError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL; None for another database or an in-memory one."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def backup_sqlite(url: str, out: Path) -> None:
    """Copy the SQLite database at ``url`` to ``out`` with SQLite's online backup API: a
    consistent snapshot, taken while the server goes on reading and writing. ``out`` appears
    whole or not at all. A PostgreSQL database is a one-line error naming ``pg_dump``."""
    source = sqlite_file(url)
    if source is None:
        server = make_url(url).set(drivername="postgresql").render_as_string(hide_password=True)
        raise UserError(
            f"the study database {display_url(url)} is not a SQLite file: back it up with "
            f"pg_dump --format=custom --file study.dump '{server}'"
        )
    if not source.is_file():
        raise UserError(f"there is no study database at {source}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    try:
        reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        writer = sqlite3.connect(tmp)
        with contextlib.closing(reader), contextlib.closing(writer):
            reader.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            reader.backup(writer)
            writer.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def display_url(url: str) -> str:
    """``url`` with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def _serialise_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """An engine plus sessions: :meth:`write` serialises writers, :meth:`read` does not lock.

    ``cache`` holds what never changes once written (``study.catalogue``); every session of
    this database finds it as ``session.info["hprune_cache"]``.
    """

    def __init__(self, url: str, *, create: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, create=create)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.cache: dict = {}
        info = {"hprune_cache": self.cache}
        self._write = sessionmaker(self.engine, expire_on_commit=False, info=info)
        reader = self.engine.execution_options(sqlite_begin="DEFERRED")
        self._read = sessionmaker(reader, expire_on_commit=False, info=info)

    @contextlib.contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Session]:
        """A session in one transaction, committed on success, rolled back on error.

        ``durable=False`` is for transactions whose loss in a database crash would lose
        nothing anybody was told was kept (the choice of a participant's next trial, the time
        it was shown): on PostgreSQL the commit then does not wait for the WAL to reach the
        disk (``synchronous_commit`` off), so the row locks it holds are released sooner. Any
        later durable commit makes it durable too (the WAL is written in order).
        """
        with self._write() as session, session.begin():
            if not durable and not self.is_sqlite:
                session.connection().exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str, *, current: bool = False) -> Database:
    """A study database that exists and answers, set up by ``hprune study init`` (with
    ``current``: at the newest schema); otherwise a one-line :class:`UserError`."""
    db = Database(url)
    try:
        try:
            ready = has_tables(db.engine) and (not current or is_current(db.engine))
        except DBAPIError as exc:
            raise UserError(
                f"cannot open the database {display_url(url)}: {_reason(exc)}"
            ) from None
        if not ready:
            raise UserError(
                f"the database {display_url(url)} is not set up: run 'hprune study init'"
            )
    except UserError:
        db.dispose()
        raise
    return db


def _reason(exc: DBAPIError) -> str:
    """The first line of what the database driver said."""
    text = str(exc.orig).strip()
    return text.splitlines()[0] if text else type(exc.orig).__name__


def migrations_dir() -> Path:
    """The Alembic folder: the ``migrations`` package installed beside ``study`` (both ship in
    one distribution). Found by path, not imported: the migrations import study, never the other
    way round, and a ``migrations`` folder elsewhere on ``sys.path`` (a user's working folder)
    is never taken for ours."""
    path = Path(__file__).resolve().parents[1] / "migrations"
    if not (path / "env.py").is_file():
        raise UserError(f"the study's database migrations are missing: no {path / 'env.py'}")
    return path


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (the only way the schema is made); a
    SQLite file is created if need be."""
    from alembic import command

    try:
        command.upgrade(alembic_config(url), revision)
    except DBAPIError as exc:
        raise UserError(f"cannot open the database {display_url(url)}: {_reason(exc)}") from None


def is_current(engine: Engine) -> bool:
    """Whether the database has been migrated to the newest revision."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(False)))
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    return current == set(script.get_heads())


def has_tables(engine: Engine) -> bool:
    return inspect(engine).has_table("studies")
