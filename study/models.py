"""The study database, as SQLAlchemy 2.0 typed models.

The schema itself comes only from the Alembic migrations in ``migrations/``; these classes
describe it for queries (``tests/study/test_schema.py`` checks that both agree).

A study has versions (one per imported spec + manifest); a participant belongs to the
version current when they arrived and keeps it. Stimuli are the study's images, each
served under a random token; a trial shows one or two stimuli; an answer is written once
per trial and never altered.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Naive UTC: both SQLite and PostgreSQL give back exactly what was stored."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    public_key: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | closed
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    versions: Mapped[list[StudyVersion]] = relationship(
        back_populates="study", order_by="StudyVersion.number"
    )


class StudyVersion(Base):
    __tablename__ = "study_versions"
    __table_args__ = (UniqueConstraint("study_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    number: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64))  # spec + manifest
    spec_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    study: Mapped[Study] = relationship(back_populates="versions")


class Stimulus(Base):
    """One image of a study: a rendered image, or a generated broken one for gold trials."""

    __tablename__ = "stimuli"
    __table_args__ = (UniqueConstraint("study_id", "image_id", "sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    token: Mapped[str] = mapped_column(String(32), unique=True)  # the only public name
    image_id: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    media_path: Mapped[str] = mapped_column(Text)  # served copy, relative to the media folder
    # the served copy for attention trials: other bytes, the same picture (study.media)
    check_media_path: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16), default="stimulus")  # stimulus | broken
    source_id: Mapped[int | None] = mapped_column(ForeignKey("stimuli.id"))
    variant: Mapped[str] = mapped_column(String(200))
    prompt_id: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(200), default="")
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)


class VersionStimulus(Base):
    """Which stimuli a study version assigns from."""

    __tablename__ = "version_stimuli"

    version_id: Mapped[int] = mapped_column(ForeignKey("study_versions.id"), primary_key=True)
    stimulus_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"), primary_key=True)


class Participant(Base):
    __tablename__ = "participants"
    __table_args__ = (
        UniqueConstraint("study_id", "external_id"),
        Index("ix_participants_study_id_deadline_at", "study_id", "deadline_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)  # in the session cookie
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("study_versions.id"))
    external_id: Mapped[str] = mapped_column(String(100))  # PROLIFIC_PID or anonymous id
    source: Mapped[str] = mapped_column(String(16))  # prolific | lab | anonymous
    # Played by `hprune study simulate` (marked by the simulator): never a real person.
    simulated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    prolific_study_id: Mapped[str | None] = mapped_column(String(100))
    prolific_session_id: Mapped[str | None] = mapped_column(String(100))
    # consent -> instructions -> check -> trials -> end (or declined)
    phase: Mapped[str] = mapped_column(String(16), default="consent")
    outcome: Mapped[str | None] = mapped_column(
        String(24)
    )  # completed|failed_attention|timed_out|declined
    completion_code: Mapped[str | None] = mapped_column(String(100))  # given at the end
    order_seed: Mapped[int] = mapped_column(BigInteger)
    consent_version: Mapped[str | None] = mapped_column(String(100))
    instructions_version: Mapped[str | None] = mapped_column(String(100))
    viewport_width: Mapped[int | None] = mapped_column(Integer)
    viewport_height: Mapped[int | None] = mapped_column(Integer)
    user_agent: Mapped[str | None] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    consented_at: Mapped[datetime | None] = mapped_column(DateTime)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # SHA-256 of the resume secret of a lab or anonymous participant (study.flow.identity)
    resume_hash: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    criterion_order: Mapped[str | None] = mapped_column(Text)  # criterion blocks, "|"-joined

    version: Mapped[StudyVersion] = relationship()


class Trial(Base):
    """One screen of a participant's session, at a fixed position in their order.

    ``kind`` is pair, rating, attention or practice (the export's kinds); ``presentation``
    says how it is shown (pair or rating). A main trial of an ``active`` study is created
    empty (no stimuli) and filled by the scheduler when it becomes current.
    """

    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("participant_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    presentation: Mapped[str] = mapped_column(String(16))
    criterion: Mapped[str] = mapped_column(String(100))
    check: Mapped[str | None] = mapped_column(String(16))  # broken | repeat (attention only)
    repeat_of: Mapped[int | None] = mapped_column(Integer)  # position of the repeated trial
    expected: Mapped[str | None] = mapped_column(String(16))  # gold: the right side, or "<=2"
    prompt_id: Mapped[str | None] = mapped_column(String(200))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    left_id: Mapped[int | None] = mapped_column(ForeignKey("stimuli.id"))
    right_id: Mapped[int | None] = mapped_column(ForeignKey("stimuli.id"))
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime)
    shown_at: Mapped[datetime | None] = mapped_column(DateTime)
    # the image URLs of this trial alone: /i/<left_token>, /i/<right_token> (pairs)
    left_token: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)
    right_token: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)
    min_display_ms: Mapped[int | None] = mapped_column(Integer)  # inputs ignored before this

    left: Mapped[Stimulus | None] = relationship(foreign_keys=[left_id])
    right: Mapped[Stimulus | None] = relationship(foreign_keys=[right_id])
    answer: Mapped[Answer | None] = relationship(back_populates="trial")


class Answer(Base):
    """A participant's answer to one trial: written once (unique per trial), never changed."""

    __tablename__ = "answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), unique=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    choice: Mapped[str | None] = mapped_column(String(8))  # left | right | tie
    rating: Mapped[int | None] = mapped_column(Integer)
    rt_ms: Mapped[float] = mapped_column(Float)
    server_ms: Mapped[float | None] = mapped_column(Float)
    load_ms: Mapped[float | None] = mapped_column(Float)  # client: trial received -> displayed
    answered_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    passed: Mapped[bool | None] = mapped_column(Boolean)  # attention trials: check passed

    trial: Mapped[Trial] = relationship(back_populates="answer")


class TallyPair(Base):
    """Running counts of one variant pair's main trials (``study.tallies``): what the
    schedulers and the left/right counterbalancing read instead of scanning every trial."""

    __tablename__ = "tally_pairs"

    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    criterion: Mapped[str] = mapped_column(String(100), primary_key=True)
    variant_a: Mapped[str] = mapped_column(String(200), primary_key=True)  # variant_a < variant_b
    variant_b: Mapped[str] = mapped_column(String(200), primary_key=True)
    assigned: Mapped[int] = mapped_column(Integer)
    a_left: Mapped[int] = mapped_column(Integer)  # assigned with variant_a on the left
    a_wins: Mapped[int] = mapped_column(Integer)  # answered: variant_a chosen
    b_wins: Mapped[int] = mapped_column(Integer)
    ties: Mapped[int] = mapped_column(Integer)


class TallyCell(Base):
    """Running count of the main trials assigned per variant pair (or rated variant, with
    ``variant_b`` empty) and item: how evenly the design's cells are covered."""

    __tablename__ = "tally_cells"

    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    criterion: Mapped[str] = mapped_column(String(100), primary_key=True)
    variant_a: Mapped[str] = mapped_column(String(200), primary_key=True)
    variant_b: Mapped[str] = mapped_column(String(200), primary_key=True)
    prompt_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    seed: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    assigned: Mapped[int] = mapped_column(Integer)


class Admin(Base):
    __tablename__ = "admins"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime)
    # A generated (temporary) password: the dashboard asks for a new one at the first login.
    must_change_password: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime)


class AdminSession(Base):
    """A logged-in admin browser (``study.admins``): the cookie holds a random token, the
    database its hash, so that logging out or a password change ends the session for good."""

    __tablename__ = "admin_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class LoginFailure(Base):
    """A failed admin login, kept for the rate limit (``study.admins``) and then deleted."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_address_at", "address", "at"),
        Index("ix_login_failures_username_at", "username", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    address: Mapped[str] = mapped_column(String(64))  # the client's IP address
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
