"""The trials as JSON (docs/study-api.md): the current trial, and answers to it.

Nothing in a response names a variant, a model or a file: images are referred to by tokens
of the trial they belong to (fresh for every trial), trials by random ids, and attention
trials look like any other trial.
"""

from __future__ import annotations

import json
import re

from flask import Blueprint, current_app, jsonify, request, url_for
from flask_wtf.csrf import generate_csrf

from study.blueprints.common import (
    bound_participant,
    load_participant,
    phase_url,
    waiting_arrival,
)
from study.catalogue import Catalogue, catalogue
from study.flask_db import get_db
from study.flow.answering import Submitted, record_answer
from study.flow.errors import FlowError
from study.flow.lifecycle import complete
from study.flow.rows import ParticipantRow, TrialRow, load_trials
from study.flow.trials import current_trial, following, progress

bp = Blueprint("api", __name__, url_prefix="/api/s/<key>")

MAX_RT_MS = 24 * 3600 * 1000
MAX_NUMBER_DIGITS = 20
TRIAL_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
LOAD_FIELDS = {"trial", "choice", "rating", "rt_ms", "load_ms"}


def _image_urls(trial: TrialRow) -> list[str]:
    """The URLs of the trial's images (none before the scheduler has filled it)."""
    if trial.left_id is None:
        return []
    tokens = (trial.left_token, trial.right_token if trial.right_id is not None else None)
    return [url_for("participant.image", token=t) for t in tokens if t]


def _trial_json(cat: Catalogue, trial: TrialRow) -> dict:
    spec = cat.spec
    criterion = spec.criterion(trial.criterion)
    urls = _image_urls(trial)
    body = {
        "id": trial.public_id,
        "practice": trial.kind == "practice",
        "kind": trial.presentation,
        "question": criterion.question,
        "prompt": cat.stimuli[trial.left_id].prompt if criterion.show_prompt else None,
        "min_display_ms": trial.min_display_ms or 0,
    }
    if trial.presentation == "rating":
        body["images"] = {"image": urls[0]}
        body["scale"] = {
            "min": min(spec.scale_labels),
            "max": max(spec.scale_labels),
            "labels": {str(k): v for k, v in sorted(spec.scale_labels.items())},
        }
    else:
        body["images"] = {"left": urls[0], "right": urls[1]}
        body["tie"] = spec.tie
    return body


def state_json(
    key: str,
    participant: ParticipantRow,
    cat: Catalogue,
    trials: list[TrialRow],
    current: TrialRow | None,
) -> dict:
    """The participant's current trial, or where to go instead."""
    body: dict = {"phase": participant.phase, "csrf_token": generate_csrf()}
    if current is None:
        body["redirect"] = phase_url(key, participant.phase)
        return body
    body["trial"] = _trial_json(cat, current)
    body["progress"] = progress(trials)
    after = following(trials, current)
    body["preload"] = _image_urls(after) if after else []
    return body


@bp.get("/session")
def session_state(key: str):
    """The participant's phase, or that of an arrival who has not consented yet (``check``
    or ``consent``), with the CSRF token for the pages' forms."""
    with get_db().write() as db:
        participant = bound_participant(db, key)
        if participant is None:
            _, screen = waiting_arrival(key)
            phase = "check" if screen is None else "consent"
            return jsonify(phase=phase, csrf_token=generate_csrf())
        trials = load_trials(db, participant)
        return jsonify(
            phase=participant.phase, csrf_token=generate_csrf(), progress=progress(trials)
        )


def _current(key: str) -> dict:
    """The participant's current trial, filled (by the scheduler if need be) and marked shown.

    Nothing here records what a participant said, so the transaction need not be durable
    (study.db.Database.write): a trial lost with a crashed database is simply filled again.
    """
    with get_db().write(durable=False) as db:
        participant = load_participant(db, key)
        cat = catalogue(db, participant.version_id)
        trials, current = [], None
        if participant.phase == "trials":
            trials = load_trials(db, participant)
            current = current_trial(db, participant, cat, trials)
            if current is None:
                complete(db, participant)
    return state_json(key, participant, cat, trials, current)


@bp.get("/trial")
def trial(key: str):
    return jsonify(_current(key))


def _bounded_int(text: str) -> int:
    """A JSON integer of at most ``MAX_NUMBER_DIGITS`` digits: a longer one is no time, rating
    or id anyone sends, and Python would spend time on it or fail to make it a float."""
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ValueError("number too long")
    return int(text)


def _no_constant(text: str):
    raise ValueError(f"{text} is not JSON")


def parse_json(raw: bytes):
    """The JSON of a request body, or a 400 for anything malformed: bad bytes or syntax,
    NaN/Infinity, integers of more than ``MAX_NUMBER_DIGITS`` digits, and nesting deeper than
    Python's parser recurses (a ``RecursionError``, which would otherwise be a 500)."""
    try:
        return json.loads(raw, parse_int=_bounded_int, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise FlowError(400, "The answer must be a JSON object.") from None


def _parse_answer() -> tuple[str, Submitted]:
    raw = request.get_data(cache=True)
    if len(raw) > current_app.config["ANSWER_MAX_BYTES"]:
        raise FlowError(413, "The answer is too large.")
    data = parse_json(raw)
    if not isinstance(data, dict) or set(data) - LOAD_FIELDS:
        raise FlowError(
            400, "The answer takes the fields trial, choice or rating, rt_ms and load_ms."
        )
    trial_id, choice, rating, rt_ms, load_ms = (
        data.get(k) for k in ("trial", "choice", "rating", "rt_ms", "load_ms")
    )
    if not isinstance(trial_id, str) or not trial_id:
        raise FlowError(400, "The answer needs the trial id it answers.")
    if not TRIAL_ID_RE.fullmatch(trial_id):
        raise FlowError(404, "There is no such trial in your session.")
    if choice is not None and not isinstance(choice, str):
        raise FlowError(400, "The choice must be left, right or tie.")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int)):
        raise FlowError(400, "The rating must be a whole number.")
    if not _is_duration(rt_ms):
        raise FlowError(400, "rt_ms must be the response time in milliseconds.")
    if load_ms is not None and not _is_duration(load_ms):
        raise FlowError(400, "load_ms must be the images' loading time in milliseconds.")
    submitted = Submitted(
        choice=choice,
        rating=rating,
        rt_ms=float(rt_ms),
        load_ms=None if load_ms is None else float(load_ms),
    )
    return trial_id, submitted


def _is_duration(value) -> bool:
    """A number of milliseconds from 0 to a day. Compared, not converted first: NaN and
    infinities fail the comparison, and a huge integer is compared exactly."""
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value < MAX_RT_MS


@bp.post("/answer")
def answer(key: str):
    """Record the answer durably; the next trial comes in the same response. When the active
    scheduler has to choose it, that happens after the answer's commit, in a transaction of its
    own: the study lock it takes is then not held while the answer is flushed to disk."""
    trial_id, submitted = _parse_answer()
    db = get_db()
    with db.write() as session:
        participant = load_participant(session, key)
        if participant.outcome == "timed_out":  # committed, so the end page shows the code
            late = {"error": "The time limit for this study has passed."}
            late["redirect"] = phase_url(key, participant.phase)
        else:
            late = None
            cat = catalogue(session, participant.version_id)
            trials = load_trials(session, participant)
            status, current = record_answer(
                session, participant, cat, trials, trial_id, submitted,
                fill_active=db.is_sqlite,
            )  # fmt: skip
    if late:
        return jsonify(late), 410
    if current is not None and current.left_id is None:
        return jsonify(status=status, **_current(key))
    return jsonify(status=status, **state_json(key, participant, cat, trials, current))
