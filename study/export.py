"""The study's responses export, from the database: one row per answered trial, in the
format :mod:`hprune.contracts.responses` defines.

Flask-free (SQLAlchemy + pandas), so a study database can be read without the web app::

    from study.export import export_responses
    frame = export_responses("postgresql+psycopg://host/db", study="my-study")
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from hprune.contracts.responses import COLUMNS, EXPORT_FILES, write_responses
from hprune.errors import UserError
from hprune.fileio import atomic_output_dir
from study.db import Database, open_database
from study.models import Answer, Participant, Stimulus, Study, StudyVersion, Trial


def pseudonym(public_id: str) -> str:
    """The pseudonymous participant id of both exports: a hash of the server's random id."""
    return "p-" + hashlib.sha256(public_id.encode()).hexdigest()[:12]


def _as_database(source: str | Database) -> tuple[Database, bool]:
    """(database, whether we opened it); a URL must name an existing, reachable study database
    (a one-line UserError otherwise, and no empty SQLite file is left behind)."""
    if isinstance(source, Database):
        return source, False
    return open_database(source), True


def export_responses(source: str | Database, study: str | None = None) -> pd.DataFrame:
    """Every answered trial of ``study`` (a name; all studies if None) as the tidy table."""
    db, owned = _as_database(source)
    try:
        with db.read() as session:
            return frame_from_session(session, study)
    finally:
        if owned:
            db.dispose()


def _require_study(session: Session, study_name: str | None) -> None:
    if (
        study_name is not None
        and session.scalar(select(Study.id).where(Study.name == study_name)) is None
    ):
        raise UserError(f"there is no study named {study_name!r} in the database")


def _failed_gold():
    """The ids of participants who answered a gold attention trial wrongly."""
    return (
        select(Answer.participant_id)
        .join(Trial, Trial.id == Answer.trial_id)
        .where(Trial.check == "broken", Answer.passed.is_(False))
        .group_by(Answer.participant_id)
    )


def frame_from_session(session: Session, study_name: str | None) -> pd.DataFrame:
    _require_study(session, study_name)
    left, right = aliased(Stimulus), aliased(Stimulus)
    query = (
        select(
            Study.name,
            Participant.public_id,
            Trial.position,
            Trial.kind,
            Trial.criterion,
            Trial.prompt_id,
            left.image_id,
            right.image_id,
            left.variant,
            right.variant,
            Answer.choice,
            Answer.rating,
            Answer.rt_ms,
            Answer.server_ms,
            Trial.shown_at,
            Answer.answered_at,
            Participant.id.not_in(_failed_gold()),
            StudyVersion.number,
            Trial.seed,
            Trial.check,
            Answer.passed,
            Participant.outcome,
        )
        .select_from(Answer)
        .join(Trial, Trial.id == Answer.trial_id)
        .join(Participant, Participant.id == Trial.participant_id)
        .join(Study, Study.id == Participant.study_id)
        .join(StudyVersion, StudyVersion.id == Participant.version_id)
        .join(left, left.id == Trial.left_id)
        .outerjoin(right, right.id == Trial.right_id)
        .order_by(Study.name, Participant.id, Trial.position)
    )
    if study_name is not None:
        query = query.where(Study.name == study_name)
    frame = pd.DataFrame(session.execute(query).all(), columns=COLUMNS)
    return _typed(frame)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame["participant"] = frame["participant"].map(pseudonym)
    for column in ("trial_index", "rating", "study_version", "seed"):
        frame[column] = frame[column].astype("Int64")
    for column in ("rt_ms", "server_ms"):
        frame[column] = frame[column].astype("Float64")
    for column in ("passed_checks", "check_passed"):
        frame[column] = frame[column].astype("boolean")
    for column in ("shown_at", "answered_at"):
        frame[column] = pd.to_datetime(frame[column]).dt.tz_localize("UTC")
    text = [c for c in COLUMNS if frame[c].dtype == object]
    for column in text:
        frame[column] = frame[column].astype("string")
    return frame


def write_export(
    source: str | Database,
    out_dir: str | Path,
    *,
    study: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``responses.csv``, ``responses.parquet`` and ``codebook.json`` into ``out_dir``."""
    frame = export_responses(source, study)
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        write_responses(frame, tmp)
    return {name: out_dir / name for name in EXPORT_FILES}


def study_names(source: str | Database) -> list[str]:
    db, owned = _as_database(source)
    try:
        with db.read() as session:
            return list(session.scalars(select(Study.name).order_by(Study.name)))
    finally:
        if owned:
            db.dispose()


__all__ = [
    "export_responses",
    "study_names",
    "write_export",
]
