"""A participant's way through the pages and out: the screen check, consent, the instructions
(after which the trials are assigned) and finishing, with the time limit.

New participants pass the screen check before the consent page and are created by their
answer to it (``study.flow.identity``); the ``consent`` and ``check`` phases stored in the
database are those of participants who arrived before (they took the check last), and
:func:`give_consent` and :func:`pass_check` let them finish the way they started.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from study import tallies
from study.catalogue import catalogue
from study.flow.planning import assign
from study.flow.rows import ACTIVE_PHASES, ParticipantRow, change
from study.flow.study_lock import lock_study
from study.models import Participant, utcnow
from study.spec import StudySpec

MOBILE_UA = re.compile(r"Mobi|Android|iPhone|iPad|iPod|Opera Mini|IEMobile", re.IGNORECASE)
EXCLUDED_OUTCOMES = ("failed_attention", "timed_out", "declined")


def finish(session: Session, participant: ParticipantRow, outcome: str, now=None) -> None:
    """End the session with ``outcome`` and the completion code for it (study.spec); a
    participant who drops out stops counting."""
    counted = participant.phase == "trials"
    phase = "end" if outcome != "declined" else "declined"
    code = _code_for(session, participant, outcome)
    change(
        session, participant, phase=phase, outcome=outcome, finished_at=now or utcnow(),
        completion_code=code,
    )  # fmt: skip
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


def _code_for(session: Session, participant: ParticipantRow, outcome: str) -> str | None:
    """A completion code for ``outcome``: the spec's own for a Prolific participant, with a
    suffix of their own for anyone else (study.spec)."""
    source, simulated = session.execute(
        select(Participant.source, Participant.simulated).where(Participant.id == participant.id)
    ).one()
    spec = catalogue(session, participant.version_id).spec
    return spec.completion_code(outcome, per_participant=simulated or source != "prolific")


def given_code(session: Session, participant: ParticipantRow) -> str | None:
    """The completion code of the participant's ended session, made now if their session was
    ended without one (timed out with others by study.flow.study_lock)."""
    code = session.scalar(
        select(Participant.completion_code).where(Participant.id == participant.id)
    )
    if code is None and participant.outcome is not None:
        code = _code_for(session, participant, participant.outcome)
        if code is not None:
            change(session, participant, completion_code=code)
    return code


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
    """Instructions read: the trials are assigned (or, for a participant who arrived before the
    check came first and has not taken it, the check comes now)."""
    if participant.phase != "instructions":
        return
    checked = session.scalar(
        select(Participant.viewport_width).where(Participant.id == participant.id)
    )
    if checked is None:
        change(session, participant, phase="check", instructions_version=spec.instructions.version)
        return
    assign(session, participant, catalogue(session, participant.version_id))
    change(session, participant, phase="trials", instructions_version=spec.instructions.version)


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
