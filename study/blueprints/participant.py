"""The participant's pages (screen check, consent, instructions, trials, end) and the images.

Opening the study link creates nobody: the arrival waits in the session cookie through the
screen check (so that a window too small, or a phone, is turned away before consent, with
Prolific's "return the study" advice), and the participant is created by their answer on the
consent page (``study.flow.identity``, which also says who may re-enter with a known id).
From then on every page looks the participant's phase up on the server and redirects to the
page of that phase, so reopening any link resumes exactly where the participant was.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from study.blueprints.common import (
    bound_participant,
    keep_arrival,
    load_participant,
    load_study,
    phase_url,
    remember,
    waiting_arrival,
)
from study.catalogue import catalogue
from study.flask_db import get_db
from study.flow import identity
from study.flow.errors import FlowError
from study.flow.identity import CLOSED, FINISHED_PHASES, Arrival
from study.flow.lifecycle import (
    finish_instructions,
    give_consent,
    given_code,
    pass_check,
    screen_refusal,
)
from study.models import Stimulus, Study, Trial
from study.spec import StudySpec

bp = Blueprint("participant", __name__)

# Always fullmatch: "$" also matches before a final newline, and "p01\n" is not "p01".
ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{10,40}")
ONE_YEAR = 365 * 24 * 3600
MALFORMED = "The study link is malformed; please use the link you were given."
INCOMPLETE = (
    "The study link from Prolific is incomplete: it needs STUDY_ID and SESSION_ID as well as "
    "PROLIFIC_PID. Please tell the researcher."
)
ANOTHER = (
    "This browser is already taking part in this study under another ID. Finish that session "
    "first, or open the link in another browser (or a private window)."
)
TAKEN = {
    "prolific": (
        "This Prolific ID has already started this study in another session. Please open the "
        "study from your own Prolific submission, in the browser you started with."
    ),
    "other": (
        "This participant ID has already started this study. To continue in this browser, "
        "open the resume link you were given when you started, or ask the researcher."
    ),
}
BAD_RESUME = "This resume link is not valid for this study. Please check it, or ask the researcher."


def _see_other(url: str):
    return redirect(url, code=303)


def _arrival_from(args) -> Arrival:
    """Who the study link says is arriving: Prolific, a lab id, or nobody in particular."""
    pid, lab_id, resume = args.get("PROLIFIC_PID"), args.get("id"), args.get("resume")
    study_id, session_id = args.get("STUDY_ID"), args.get("SESSION_ID")
    for value in (pid, lab_id, study_id, session_id):
        if value is not None and not ID_RE.fullmatch(value):
            raise FlowError(400, MALFORMED)
    if resume is not None and not SECRET_RE.fullmatch(resume):
        raise FlowError(400, MALFORMED)
    if pid is not None:
        if study_id is None or session_id is None:
            raise FlowError(400, INCOMPLETE)
        return Arrival("prolific", pid, study_id, session_id)
    if lab_id is not None:
        return Arrival("lab", f"lab:{lab_id}", resume=resume)
    return Arrival("anonymous", resume=resume)


@bp.get("/s/<key>")
def entry(key: str):
    """Arrival from Prolific (PROLIFIC_PID, STUDY_ID, SESSION_ID), a lab id (id, and resume to
    continue in another browser), a resume link (resume) or nobody."""
    with get_db().write() as db:
        study = load_study(db, key)
        who = _arrival_from(request.args)
        bound = bound_participant(db, key)
        if who.external_id is None and who.resume is None:
            if bound is not None:
                return _see_other(phase_url(key, bound.phase))
            return _welcome(key, study, who)
        known = identity.find(db, study.id, who)
        if known is not None and bound is not None and known.id == bound.id:
            return _see_other(phase_url(key, bound.phase))
        if bound is not None and bound.phase not in FINISHED_PHASES:
            raise FlowError(409, ANOTHER)
        if known is None:
            if who.external_id is None:
                raise FlowError(403, BAD_RESUME)
            return _welcome(key, study, who)
        if not identity.proves(known, who):
            raise FlowError(403, TAKEN["prolific" if known.source == "prolific" else "other"])
        remember(key, known)
        return _see_other(phase_url(key, known.phase))


def _welcome(key: str, study: Study, who: Arrival):
    """A new arrival: nothing is stored but the cookie, until the consent page is answered."""
    if study.status != "open":
        raise FlowError(410, CLOSED)
    keep_arrival(key, who)
    return _see_other(phase_url(key, "check"))


def _newest_spec(db: Session, key: str) -> StudySpec:
    return catalogue(db, identity.newest_version_id(db, load_study(db, key).id)).spec


def _screen_form() -> tuple[int, int, bool]:
    try:
        width, height = int(request.form["width"]), int(request.form["height"])
        touch = request.form.get("touch", "0")
        if not (0 <= width <= 100_000 and 0 <= height <= 100_000) or touch not in ("0", "1"):
            raise ValueError
    except (KeyError, ValueError):
        raise FlowError(400, "The screen check did not send a valid window size.") from None
    return width, height, touch == "1"


def _refused(key: str, spec: StudySpec, reason: str, source: str | None):
    return render_template(
        "refused.html", key=key, spec=spec, reason=reason, prolific=source == "prolific"
    ), 403


@bp.route("/s/<key>/check", methods=["GET", "POST"])
def check(key: str):
    """The screen check, before consent: a window too small, or a phone where the spec refuses
    them, is turned away before the participant has read or agreed to anything (and nothing
    is stored). A participant who arrived before the check came first takes it here last."""
    with get_db().write() as db:
        participant = bound_participant(db, key)
        if participant is None:
            who, screen = waiting_arrival(key)
            if request.method == "GET" and screen is not None:
                return _see_other(phase_url(key, "consent"))
            spec, source = _newest_spec(db, key), who.source
        elif participant.phase != "check":
            return _see_other(phase_url(key, participant.phase))
        else:
            spec, source = catalogue(db, participant.version_id).spec, None
        if request.method == "POST":
            width, height, touch = _screen_form()
            reason = screen_refusal(spec, width, height, touch, request.user_agent.string)
            if reason:
                return _refused(key, spec, reason, source)
            if participant is None:
                keep_arrival(key, who, [width, height])
                return _see_other(phase_url(key, "consent"))
            pass_check(db, participant, width, height)
            return _see_other(phase_url(key, participant.phase))
    return render_template("check.html", key=key, spec=spec)


@bp.route("/s/<key>/consent", methods=["GET", "POST"])
def consent(key: str):
    """The consent page; the answer creates the participant (agreed, or declined)."""
    decision = request.form.get("decision") if request.method == "POST" else None
    if request.method == "POST" and decision not in ("agree", "decline"):
        raise FlowError(400, "Please choose whether you agree to take part.")
    with get_db().write() as db:
        participant = bound_participant(db, key)
        if participant is not None:  # one who arrived before the check came first
            if participant.phase != "consent":
                return _see_other(phase_url(key, participant.phase))
            spec = catalogue(db, participant.version_id).spec
            if decision is not None:
                give_consent(db, participant, spec, agree=decision == "agree")
                return _see_other(phase_url(key, participant.phase))
            return render_template("consent.html", key=key, spec=spec)
        who, screen = waiting_arrival(key)
        if screen is None:
            return _see_other(phase_url(key, "check"))
        if decision is None:
            spec = _newest_spec(db, key)
            return render_template("consent.html", key=key, spec=spec)
        created = identity.create(
            db,
            load_study(db, key),
            who,
            agree=decision == "agree",
            viewport=(screen[0], screen[1]),
            user_agent=request.user_agent.string,
            random_seed=current_app.config.get("RANDOM_SEED"),
        )
        if not created.new and not identity.proves(created.participant, who):
            # the same id consented a moment before in another browser
            raise FlowError(403, TAKEN["prolific" if who.source == "prolific" else "other"])
        remember(key, created.participant)
        if created.resume_secret is not None:
            _show_resume_link(key, who, created.resume_secret)
        return _see_other(phase_url(key, created.participant.phase))


def _show_resume_link(key: str, who: Arrival, secret: str) -> None:
    """Keep the resume link in the cookie, for the instructions page to show."""
    params = {"resume": secret}
    if who.source == "lab":
        params = {"id": who.external_id.removeprefix("lab:"), **params}
    links = dict(session.get("resume", {}))
    links[key] = url_for("participant.entry", key=key, _external=True, **params)
    session["resume"] = links


def _page(key: str, phase: str, post=None, **context):
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
    return render_template(f"{phase}.html", key=key, spec=spec, participant=participant, **context)


@bp.route("/s/<key>/instructions", methods=["GET", "POST"])
def instructions(key: str):
    resume_link = session.get("resume", {}).get(key)
    return _page(
        key,
        "instructions",
        lambda db, p, spec: finish_instructions(db, p, spec),
        resume_link=resume_link,
    )


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
        code = given_code(db, participant)
    link = spec.completion_link(code) if code else None
    return render_template(
        "end.html", key=key, spec=spec, outcome=participant.outcome, code=code, link=link
    )


# --- images ----------------------------------------------------------------------------------


def _image_path(token: str) -> str | None:
    """The served copy a trial's image token shows (``study.media``): attention trials show
    the image's second copy, so that a repeat does not bring back the bytes of the trial it
    repeats. None for an unknown token, or a trial the scheduler has yet to fill."""
    shown = or_(
        (Trial.left_token == token) & (Stimulus.id == Trial.left_id),
        (Trial.right_token == token) & (Stimulus.id == Trial.right_id),
    )
    with get_db().read() as db:
        row = db.execute(
            select(Trial.check, Stimulus.media_path, Stimulus.check_media_path)
            .join(Stimulus, shown)
            .where(or_(Trial.left_token == token, Trial.right_token == token))
        ).first()
    if row is None:
        return None
    return (row.check_media_path or row.media_path) if row.check else row.media_path


def _etag(token: str, media_path: str) -> str:
    """An opaque ETag: keyed by the server's secret, so it matches no manifest hash, and it
    differs between the tokens of two trials that show the same copy."""
    key = current_app.config["SECRET_KEY"]
    key = key.encode() if isinstance(key, str) else key
    return hmac.new(key, f"image\n{token}\n{media_path}".encode(), hashlib.sha256).hexdigest()[:32]


@bp.get("/i/<token>")
def image(token: str):
    """A trial's image under its token: strong opaque ETag, cached for a year."""
    media_path = _image_path(token) if TOKEN_RE.fullmatch(token) else None
    if media_path is None:
        raise FlowError(404, "There is no such image.")
    etag = _etag(token, media_path)
    accel = current_app.config["X_ACCEL_REDIRECT"]
    if accel:
        response = Response(mimetype="image/png")
        response.headers["X-Accel-Redirect"] = f"{accel.rstrip('/')}/{media_path}"
        response.set_etag(etag)
        response = response.make_conditional(request)
        if response.status_code == 304:  # nothing for nginx to send
            del response.headers["X-Accel-Redirect"]
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
            etag=etag,
            conditional=True,
            max_age=ONE_YEAR,
        )
    response.headers["Content-Disposition"] = f'inline; filename="{token}.png"'
    response.cache_control.public = True
    response.cache_control.max_age = ONE_YEAR
    response.cache_control.immutable = True
    return response
