"""``hprune study``: set up, fill, serve and export a blinded web study."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import click

from hprune.cli import LazyGroup
from hprune.errors import UserError

# Subcommands that live beside the code they drive, imported only when used.
LAZY_SUBCOMMANDS: dict[str, str] = {"simulate": "hprune.commands.study_simulate:simulate"}


def _database_url() -> str:
    from study.instance import database_url, instance_folder

    return database_url(instance_folder())


def _require_current(url: str) -> None:
    from study.db import open_database

    open_database(url, current=True).dispose()


def _safe(url: str) -> str:
    from study.db import display_url

    return display_url(url)


@click.group(
    cls=LazyGroup,
    lazy_commands=LAZY_SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--db",
    "db_url",
    envvar="DATABASE_URL",
    help="Database URL (default: sqlite in the instance folder; env DATABASE_URL).",
)
@click.option(
    "--instance",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HPRUNE_INSTANCE",
    help="Instance folder: secret key, SQLite database, served image copies (env "
    "HPRUNE_INSTANCE; default: the user's data folder, e.g. ~/.local/share/hprune/instance, or "
    "<checkout>/instance in a source checkout).",
)
def study(db_url: str | None, instance: Path | None) -> None:
    """Run a blinded pairwise (2AFC) or MOS rating study on the web."""
    if instance is not None:
        os.environ["HPRUNE_INSTANCE"] = str(instance.resolve())
    if db_url:
        os.environ["DATABASE_URL"] = db_url


@study.command()
def init() -> None:
    """Create the instance folder and secret key, and migrate the database to the newest schema."""
    from hprune.fileio import atomic_write_text
    from study.db import sqlite_file, upgrade
    from study.instance import SECRET_KEY_FILE, instance_folder, refuse_inside_install

    instance = instance_folder()
    refuse_inside_install(instance, "instance folder")
    url = _database_url()
    database_file = sqlite_file(url)
    if database_file is not None:
        refuse_inside_install(database_file, "study database")
    created = not instance.exists()
    instance.mkdir(parents=True, exist_ok=True)
    click.echo(f"instance folder: {instance}{' (created)' if created else ''}")
    key_file = instance / SECRET_KEY_FILE
    if not os.environ.get("SECRET_KEY") and not key_file.exists():
        atomic_write_text(key_file, secrets.token_hex(32) + "\n")
        key_file.chmod(0o600)
        click.echo(f"wrote a new secret key to {key_file}")
    upgrade(url)
    click.echo(f"database ready: {_safe(url)}")


@study.command("import")
@click.option(
    "--manifest",
    required=True,
    type=click.Path(path_type=Path),
    help="stimuli/manifest.csv (or the stimuli folder).",
)
@click.option("--spec", required=True, type=click.Path(path_type=Path), help="The study spec YAML.")
@click.option(
    "--base-url", default="<server>", help="Where the study is served, for the printed link."
)
def import_(manifest: Path, spec: Path, base_url: str) -> None:
    """Create a study, or a new version of it, from a stimuli manifest and a spec."""
    from study.app import create_app
    from study.flask_db import get_db
    from study.importer import import_study
    from study.instance import refuse_inside_install
    from study.spec import load_spec

    parsed = load_spec(spec)
    url = _database_url()
    _require_current(url)
    app = create_app({"HPRUNE_ENV": "development"})
    media = Path(app.config["MEDIA_DIR"])
    refuse_inside_install(media, "image copies")
    result = import_study(get_db(app), manifest, parsed, media)
    if result.changed:
        click.echo(f"study {result.study_name!r}: version {result.version} imported")
    else:
        click.echo(f"study {result.study_name!r}: unchanged (version {result.version})")
    click.echo(
        f"  {result.n_stimuli} images, {len(result.variants)} variants, {result.n_items} items"
    )
    click.echo(f"  image copies in {media}")
    click.echo(f"  participant URL: {base_url.rstrip('/')}/s/{result.public_key}")


@study.command("list")
def list_() -> None:
    """List the studies with their participant URLs and numbers."""
    from sqlalchemy import select

    from study.dashboard import participant_counts
    from study.db import Database
    from study.models import Study, utcnow

    url = _database_url()
    _require_current(url)
    db = Database(url)
    with db.read() as session:
        studies = session.scalars(select(Study).order_by(Study.created_at)).all()
        if not studies:
            click.echo("no studies yet: hprune study import --manifest ... --spec ...")
        for s in studies:
            counts = participant_counts(session, s, utcnow())
            click.echo(
                f"{s.name}\t{s.status}\t/s/{s.public_key}\tv{len(s.versions)}\t"
                f"started {counts['started']}, completed {counts['completed']}"
            )
    db.dispose()


@study.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--dev", is_flag=True, help="Flask's development server (debug off, one process).")
def serve(host: str, port: int, workers: int, threads: int, dev: bool) -> None:
    """Serve the study with gunicorn (or Flask's development server with --dev)."""
    from study.app import create_app

    url = _database_url()
    _require_current(url)
    try:
        app = create_app({"HPRUNE_ENV": "development"} if dev else None)
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"serving on http://{host}:{port}/ (database {_safe(url)})")
    if dev:
        app.run(host=host, port=port, debug=False, threaded=True)
        return
    from study.wsgi import run_gunicorn

    run_gunicorn(app, bind=f"{host}:{port}", workers=workers, threads=threads)


@study.command()
@click.option("--study", "name", help="Study name (needed when the database holds several).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def export(name: str | None, out: Path, overwrite: bool) -> None:
    """Write the tidy responses (responses.csv, responses.parquet, codebook.json) and
    participants.csv (one row per participant: Prolific ids, outcome, completion code)."""
    from study.export import study_names, write_export

    url = _database_url()
    _require_current(url)
    if name is None:
        names = study_names(url)
        if len(names) != 1:
            raise UserError(
                f"the database holds {len(names)} studies ({', '.join(names) or 'none'}): "
                "pick one with --study"
            )
        name = names[0]
    paths = write_export(url, out, study=name, overwrite=overwrite)
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


@study.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The backup file to write (a SQLite database).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing backup file.")
def backup(out: Path, overwrite: bool) -> None:
    """Copy the SQLite study database, also while the server runs (SQLite's online backup).
    For PostgreSQL use pg_dump (docs/hosting.md)."""
    from study.db import backup_sqlite

    url = _database_url()
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists (pass --overwrite to replace it)")
    backup_sqlite(url, out)
    click.echo(f"wrote {out} (a copy of {_safe(url)})")


@study.group()
def admin() -> None:
    """Manage admin accounts of the dashboard."""


@admin.command("create")
@click.option("--username", required=True)
@click.option("--generate", is_flag=True, help="Generate a random password and print it (once).")
@click.option("--reset", is_flag=True, help="Set a new password if the user exists.")
def admin_create(username: str, generate: bool, reset: bool) -> None:
    """Create a dashboard login (the password is stored hashed)."""
    from study.admins import set_admin_password
    from study.db import Database

    if not 1 <= len(username) <= 100:
        raise UserError("the user name must have 1 to 100 characters")
    if generate:
        password = secrets.token_urlsafe(12)
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 10:
        raise UserError("the password must have at least 10 characters")
    url = _database_url()
    _require_current(url)
    db = Database(url)
    try:
        created = set_admin_password(db, username, password, reset=reset)
    finally:
        db.dispose()
    click.echo(f"admin {username!r} {'created' if created else 'password reset'} in {_safe(url)}")
    if generate:
        click.echo(f"one-time password: {password}")
