"""What the participant pages and the JSON API share: finding the study and the participant."""

from __future__ import annotations

import re

from flask import session, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from study.catalogue import study_id_of
from study.flow import rows
from study.flow.errors import FlowError
from study.flow.lifecycle import expire_if_late
from study.flow.rows import ParticipantRow
from study.models import Participant, Study

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{4,32}$")
NO_STUDY = "There is no such study. Please check the link you were given."
PHASE_ENDPOINT = {
    "consent": "participant.consent",
    "instructions": "participant.instructions",
    "check": "participant.check",
    "trials": "participant.trials",
    "end": "participant.end",
    "declined": "participant.end",
}


def load_study(db: Session, key: str) -> Study:
    study = db.scalar(select(Study).where(Study.public_key == key)) if KEY_RE.match(key) else None
    if study is None:
        raise FlowError(404, NO_STUDY)
    return study


def remember(key: str, participant: Participant | ParticipantRow) -> None:
    """Bind the participant to this browser's session cookie (one participant per study)."""
    known = dict(session.get("p", {}))
    known[key] = participant.public_id
    session["p"] = known
    session.permanent = True


def load_participant(db: Session, key: str) -> ParticipantRow:
    """The session's participant of study ``key``, locked for this transaction, time limit
    applied (404 for an unknown study, 403 without a participant)."""
    study_id = study_id_of(db, key) if KEY_RE.match(key) else None
    if study_id is None:
        raise FlowError(404, NO_STUDY)
    public_id = session.get("p", {}).get(key)
    participant = None
    if isinstance(public_id, str):
        participant = rows.load_participant(db, study_id, public_id)
    if participant is None:
        raise FlowError(403, "Your session has not started: please open the study link again.")
    expire_if_late(db, participant)
    return participant


def phase_url(key: str, phase: str) -> str:
    return url_for(PHASE_ENDPOINT[phase], key=key)
