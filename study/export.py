"""The tidy responses export (design.md): one row per answered trial, CSV + Parquet + codebook.

Flask-free (SQLAlchemy + pandas), so the analysis package can read a study database directly::

    from study.export import export_responses
    frame = export_responses("postgresql+psycopg://host/db", study="my-study")
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from hprune.errors import UserError
from hprune.fileio import atomic_output_dir
from study.db import Database, open_database
from study.export_format import CONTRACT_COLUMNS, EXTRA_COLUMNS
from study.models import Answer, Participant, Stimulus, Study, StudyVersion, Trial

COLUMNS = CONTRACT_COLUMNS + EXTRA_COLUMNS

CODEBOOK = {
    "study": "study name (the spec's `name`)",
    "participant": "pseudonymous participant id: a hash of the server's random participant id; "
    "the same person keeps it across the study, and it does not reveal their Prolific id",
    "trial_index": "position of the trial in the participant's session, from 0 (practice first); "
    "positions may skip where a trial was not needed",
    "kind": "pair (2AFC), rating (MOS), attention (gold or repeat check) or practice",
    "criterion": "what was asked, e.g. quality or alignment (the spec's criterion name)",
    "prompt_id": "the prompt of the image(s)",
    "left_image": "manifest image_id shown on the left (the only image of a rating trial); "
    "a generated broken image of a gold trial is `broken-<source image_id>`",
    "right_image": "manifest image_id shown on the right; empty for rating trials",
    "left_variant": "variant of the left image; `attention-broken` for a gold trial's broken image",
    "right_variant": "variant of the right image; empty for rating trials",
    "choice": "left, right or tie (pair trials)",
    "rating": "1-5 (rating trials)",
    "rt_ms": "client response time: from both images being displayed to the answer, milliseconds",
    "server_ms": "server time from first serving the trial to receiving the answer, milliseconds",
    "shown_at": "UTC time the server first served the trial (ISO 8601)",
    "answered_at": "UTC time the server stored the answer (ISO 8601)",
    "passed_checks": "participant level: true if the participant passed every gold attention "
    "trial they answered (so filter `passed_checks` to keep attentive participants); repeated-"
    "trial consistency is in check_passed and does not affect it",
    "study_version": "study version the participant was assigned (a new import makes a new one)",
    "seed": "seed of the image(s)",
    "check": "attention trials: broken (gold: one image obviously broken) or repeat (an earlier "
    "trial again with the sides swapped)",
    "check_passed": "attention trials: gold answered correctly (the intact image, or a rating "
    "<= 2 for a broken image); repeat answered consistently (same variant, or ratings within 1)",
    "participant_outcome": "completed, failed_attention, timed_out, declined, or empty while "
    "the participant has not finished",
}


def pseudonym(public_id: str) -> str:
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


def frame_from_session(session: Session, study_name: str | None) -> pd.DataFrame:
    if (
        study_name is not None
        and session.scalar(select(Study.id).where(Study.name == study_name)) is None
    ):
        raise UserError(f"there is no study named {study_name!r} in the database")
    left, right = aliased(Stimulus), aliased(Stimulus)
    failed_gold = (
        select(Answer.participant_id)
        .join(Trial, Trial.id == Answer.trial_id)
        .where(Trial.check == "broken", Answer.passed.is_(False))
        .group_by(Answer.participant_id)
    )
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
            Participant.id.not_in(failed_gold),
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
        write_files(frame, tmp)
    return {
        name: out_dir / name for name in ("responses.csv", "responses.parquet", "codebook.json")
    }


def write_files(frame: pd.DataFrame, folder: Path) -> None:
    """The three export files of ``frame`` in ``folder``."""
    csv_frame = frame.copy()
    for column in ("shown_at", "answered_at"):
        csv_frame[column] = csv_frame[column].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    csv_frame.to_csv(folder / "responses.csv", index=False)
    frame.to_parquet(folder / "responses.parquet", index=False)
    codebook = {
        "format": "hprune responses export, one row per answered trial",
        "rows": len(frame),
        "columns": {c: {"dtype": str(frame[c].dtype), "meaning": CODEBOOK[c]} for c in COLUMNS},
    }
    (folder / "codebook.json").write_text(json.dumps(codebook, indent=2) + "\n")


def study_names(source: str | Database) -> list[str]:
    db, owned = _as_database(source)
    try:
        with db.read() as session:
            return list(session.scalars(select(Study.name).order_by(Study.name)))
    finally:
        if owned:
            db.dispose()


__all__ = ["CODEBOOK", "COLUMNS", "export_responses", "study_names", "write_export", "write_files"]
