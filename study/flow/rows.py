"""A participant and their trials as one request loads and changes them.

The participant's row is locked and loaded in one statement (:func:`load_participant`) and
changed column by column (:func:`change`); their trials come with their answers in one query
(:func:`load_trials`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from study.models import Answer, Participant, Trial, utcnow

ACTIVE_PHASES = ("instructions", "check", "trials")

# The statements of the answer path, built once: SQLAlchemy then reuses their compiled form
# without building and hashing a new statement each request.
_trials, _answers = Trial.__table__, Answer.__table__
_participants = Participant.__table__
LOAD_PARTICIPANT = (
    _participants.update()
    .where(_participants.c.public_id == bindparam("b_public_id"))
    .where(_participants.c.study_id == bindparam("b_study_id"))
    .values(last_seen_at=bindparam("b_now"))
    .returning(
        _participants.c.id, _participants.c.public_id, _participants.c.study_id,
        _participants.c.version_id, _participants.c.phase, _participants.c.outcome,
        _participants.c.order_seed, _participants.c.deadline_at,
    )
)  # fmt: skip
SAVE_PARTICIPANT = _participants.update().where(_participants.c.id == bindparam("b_id"))
LOAD_TRIALS = (
    select(
        _trials.c.id, _trials.c.public_id, _trials.c.position, _trials.c.kind,
        _trials.c.presentation, _trials.c.criterion, _trials.c.check, _trials.c.repeat_of,
        _trials.c.expected, _trials.c.prompt_id, _trials.c.seed, _trials.c.left_id,
        _trials.c.right_id, _trials.c.shown_at, _trials.c.left_token, _trials.c.right_token,
        _trials.c.min_display_ms,
        _answers.c.id, _answers.c.choice, _answers.c.rating, _answers.c.passed,
    )
    .outerjoin(_answers, _answers.c.trial_id == _trials.c.id)
    .where(_trials.c.participant_id == bindparam("participant_id"))
    .order_by(_trials.c.position)
)  # fmt: skip


def new_token(nbytes: int = 12) -> str:
    return secrets.token_urlsafe(nbytes)


@dataclass(slots=True)
class ParticipantRow:
    """A participant as a request sees it, locked; changes go through :func:`change`."""

    id: int
    public_id: str
    study_id: int
    version_id: int
    phase: str
    outcome: str | None
    order_seed: int
    deadline_at: datetime | None


def load_participant(session: Session, study_id: int, public_id: str) -> ParticipantRow | None:
    """The participant, locked for this transaction and marked seen, in one statement."""
    row = (
        session.connection()
        .execute(
            LOAD_PARTICIPANT, {"b_public_id": public_id, "b_study_id": study_id, "b_now": utcnow()}
        )
        .first()
    )
    return None if row is None else ParticipantRow(*row)


def change(session: Session, participant: ParticipantRow, **fields) -> None:
    """Set columns of the participant's row (and the same attributes of ``participant``)."""
    for name, value in fields.items():
        if name in ParticipantRow.__slots__:
            setattr(participant, name, value)
    session.connection().execute(SAVE_PARTICIPANT, {"b_id": participant.id, **fields})


@dataclass(slots=True)
class TrialRow:
    """One of the participant's trials with its answer, as loaded for this request."""

    id: int
    public_id: str
    position: int
    kind: str
    presentation: str
    criterion: str
    check: str | None
    repeat_of: int | None
    expected: str | None
    prompt_id: str | None
    seed: int | None
    left_id: int | None
    right_id: int | None
    shown_at: datetime | None
    left_token: str | None  # the image URLs of this trial
    right_token: str | None
    min_display_ms: int | None
    answer_id: int | None
    choice: str | None
    rating: int | None
    passed: bool | None

    @property
    def answered(self) -> bool:
        return self.answer_id is not None


def load_trials(session: Session, participant: ParticipantRow) -> list[TrialRow]:
    """The participant's trials in order, with their answers (one query)."""
    rows = session.connection().execute(LOAD_TRIALS, {"participant_id": participant.id})
    return [TrialRow(*row) for row in rows]
