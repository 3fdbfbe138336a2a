"""Who is behind each image: read from the study database, never from what participants
get (they are blind to variants); and the simulated participants marked as such there."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import or_, select, update

from hprune.errors import UserError
from study.db import Database, open_database
from study.models import Participant, Stimulus, Study, Trial


class Shown(NamedTuple):
    """What an image URL of a trial shows."""

    stimulus: int  # the same for every trial that shows this image (tokens are per trial)
    variant: str
    role: str  # stimulus | broken


@dataclass(frozen=True)
class StimulusOracle:
    """The study's images (variant, role) and, from the database, which one a trial's image
    URL shows (:meth:`lookup`).

    ``role`` is ``stimulus`` or ``broken`` (the deliberately broken image of an attention
    trial). The simulator needs this because participants are blind to variants; image URLs
    are fresh for every trial, so each lookup asks the database.
    """

    study_key: str
    images: Mapping[int, tuple[str, str]]  # stimulus id -> (variant, role)
    database_url: str | None = None

    @classmethod
    def from_database(cls, database_url: str, study: str | None = None) -> StimulusOracle:
        """The oracle of the study named ``study`` (or the database's only study)."""
        db = open_database(database_url)
        try:
            with db.read() as session:
                studies = session.scalars(select(Study).order_by(Study.id)).all()
                if study is not None:
                    studies = [s for s in studies if s.name == study]
                    if not studies:
                        raise UserError(f"no study named {study!r} in the database")
                elif len(studies) != 1:
                    names = ", ".join(s.name for s in studies) or "none"
                    raise UserError(f"name the study with --study (the database has: {names})")
                chosen = studies[0]
                rows = session.execute(
                    select(Stimulus.id, Stimulus.variant, Stimulus.role).where(
                        Stimulus.study_id == chosen.id
                    )
                ).all()
                images = {i: (v, r) for i, v, r in rows}
                return cls(chosen.public_key, images, database_url)
        finally:
            db.dispose()

    def __post_init__(self) -> None:
        # made now, not on first use: the simulator's threads share it
        db = Database(self.database_url) if self.database_url is not None else None
        object.__setattr__(self, "_db", db)

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()

    def outcomes(self, external_ids: list[str]) -> dict[str, str | None]:
        """How each participant's session ended (None: still going), from the database."""
        if self.database_url is None:
            return {}
        with self._db.read() as session:
            rows = session.execute(
                select(Participant.external_id, Participant.outcome)
                .join(Study, Study.id == Participant.study_id)
                .where(Study.public_key == self.study_key)
                .where(Participant.external_id.in_(external_ids))
            ).all()
        return dict(rows)

    def mark_simulated(self, external_id: str) -> None:
        """Mark the participant the simulator entered as ``external_id`` as simulated, so that
        no export takes them for a Prolific participant (and nobody pays or rejects them)."""
        if self._db is None:
            return
        study_id = select(Study.id).where(Study.public_key == self.study_key).scalar_subquery()
        with self._db.write() as session:
            session.execute(
                update(Participant)
                .where(Participant.study_id == study_id, Participant.external_id == external_id)
                .values(simulated=True)
            )

    @property
    def variants(self) -> list[str]:
        return sorted({v for v, role in self.images.values() if role != "broken"})

    def lookup(self, image_url: str) -> Shown:
        """What an image URL ``/i/<token>`` of a trial shows."""
        if self._db is None:
            raise UserError("the oracle has no database to look image URLs up in")
        token = image_url.rstrip("/").rsplit("/", 1)[-1]
        with self._db.read() as session:
            row = session.execute(
                select(Trial.left_token, Trial.left_id, Trial.right_id).where(
                    or_(Trial.left_token == token, Trial.right_token == token)
                )
            ).first()
        if row is None:
            raise KeyError(f"no trial shows the image {image_url}")
        stimulus = row.left_id if row.left_token == token else row.right_id
        return Shown(stimulus, *self.images[stimulus])
