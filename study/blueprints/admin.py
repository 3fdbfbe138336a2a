"""The researcher's side: password login, per-study dashboard, open/close, export download.

Sessions, passwords and the login rate limit are :mod:`study.admins`. Every admin response is
``Cache-Control: no-store``: the dashboard, the participants' ids and the export must not stay
in a browser's or a proxy's cache.
"""

from __future__ import annotations

import functools
import io
import math
import tempfile
import zipfile
from pathlib import Path

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Regexp

from study import admins, dashboard
from study.export import write_study_files
from study.flask_db import get_db
from study.models import Admin, Study, utcnow

bp = Blueprint("admin", __name__, url_prefix="/admin")
NO_NUL = Regexp(r"^[^\x00]*$", message="Invalid characters.")
SESSION_KEY = "admin_token"


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=100), NO_NUL])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200), NO_NUL])


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=200)])
    new = PasswordField(
        "New password",
        validators=[DataRequired(), Length(min=admins.MIN_PASSWORD_LENGTH, max=200), NO_NUL],
    )
    confirm = PasswordField(
        "New password again", validators=[DataRequired(), EqualTo("new", "The two differ.")]
    )


@bp.after_request
def no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


def _session_admin(db):
    config = current_app.config
    return admins.find_session(
        db,
        session.get(SESSION_KEY),
        utcnow(),
        idle=config["ADMIN_IDLE_TIMEOUT"],
        lifetime=config["ADMIN_SESSION_LIFETIME"],
    )


def login_required(view):
    """The view for a logged-in admin (``g.admin_id``); a temporary password is changed first."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        with get_db().write() as db:
            admin = _session_admin(db)
            must_change = admin is not None and admin.must_change_password
            g.admin_id = admin.id if admin is not None else None
        if admin is None:
            session.pop(SESSION_KEY, None)
            return redirect(url_for("admin.login", next=request.path), code=303)
        if must_change and request.endpoint not in ("admin.password", "admin.logout"):
            return redirect(url_for("admin.password"), code=303)
        return view(*args, **kwargs)

    return wrapped


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Password login, rate limited per client address and per user name (study.admins)."""
    form = LoginForm()
    error, status, headers = None, 200, {}
    if form.validate_on_submit():
        now, address = utcnow(), request.remote_addr or "unknown"
        db = get_db()
        attempt = admins.begin_attempt(db, form.username.data, address, now)
        if not isinstance(attempt, admins.Attempt):
            seconds = attempt.total_seconds()
            error = (
                f"Too many failed logins: try again in {max(1, math.ceil(seconds / 60))} minute(s)."
            )
            status, headers = 429, {"Retry-After": str(math.ceil(seconds))}
        elif admins.password_matches(attempt.password_hash, form.password.data):
            token = admins.succeed(db, attempt, address, now)
            session.clear()  # a fresh session (and CSRF secret) for the logged-in admin
            session[SESSION_KEY] = token
            session.permanent = True
            target = request.args.get("next", "")
            if not target.startswith("/admin") or target.startswith("//"):
                target = url_for("admin.studies")
            return redirect(target, code=303)
        else:
            error, status = "Wrong user name or password.", 401
    return render_template("admin/login.html", form=form, error=error), status, headers


@bp.post("/logout")
def logout():
    with get_db().write() as db:
        admins.end_session(db, session.get(SESSION_KEY))
    session.clear()
    return redirect(url_for("admin.login"), code=303)


@bp.route("/password", methods=["GET", "POST"])
@login_required
def password():
    """Change the password (required after a temporary one); every other session ends."""
    form = PasswordForm()
    error = None
    if form.validate_on_submit():
        with get_db().write() as db:
            admin = db.get(Admin, g.admin_id)
            error = _new_password_problem(admin, form)
            if error is None:
                now = utcnow()
                admins.change_password(db, admin, form.new.data, now)
                token = admins.open_session(db, admin.id, now)
        if error is None:
            session.clear()
            session[SESSION_KEY] = token
            session.permanent = True
            return redirect(url_for("admin.studies"), code=303)
    elif request.method == "POST":
        error = " ".join(e for errors in form.errors.values() for e in errors)
    with get_db().read() as db:
        forced = db.get(Admin, g.admin_id).must_change_password
    page = render_template("admin/password.html", form=form, error=error, forced=forced)
    return page, 400 if error else 200


def _new_password_problem(admin: Admin, form: PasswordForm) -> str | None:
    if not admins.password_matches(admin.password_hash, form.current.data):
        return "The current password is wrong."
    if form.new.data == form.current.data:
        return "Choose a password other than the current one."
    return None


@bp.get("/")
@login_required
def studies():
    with get_db().read() as db:
        now = utcnow()
        rows = [
            (study, dashboard.participant_counts(db, study, now))
            for study in db.scalars(select(Study).order_by(Study.created_at))
        ]
    return render_template("admin/studies.html", rows=rows)


def _study(db, study_id: int) -> Study:
    study = db.get(Study, study_id)
    if study is None:
        abort(404)
    return study


@bp.get("/study/<int:study_id>")
@login_required
def study(study_id: int):
    with get_db().read() as db:
        board = dashboard.build(db, _study(db, study_id))
        versions = [(v.number, v.created_at) for v in board.study.versions]
        return render_template("admin/study.html", board=board, versions=versions)


@bp.post("/study/<int:study_id>/status")
@login_required
def set_status(study_id: int):
    status = request.form.get("status")
    if status not in ("open", "closed"):
        abort(400)
    with get_db().write() as db:
        _study(db, study_id).status = status
    return redirect(url_for("admin.study", study_id=study_id), code=303)


@bp.get("/study/<int:study_id>/export.zip")
@login_required
def export(study_id: int):
    """The same files as ``hprune study export``, zipped in a folder named after the study."""
    db = get_db()
    with db.read() as session_:
        name = _study(session_, study_id).name
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(buffer, "w") as archive:
        write_study_files(db, Path(tmp), study=name)
        for path in sorted(Path(tmp).iterdir()):
            archive.write(path, f"{name}/{path.name}")
    buffer.seek(0)
    return send_file(
        buffer,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"{name}-export.zip",
    )
