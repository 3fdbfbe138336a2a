"""The study row lock that serialises a study's assigners, and timing out the participants
past their time limit while it is held (so that their tasks are free again)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, exists, select
from sqlalchemy.orm import Session

from study import tallies
from study.flow.rows import ACTIVE_PHASES
from study.models import Participant, Study, utcnow

# Built once, as the statements in study.flow.rows.
_participants = Participant.__table__
_late = (
    (_participants.c.study_id == bindparam("study_id"))
    & (_participants.c.deadline_at < bindparam("now"))
    & _participants.c.outcome.is_(None)
    & _participants.c.phase.in_(ACTIVE_PHASES)
)
LOCK_STUDY = (  # and say whether any of its participants is past their time limit
    select(Study.id, exists().where(_late))
    .where(Study.id == bindparam("study_id"))
    .with_for_update(key_share=True)
)
LATE_PARTICIPANTS = (
    select(_participants.c.id, _participants.c.phase)
    .where(_late)
    .with_for_update(key_share=True, skip_locked=True)
)
TIME_OUT = (
    _participants.update()
    .where(_participants.c.id.in_(bindparam("ids", expanding=True)))
    .values(phase="end", outcome="timed_out", finished_at=bindparam("now"))
)


def lock_study(session: Session, study_id: int) -> None:
    """Serialise the assigners of this study (once per transaction), and time out its
    participants past their limit first, so that their tasks are free again."""
    if session.info.get("locked_study") == study_id:
        return
    now = utcnow()
    _, any_late = session.connection().execute(LOCK_STUDY, {"study_id": study_id, "now": now}).one()
    session.info["locked_study"] = study_id
    if any_late:
        expire_late_participants(session, study_id, now)


def expire_late_participants(session: Session, study_id: int, now: datetime) -> None:
    """Time out the study's participants past their limit (study row locked: :func:`lock_study`).

    Participants locked by a request of their own are skipped: that request times them out.
    """
    late = session.connection().execute(LATE_PARTICIPANTS, {"study_id": study_id, "now": now}).all()
    if late:
        session.connection().execute(TIME_OUT, {"ids": [pid for pid, _ in late], "now": now})
        tallies.subtract_participants(
            session, study_id, [pid for pid, phase in late if phase == "trials"]
        )
