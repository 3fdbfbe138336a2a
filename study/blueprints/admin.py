"""The researcher's side: password login, per-study dashboard, open/close, export download."""

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
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.security import check_password_hash
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length, Regexp

from hprune.contracts.responses import write_responses
from study import admins, dashboard
from study.export import frame_from_session
from study.flask_db import get_db
from study.models import Admin, Study, utcnow

bp = Blueprint("admin", __name__, url_prefix="/admin")
NO_NUL = Regexp(r"^[^\x00]*$", message="Invalid characters.")


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=100), NO_NUL])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200), NO_NUL])


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not isinstance(session.get("admin"), int):
            return redirect(url_for("admin.login", next=request.path), code=303)
        return view(*args, **kwargs)

    return wrapped


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Password login, rate limited per client address and per user name (study.admins)."""
    form = LoginForm()
    error, status, headers = None, 200, {}
    if form.validate_on_submit():
        now, address = utcnow(), request.remote_addr or "unknown"
        username = form.username.data
        with get_db().write() as db:
            wait = admins.login_wait(db, username, address, now)
            if wait is not None:
                minutes = max(1, math.ceil(wait.total_seconds() / 60))
                error = f"Too many failed logins: try again in {minutes} minute(s)."
                status, headers = 429, {"Retry-After": str(math.ceil(wait.total_seconds()))}
            else:
                admin = db.scalar(select(Admin).where(Admin.username == username))
                if admin and check_password_hash(admin.password_hash, form.password.data):
                    admin.last_login_at = now
                    admins.clear_failures(db, username, address)
                    session.clear()  # a fresh session (and CSRF secret) for the logged-in admin
                    session["admin"] = admin.id
                    session.permanent = True
                    target = request.args.get("next", "")
                    if not target.startswith("/admin") or target.startswith("//"):
                        target = url_for("admin.studies")
                    return redirect(target, code=303)
                admins.record_failure(db, username, address, now)
                error, status = "Wrong user name or password.", 401
    return render_template("admin/login.html", form=form, error=error), status, headers


@bp.post("/logout")
def logout():
    session.pop("admin", None)
    return redirect(url_for("admin.login"), code=303)


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
    with get_db().read() as db:
        study = _study(db, study_id)
        name = study.name
        frame = frame_from_session(db, name)
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(buffer, "w") as archive:
        write_responses(frame, Path(tmp))
        for path in sorted(Path(tmp).iterdir()):
            archive.write(path, f"{name}/{path.name}")
    buffer.seek(0)
    return send_file(
        buffer,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"{name}-responses.zip",
    )
