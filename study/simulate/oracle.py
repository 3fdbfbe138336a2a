"""Who is behind each image: read from the study database, never from what participants
get (they are blind to variants)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select

from hprune.errors import UserError
from study.db import Database, open_database
from study.models import Participant, Stimulus, Study


@dataclass(frozen=True)
class StimulusOracle:
    """The study's image tokens -> (variant, role), read through :mod:`study.models`.

    ``role`` is ``stimulus`` or ``broken`` (the deliberately broken image of an attention
    trial). The simulator needs this because participants are blind to variants.
    """

    study_key: str
    images: Mapping[str, tuple[str, str]]
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
                    select(Stimulus.token, Stimulus.variant, Stimulus.role).where(
                        Stimulus.study_id == chosen.id
                    )
                ).all()
                images = {t: (v, r) for t, v, r in rows}
                return cls(chosen.public_key, images, database_url)
        finally:
            db.dispose()

    def outcomes(self, external_ids: list[str]) -> dict[str, str | None]:
        """How each participant's session ended (None: still going), from the database."""
        if self.database_url is None:
            return {}
        db = Database(self.database_url)
        try:
            with db.read() as session:
                rows = session.execute(
                    select(Participant.external_id, Participant.outcome)
                    .join(Study, Study.id == Participant.study_id)
                    .where(Study.public_key == self.study_key)
                    .where(Participant.external_id.in_(external_ids))
                ).all()
            return dict(rows)
        finally:
            db.dispose()

    @property
    def variants(self) -> list[str]:
        return sorted({v for v, role in self.images.values() if role != "broken"})

    def lookup(self, image_url: str) -> tuple[str, str]:
        """(variant, role) of an image URL ``/i/<token>`` as a trial gives it."""
        return self.images[image_url.rstrip("/").rsplit("/", 1)[-1]]
