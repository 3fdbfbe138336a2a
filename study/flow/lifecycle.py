"""A participant's way in and out: entering, consent, instructions, the screen check (which
assigns the trials) and finishing, with the time limit."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from study import tallies
from study.catalogue import catalogue
from study.flow.errors import FlowError
from study.flow.planning import assign
from study.flow.rows import ACTIVE_PHASES, ParticipantRow, change, new_token
from study.flow.study_lock import lock_study
from study.models import Participant, Study, StudyVersion, utcnow
from study.spec import StudySpec

MOBILE_UA = re.compile(r"Mobi|Android|iPhone|iPad|iPod|Opera Mini|IEMobile", re.IGNORECASE)
EXCLUDED_OUTCOMES = ("failed_attention", "timed_out", "declined")


def latest_version(session: Session, study: Study) -> StudyVersion:
    return session.scalars(
        select(StudyVersion)
        .where(StudyVersion.study_id == study.id)
        .order_by(StudyVersion.number.desc())
        .limit(1)
    ).one()


def enter(
    session: Session,
    study: Study,
    *,
    external_id: str,
    source: str,
    prolific_study_id: str | None = None,
    prolific_session_id: str | None = None,
    user_agent: str | None = None,
) -> Participant:
    """The participant with this id in this study, created on first arrival."""
    query = select(Participant).where(
        Participant.study_id == study.id, Participant.external_id == external_id
    )
    participant = session.scalar(query.with_for_update(key_share=True))
    if participant is not None:
        participant.last_seen_at = utcnow()
        return participant
    if study.status != "open":
        raise FlowError(410, "This study is not accepting participants any more.")
    participant = Participant(
        public_id=new_token(),
        study_id=study.id,
        version_id=latest_version(session, study).id,
        external_id=external_id,
        source=source,
        prolific_study_id=prolific_study_id,
        prolific_session_id=prolific_session_id,
        phase="consent",
        order_seed=secrets.randbits(62),
        user_agent=(user_agent or "")[:400],
    )
    try:
        with session.begin_nested():
            session.add(participant)
    except IntegrityError:  # the same person arrived twice at once (two tabs): use the first
        participant = session.scalar(query.with_for_update(key_share=True))
    return participant


def finish(session: Session, participant: ParticipantRow, outcome: str, now=None) -> None:
    """End the session with ``outcome``; a participant who drops out stops counting."""
    counted = participant.phase == "trials"
    phase = "end" if outcome != "declined" else "declined"
    change(session, participant, phase=phase, outcome=outcome, finished_at=now or utcnow())
    if outcome in EXCLUDED_OUTCOMES and counted:
        lock_study(session, participant.study_id)
        tallies.subtract_participants(session, participant.study_id, [participant.id])


def is_late(participant: ParticipantRow, now: datetime) -> bool:
    return (
        participant.phase in ACTIVE_PHASES
        and participant.deadline_at is not None
        and now > participant.deadline_at
    )


def expire_if_late(session: Session, participant: ParticipantRow, now=None) -> bool:
    """Move a participant past their time limit to the end (timed out). True if it happened."""
    now = now or utcnow()
    if is_late(participant, now):
        finish(session, participant, "timed_out", now)
        return True
    return False


def complete(session: Session, participant: ParticipantRow) -> None:
    """Every trial answered: the participant gets the completion code."""
    if participant.phase == "trials":
        finish(session, participant, "completed")


def give_consent(
    session: Session, participant: ParticipantRow, spec: StudySpec, agree: bool
) -> None:
    if participant.phase != "consent":
        return  # a repeated form post: nothing to do, the caller redirects to the current phase
    now = utcnow()
    if not agree:
        finish(session, participant, "declined", now)
        return
    deadline = now + timedelta(minutes=spec.time_limit_minutes) if spec.time_limit_minutes else None
    change(
        session, participant, phase="instructions", consented_at=now,
        consent_version=spec.consent.version, deadline_at=deadline,
    )  # fmt: skip


def finish_instructions(session: Session, participant: ParticipantRow, spec: StudySpec) -> None:
    if participant.phase == "instructions":
        change(session, participant, phase="check", instructions_version=spec.instructions.version)


def screen_refusal(
    spec: StudySpec, width: int, height: int, touch: bool, user_agent: str
) -> str | None:
    """Why this screen cannot take part, or None."""
    if spec.refuse_mobile and (touch or MOBILE_UA.search(user_agent or "")):
        return (
            "This study needs a desktop or laptop computer; it cannot be done on a phone or tablet."
        )
    if width < spec.min_width or height < spec.min_height:
        return (
            f"Your browser window is too small ({width}x{height}). This study needs at least "
            f"{spec.min_width}x{spec.min_height}: enlarge the window (or zoom out) and try again."
        )
    return None


def pass_check(session: Session, participant: ParticipantRow, width: int, height: int) -> None:
    if participant.phase != "check":
        return
    assign(session, participant, catalogue(session, participant.version_id))
    change(session, participant, phase="trials", viewport_width=width, viewport_height=height)
