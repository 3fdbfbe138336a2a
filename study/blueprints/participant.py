"""The participant's pages (consent, instructions, screen check, trials, end) and the images.

Every page looks the participant's phase up on the server and redirects to the page of that
phase, so reopening any link resumes exactly where the participant was.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    send_file,
)
from sqlalchemy import select

from study.blueprints.common import load_participant, load_study, phase_url, remember
from study.catalogue import catalogue
from study.flask_db import get_db
from study.flow.errors import FlowError
from study.flow.lifecycle import (
    enter,
    finish_instructions,
    give_consent,
    pass_check,
    screen_refusal,
)
from study.models import Stimulus

bp = Blueprint("participant", __name__)

ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{10,40}$")
ONE_YEAR = 365 * 24 * 3600


def _see_other(url: str):
    return redirect(url, code=303)


@bp.get("/s/<key>")
def entry(key: str):
    """Arrival from Prolific (PROLIFIC_PID, STUDY_ID, SESSION_ID), a lab id (id) or nobody."""
    args = request.args
    pid, lab_id = args.get("PROLIFIC_PID"), args.get("id")
    for value in (pid, lab_id, args.get("STUDY_ID"), args.get("SESSION_ID")):
        if value is not None and not ID_RE.match(value):
            raise FlowError(400, "The study link is malformed; please use the link you were given.")
    with get_db().write() as db:
        study = load_study(db, key)
        if pid:
            external_id, source = pid, "prolific"
        elif lab_id:
            external_id, source = f"lab:{lab_id}", "lab"
        else:
            try:
                return _see_other(phase_url(key, load_participant(db, key).phase))
            except FlowError:
                external_id, source = f"anon:{secrets.token_urlsafe(12)}", "anonymous"
        participant = enter(
            db,
            study,
            external_id=external_id,
            source=source,
            prolific_study_id=args.get("STUDY_ID"),
            prolific_session_id=args.get("SESSION_ID"),
            user_agent=request.user_agent.string,
        )
        remember(key, participant)
        return _see_other(phase_url(key, participant.phase))


def _page(key: str, phase: str, post=None):
    """Run ``post`` (on POST) and render the phase's page, or redirect to the current phase.

    The page is rendered after the commit: on SQLite the transaction holds the write lock.
    """
    with get_db().write() as db:
        participant = load_participant(db, key)
        spec = catalogue(db, participant.version_id).spec
        if request.method == "POST" and post is not None and participant.phase == phase:
            result = post(db, participant, spec)
            if result is not None:
                return result
            return _see_other(phase_url(key, participant.phase))
        if participant.phase != phase:
            return _see_other(phase_url(key, participant.phase))
    return render_template(f"{phase}.html", key=key, spec=spec, participant=participant)


@bp.route("/s/<key>/consent", methods=["GET", "POST"])
def consent(key: str):
    def post(db, participant, spec):
        decision = request.form.get("decision")
        if decision not in ("agree", "decline"):
            raise FlowError(400, "Please choose whether you agree to take part.")
        give_consent(db, participant, spec, agree=decision == "agree")

    return _page(key, "consent", post)


@bp.route("/s/<key>/instructions", methods=["GET", "POST"])
def instructions(key: str):
    return _page(key, "instructions", lambda db, p, spec: finish_instructions(db, p, spec))


@bp.route("/s/<key>/check", methods=["GET", "POST"])
def check(key: str):
    def post(db, participant, spec):
        try:
            width, height = int(request.form["width"]), int(request.form["height"])
            touch = request.form.get("touch", "0")
            if not (0 <= width <= 100_000 and 0 <= height <= 100_000) or touch not in ("0", "1"):
                raise ValueError
        except (KeyError, ValueError):
            raise FlowError(400, "The screen check did not send a valid window size.") from None
        reason = screen_refusal(spec, width, height, touch == "1", request.user_agent.string)
        if reason:
            return render_template("refused.html", key=key, spec=spec, reason=reason), 403
        pass_check(db, participant, width, height)

    return _page(key, "check", post)


@bp.get("/s/<key>/trials")
def trials(key: str):
    return _page(key, "trials")


@bp.get("/s/<key>/end")
def end(key: str):
    with get_db().write() as db:
        participant = load_participant(db, key)
        if participant.phase not in ("end", "declined"):
            return _see_other(phase_url(key, participant.phase))
        spec = catalogue(db, participant.version_id).spec
    code = spec.completion_codes.get(participant.outcome or "")
    link = spec.completion_link(code) if code else None
    return render_template(
        "end.html", key=key, spec=spec, outcome=participant.outcome, code=code, link=link
    )


# --- images ----------------------------------------------------------------------------------


def _image_record(token: str) -> tuple[str, str] | None:
    """(media path, sha256) of a token; cached, since stored images never change."""
    cache = current_app.extensions.setdefault("hprune_image_cache", {})
    record = cache.get(token)
    if record is None:
        with get_db().read() as db:
            row = db.execute(
                select(Stimulus.media_path, Stimulus.sha256).where(Stimulus.token == token)
            ).first()
        if row is None:
            return None
        record = cache[token] = (row.media_path, row.sha256)
    return record


@bp.get("/i/<token>")
def image(token: str):
    """An image, byte for byte, under its opaque token: strong ETag, cached for a year."""
    record = TOKEN_RE.match(token) and _image_record(token)
    if not record:
        raise FlowError(404, "There is no such image.")
    media_path, sha256 = record
    accel = current_app.config["X_ACCEL_REDIRECT"]
    if accel:
        response = Response(mimetype="image/png")
        response.headers["X-Accel-Redirect"] = f"{accel.rstrip('/')}/{media_path}"
        response.set_etag(sha256)
        response = response.make_conditional(request)
    else:
        path = Path(current_app.config["MEDIA_DIR"]) / media_path
        try:
            handle = path.open("rb")
        except OSError:
            current_app.logger.error("image %s is missing from the media folder", token)
            raise FlowError(404, "There is no such image.") from None
        # A file object, not a path: no Last-Modified and no file name leave the server.
        response = send_file(
            handle,
            mimetype="image/png",
            download_name=f"{token}.png",
            etag=sha256,
            conditional=True,
            max_age=ONE_YEAR,
        )
    response.headers["Content-Disposition"] = f'inline; filename="{token}.png"'
    response.cache_control.public = True
    response.cache_control.max_age = ONE_YEAR
    response.cache_control.immutable = True
    return response
