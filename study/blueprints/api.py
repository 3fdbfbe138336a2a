"""The trials as JSON (docs/study-api.md): the current trial, and answers to it.

Nothing in a response names a variant, a model or a file: images are referred to by their
opaque tokens, trials by random ids, and attention trials look like any other trial.
"""

from __future__ import annotations

import json
import math
import re

from flask import Blueprint, current_app, jsonify, request, url_for
from flask_wtf.csrf import generate_csrf
from sqlalchemy import select
from sqlalchemy.orm import Session

from study.app import get_db
from study.blueprints.common import load_participant, load_study, phase_url
from study.flow import (
    FlowError,
    Submitted,
    complete,
    current_trial,
    next_trial_after,
    progress,
    record_answer,
    spec_of,
)
from study.models import Participant, Stimulus, Trial
from study.spec import StudySpec

bp = Blueprint("api", __name__, url_prefix="/api/s/<key>")

MAX_RT_MS = 24 * 3600 * 1000
TRIAL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _stimulus_facts(db: Session, stimulus_id: int) -> tuple[str, str]:
    """(token, prompt) of a stimulus; cached per process, since neither ever changes."""
    cache = current_app.extensions.setdefault("hprune_stimulus_cache", {})
    facts = cache.get(stimulus_id)
    if facts is None:
        row = db.execute(
            select(Stimulus.token, Stimulus.prompt).where(Stimulus.id == stimulus_id)
        ).one()
        facts = cache[stimulus_id] = (row.token, row.prompt)
    return facts


def _image_url(db: Session, stimulus_id: int | None) -> str | None:
    if stimulus_id is None:
        return None
    return url_for("participant.image", token=_stimulus_facts(db, stimulus_id)[0])


def _trial_json(db: Session, trial: Trial, spec: StudySpec) -> dict:
    criterion = spec.criterion(trial.criterion)
    body = {
        "id": trial.public_id,
        "practice": trial.kind == "practice",
        "kind": trial.presentation,
        "question": criterion.question,
        "prompt": _stimulus_facts(db, trial.left_id)[1] if criterion.show_prompt else None,
    }
    if trial.presentation == "rating":
        body["images"] = {"image": _image_url(db, trial.left_id)}
        body["scale"] = {
            "min": min(spec.scale_labels),
            "max": max(spec.scale_labels),
            "labels": {str(k): v for k, v in sorted(spec.scale_labels.items())},
        }
    else:
        body["images"] = {
            "left": _image_url(db, trial.left_id),
            "right": _image_url(db, trial.right_id),
        }
        body["tie"] = spec.tie
    return body


def state_json(db: Session, key: str, participant: Participant) -> dict:
    """The participant's current trial, or where to go instead."""
    body: dict = {"phase": participant.phase, "csrf_token": generate_csrf()}
    spec = spec_of(participant.version)
    trial = current_trial(db, participant, spec) if participant.phase == "trials" else None
    if participant.phase == "trials" and trial is None:
        complete(participant)
        body["phase"] = participant.phase
    if trial is None:
        body["redirect"] = phase_url(key, participant.phase)
        return body
    body["trial"] = _trial_json(db, trial, spec)
    body["progress"] = progress(db, participant)
    following = next_trial_after(db, trial)
    body["preload"] = [
        url
        for url in (
            _image_url(db, following.left_id) if following else None,
            _image_url(db, following.right_id) if following else None,
        )
        if url
    ]
    return body


@bp.get("/session")
def session_state(key: str):
    with get_db().write() as db:
        participant = load_participant(db, load_study(db, key))
        return jsonify(
            phase=participant.phase, csrf_token=generate_csrf(), progress=progress(db, participant)
        )


@bp.get("/trial")
def trial(key: str):
    with get_db().write() as db:
        participant = load_participant(db, load_study(db, key))
        return jsonify(state_json(db, key, participant))


def _parse_answer() -> tuple[str, Submitted]:
    raw = request.get_data(cache=True)
    if len(raw) > current_app.config["ANSWER_MAX_BYTES"]:
        raise FlowError(413, "The answer is too large.")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise FlowError(400, "The answer must be a JSON object.") from None
    if not isinstance(data, dict) or set(data) - {"trial", "choice", "rating", "rt_ms"}:
        raise FlowError(400, "The answer takes the fields trial, choice or rating, and rt_ms.")
    trial_id, choice, rating, rt_ms = (data.get(k) for k in ("trial", "choice", "rating", "rt_ms"))
    if not isinstance(trial_id, str) or not trial_id:
        raise FlowError(400, "The answer needs the trial id it answers.")
    if not TRIAL_ID_RE.match(trial_id):
        raise FlowError(404, "There is no such trial in your session.")
    if choice is not None and not isinstance(choice, str):
        raise FlowError(400, "The choice must be left, right or tie.")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int)):
        raise FlowError(400, "The rating must be a whole number.")
    if (
        isinstance(rt_ms, bool)
        or not isinstance(rt_ms, int | float)
        or not math.isfinite(rt_ms)
        or not 0 <= rt_ms < MAX_RT_MS
    ):
        raise FlowError(400, "rt_ms must be the response time in milliseconds.")
    return trial_id, Submitted(choice=choice, rating=rating, rt_ms=float(rt_ms))


@bp.post("/answer")
def answer(key: str):
    trial_id, submitted = _parse_answer()
    with get_db().write() as db:
        participant = load_participant(db, load_study(db, key))
        if participant.outcome == "timed_out":  # committed, so the end page shows the code
            late = {"error": "The time limit for this study has passed."}
            late["redirect"] = phase_url(key, participant.phase)
        else:
            late = None
            spec = spec_of(participant.version)
            status = record_answer(db, participant, spec, trial_id, submitted)
            body = {"status": status, **state_json(db, key, participant)}
    if late:
        return jsonify(late), 410
    return jsonify(body)
