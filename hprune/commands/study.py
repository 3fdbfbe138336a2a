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
    from study.db import open_database, sqlite_file
    from study.instance import demo_instance_folder

    try:
        open_database(url, current=True).dispose()
    except UserError as exc:
        demo, missing = demo_instance_folder(), sqlite_file(url)
        if demo is None or missing is None or missing.exists() or missing.parent == demo:
            raise
        raise UserError(
            f"{exc}; the demo's study (make demo) is in {demo}: export HPRUNE_INSTANCE={demo}"
        ) from None


def _safe(url: str) -> str:
    from study.db import display_url

    return display_url(url)


def _set_instance(_ctx, _param, value: Path | None) -> None:
    if value is not None:
        os.environ["HPRUNE_INSTANCE"] = str(value.resolve())


def _set_database(_ctx, _param, value: str | None) -> None:
    if value:
        os.environ["DATABASE_URL"] = value


DB_HELP = "Database URL (default: sqlite in the instance folder; env DATABASE_URL)."
INSTANCE_HELP = (
    "Instance folder: secret key, SQLite database, served image copies (env HPRUNE_INSTANCE; "
    "default: the user's data folder, e.g. ~/.local/share/hprune/instance, or "
    "<checkout>/instance in a source checkout)."
)


def where_options(command):
    """``--db`` and ``--instance`` on a study subcommand, as on the group: every study command
    finds its database the same way (``study.instance``), wherever the options are given."""
    command = click.option(
        "--instance",
        type=click.Path(file_okay=False, path_type=Path),
        expose_value=False,
        is_eager=True,
        callback=_set_instance,
        help=INSTANCE_HELP,
    )(command)
    return click.option(
        "--db", expose_value=False, is_eager=True, callback=_set_database, help=DB_HELP
    )(command)


@click.group(
    cls=LazyGroup,
    lazy_commands=LAZY_SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--db", "db_url", envvar="DATABASE_URL", help=DB_HELP)
@click.option(
    "--instance",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HPRUNE_INSTANCE",
    help=INSTANCE_HELP,
)
def study(db_url: str | None, instance: Path | None) -> None:
    """Run a blinded pairwise (2AFC) or MOS rating study on the web.

    --db and --instance may be given before the subcommand or after it.
    """
    _set_instance(None, None, instance)
    _set_database(None, None, db_url)


@study.command()
@where_options
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
@where_options
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
    from study.spec import load_spec, spec_warnings

    parsed = load_spec(spec)
    for warning in spec_warnings(parsed):
        click.echo(f"warning: {spec}: {warning}", err=True)
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
@where_options
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
@where_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--dev", is_flag=True, help="Flask's development server (debug off, one process).")
def serve(host: str, port: int, workers: int, threads: int, dev: bool) -> None:
    """Serve the study with gunicorn (or Flask's development server with --dev).

    gunicorn's control socket (gunicornc -s PATH) is <instance>/gunicorn-<port>.ctl.
    """
    from study.app import create_app
    from study.instance import instance_folder
    from study.wsgi import control_socket_path, ensure_port_free, run_gunicorn

    url = _database_url()
    _require_current(url)
    try:
        app = create_app({"HPRUNE_ENV": "development"} if dev else None)
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    ensure_port_free(host, port)
    click.echo(f"serving on http://{host}:{port}/ (database {_safe(url)})")
    if dev:
        app.run(host=host, port=port, debug=False, threaded=True)
        return
    control = control_socket_path(instance_folder(), port)
    click.echo(f"gunicorn control socket: {control}")
    run_gunicorn(
        app, bind=f"{host}:{port}", workers=workers, threads=threads, control_socket=control
    )


@study.command()
@where_options
@click.option("--study", "name", help="Study name (needed when the database holds several).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def export(name: str | None, out: Path, overwrite: bool) -> None:
    """Write the tidy responses (responses.csv, responses.parquet, codebook.json), the
    participant ledger (participants.csv, .parquet, participants_codebook.json: Prolific ids,
    outcome, completion code) and the Prolific approvals (prolific_approvals.csv,
    prolific_bulk_approve.json): docs/study-specs.md."""
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
@where_options
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
@where_options
@click.option("--username", required=True)
@click.option(
    "--generate",
    is_flag=True,
    help="Make up a temporary password and print it: it works for the first login only, "
    "where the dashboard asks for a new one.",
)
@click.option("--reset", is_flag=True, help="Set a new password if the user exists (logs it out).")
@click.option(
    "--exist-ok", is_flag=True, help="Leave an existing user as it is (its password unchanged)."
)
def admin_create(username: str, generate: bool, reset: bool, exist_ok: bool) -> None:
    """Create a dashboard login (the password is stored hashed). A typed password (or one
    line on stdin) is kept; a --generate'd one is temporary."""
    from study.admins import MIN_PASSWORD_LENGTH, set_admin_password
    from study.db import Database

    if not 1 <= len(username) <= 100:
        raise UserError("the user name must have 1 to 100 characters")
    if generate:
        password = secrets.token_urlsafe(12)
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    url = _database_url()
    _require_current(url)
    db = Database(url)
    try:
        done = set_admin_password(
            db, username, password, reset=reset, temporary=generate, exist_ok=exist_ok
        )
    finally:
        db.dispose()
    if done == "kept":
        click.echo(f"admin {username!r} exists already in {_safe(url)}: password unchanged")
        return
    what = {"created": "created", "reset": "password reset, logged out everywhere"}[done]
    click.echo(f"admin {username!r} {what} in {_safe(url)}")
    if generate:
        click.echo(f"temporary password (first login only, then choose your own): {password}")
