"""What the participant pages and the JSON API share: finding the study, the participant the
session cookie names, and an arrival that has not consented yet."""

from __future__ import annotations

import re

from flask import session, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from study.catalogue import study_id_of
from study.flow import rows
from study.flow.errors import FlowError
from study.flow.identity import Arrival
from study.flow.lifecycle import expire_if_late
from study.flow.rows import ParticipantRow
from study.models import Participant, Study

KEY_RE = re.compile(r"[A-Za-z0-9_-]{4,32}")  # always fullmatch: "$" would let "key\n" through
NO_STUDY = "There is no such study. Please check the link you were given."
NOT_STARTED = "Your session has not started: please open the study link again."
PHASE_ENDPOINT = {
    "check": "participant.check",
    "consent": "participant.consent",
    "instructions": "participant.instructions",
    "trials": "participant.trials",
    "end": "participant.end",
    "declined": "participant.end",
}


def load_study(db: Session, key: str) -> Study:
    study = (
        db.scalar(select(Study).where(Study.public_key == key)) if KEY_RE.fullmatch(key) else None
    )
    if study is None:
        raise FlowError(404, NO_STUDY)
    return study


def remember(key: str, participant: Participant | ParticipantRow) -> None:
    """Bind the participant to this browser's session cookie (one participant per study)."""
    known = dict(session.get("p", {}))
    known[key] = participant.public_id
    session["p"] = known
    forget_arrival(key)
    session.permanent = True


def arrival(key: str) -> tuple[Arrival | None, list[int] | None]:
    """The arrival waiting in this browser to consent to study ``key``, and the window size
    its screen check passed with (None before the check)."""
    data = session.get("arrivals", {}).get(key)
    found = Arrival.from_cookie(data)
    screen = data.get("screen") if found is not None else None
    valid = isinstance(screen, list) and len(screen) == 2 and all(type(v) is int for v in screen)
    return found, screen if valid else None


def waiting_arrival(key: str) -> tuple[Arrival, list[int] | None]:
    """:func:`arrival`, which must be there (403 otherwise: the link was not opened here)."""
    who, screen = arrival(key)
    if who is None:
        raise FlowError(403, NOT_STARTED)
    return who, screen


def keep_arrival(key: str, who: Arrival, screen: list[int] | None = None) -> None:
    waiting = dict(session.get("arrivals", {}))
    waiting[key] = who.to_cookie() | ({"screen": screen} if screen else {})
    session["arrivals"] = waiting


def forget_arrival(key: str) -> None:
    if key in session.get("arrivals", {}):
        session["arrivals"] = {k: v for k, v in session["arrivals"].items() if k != key}


def bound_participant(db: Session, key: str) -> ParticipantRow | None:
    """The session's participant of study ``key``, locked, time limit applied (None if none;
    404 for an unknown study)."""
    study_id = study_id_of(db, key) if KEY_RE.fullmatch(key) else None
    if study_id is None:
        raise FlowError(404, NO_STUDY)
    public_id = session.get("p", {}).get(key)
    participant = (
        rows.load_participant(db, study_id, public_id) if isinstance(public_id, str) else None
    )
    if participant is not None:
        expire_if_late(db, participant)
    return participant


def load_participant(db: Session, key: str) -> ParticipantRow:
    """The session's participant of study ``key``, locked for this transaction, time limit
    applied (404 for an unknown study, 403 without a participant)."""
    participant = bound_participant(db, key)
    if participant is None:
        raise FlowError(403, NOT_STARTED)
    return participant


def phase_url(key: str, phase: str) -> str:
    return url_for(PHASE_ENDPOINT[phase], key=key)
