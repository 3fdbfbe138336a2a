"""Who a participant is, and who may continue their session.

Opening a study link creates nobody: the arrival (:class:`Arrival`) waits in the browser's
session cookie through the screen check, and the participant's row is created by their
answer on the consent page (:func:`create`). An id that has taken part already binds another
browser only with proof that the person is the one who started (:func:`proves`):

- Prolific (``PROLIFIC_PID``): the same ``STUDY_ID`` and ``SESSION_ID`` as at the start, which
  Prolific puts in the link of that participant's submission and nowhere public;
- a lab id (``id=p01``, which others can guess) or an anonymous participant: the resume secret
  created at consent and shown to them once, of which only a SHA-256 hash is stored.

Each participant's ``order_seed`` (stored, and in the participants export) seeds every random
choice of their session (``study.flow.planning``): their trial order can be replayed from it.
It is random, unless the app is given a ``RANDOM_SEED`` (tests, demos: :func:`order_seed`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from study.catalogue import catalogue
from study.flow.errors import FlowError
from study.flow.rows import new_token
from study.models import Participant, Study, StudyVersion, utcnow

FINISHED_PHASES = ("end", "declined")
CLOSED = "This study is not accepting participants any more."


@dataclass(frozen=True)
class Arrival:
    """Who opened the study link, as the link says (nothing is stored yet)."""

    source: str  # prolific | lab | anonymous
    external_id: str | None = None  # PROLIFIC_PID, or lab:<id>; None for an anonymous arrival
    prolific_study_id: str | None = None
    prolific_session_id: str | None = None
    resume: str | None = None  # the resume secret, when the link carries one

    def to_cookie(self) -> dict:
        """What the session cookie keeps while the arrival has not consented (no secret)."""
        return {k: v for k, v in asdict(self).items() if v is not None and k != "resume"}

    @classmethod
    def from_cookie(cls, data: object) -> Arrival | None:
        if not isinstance(data, dict) or data.get("source") not in ("prolific", "lab", "anonymous"):
            return None
        fields = ("source", "external_id", "prolific_study_id", "prolific_session_id")
        return cls(**{k: data[k] for k in fields if isinstance(data.get(k), str)})


@dataclass(frozen=True)
class Created:
    participant: Participant
    new: bool  # False: someone with the same id consented first, in another browser
    resume_secret: str | None  # lab and anonymous participants, shown to them once


def order_seed(random_seed: int | None, who: str) -> int:
    """A participant's seed: random (62 bits), or with ``random_seed`` derived from it and
    ``who`` (the participant's entry id, or their place in the study), so that the same
    arrivals get the same trials on every run, in any study with the same spec and state."""
    if random_seed is None:
        return secrets.randbits(62)
    digest = hashlib.sha256(f"{random_seed}\n{who}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def newest_version_id(session: Session, study_id: int) -> int:
    return session.scalars(
        select(StudyVersion.id)
        .where(StudyVersion.study_id == study_id)
        .order_by(StudyVersion.number.desc())
        .limit(1)
    ).one()


def resume_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def find(session: Session, study_id: int, arrival: Arrival) -> Participant | None:
    """The participant the link names: by id (Prolific, lab), else by resume secret."""
    query = select(Participant).where(Participant.study_id == study_id)
    if arrival.external_id is not None:
        return session.scalar(query.where(Participant.external_id == arrival.external_id))
    if arrival.resume is not None:
        return session.scalar(query.where(Participant.resume_hash == resume_hash(arrival.resume)))
    return None


def proves(participant: Participant, arrival: Arrival) -> bool:
    """Whether the link proves it comes from the person who started as ``participant``."""
    if participant.source == "prolific":
        given = (arrival.prolific_study_id or "", arrival.prolific_session_id or "")
        stored = (participant.prolific_study_id or "", participant.prolific_session_id or "")
        return all(stored) and all(
            hmac.compare_digest(a.encode(), b.encode()) for a, b in zip(given, stored, strict=True)
        )
    if participant.resume_hash is None or arrival.resume is None:
        return False
    return hmac.compare_digest(resume_hash(arrival.resume), participant.resume_hash)


def create(
    session: Session,
    study: Study,
    arrival: Arrival,
    *,
    agree: bool,
    viewport: tuple[int, int],
    user_agent: str | None,
    random_seed: int | None = None,
) -> Created:
    """The participant of ``arrival``, created by their answer on the consent page, with the
    study's newest version (its consent version and time limit). When someone with the same
    id was created first, in another browser, that participant comes back (``new`` False):
    the caller checks :func:`proves` before binding it. ``random_seed``: see
    :func:`order_seed`."""
    if study.status != "open":
        raise FlowError(410, CLOSED)
    version_id = newest_version_id(session, study.id)
    spec = catalogue(session, version_id).spec
    now = utcnow()
    secret = None if arrival.source == "prolific" else secrets.token_urlsafe(18)
    fields = dict(
        public_id=new_token(),
        study_id=study.id,
        version_id=version_id,
        external_id=arrival.external_id or f"anon:{secrets.token_urlsafe(12)}",
        source=arrival.source,
        prolific_study_id=arrival.prolific_study_id,
        prolific_session_id=arrival.prolific_session_id,
        order_seed=(
            secrets.randbits(62)
            if random_seed is None
            else order_seed(random_seed, _seed_name(session, study, arrival))
        ),
        user_agent=(user_agent or "")[:400],
        viewport_width=viewport[0],
        viewport_height=viewport[1],
        resume_hash=resume_hash(secret) if secret else None,
        created_at=now,
        last_seen_at=now,
    )
    if agree:
        deadline = (
            now + timedelta(minutes=spec.time_limit_minutes) if spec.time_limit_minutes else None
        )
        fields |= dict(
            phase="instructions",
            consented_at=now,
            consent_version=spec.consent.version,
            deadline_at=deadline,
        )
    else:
        fields |= dict(phase="declined", outcome="declined", finished_at=now)
    participant = Participant(**fields)
    try:
        with session.begin_nested():
            session.add(participant)
    except IntegrityError:  # the same id consented at once in another browser: theirs stands
        existing = find(session, study.id, arrival)
        if existing is None:
            raise
        return Created(existing, False, None)
    return Created(participant, True, secret)


def _seed_name(session: Session, study: Study, arrival: Arrival) -> str:
    """Who ``arrival`` is for :func:`order_seed`: the entry id, or (anonymous) the number of
    participants the study had before."""
    if arrival.external_id is not None:
        return arrival.external_id
    count = session.scalar(
        select(func.count(Participant.id)).where(Participant.study_id == study.id)
    )
    return f"anonymous #{count}"
