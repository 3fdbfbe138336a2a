"""What the participant pages and the JSON API share: finding the study and the participant."""

from __future__ import annotations

import re

from flask import session, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from study.flow import FlowError, expire_if_late
from study.models import Participant, Study, utcnow

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{4,32}$")
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
        raise FlowError(404, "There is no such study. Please check the link you were given.")
    return study


def remember(key: str, participant: Participant) -> None:
    """Bind the participant to this browser's session cookie (one participant per study)."""
    known = dict(session.get("p", {}))
    known[key] = participant.public_id
    session["p"] = known
    session.permanent = True


def load_participant(db: Session, study: Study) -> Participant:
    """The session's participant of ``study``, locked for this transaction, time limit applied."""
    public_id = session.get("p", {}).get(study.public_key)
    participant = None
    if isinstance(public_id, str):
        participant = db.scalar(
            select(Participant)
            .where(Participant.public_id == public_id, Participant.study_id == study.id)
            .with_for_update(key_share=True)
        )
    if participant is None:
        raise FlowError(403, "Your session has not started: please open the study link again.")
    participant.last_seen_at = utcnow()
    expire_if_late(participant)
    return participant


def phase_url(key: str, phase: str) -> str:
    return url_for(PHASE_ENDPOINT[phase], key=key)
