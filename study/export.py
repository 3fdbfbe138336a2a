"""The study's exports, from the database: the responses (one row per answered trial) and
the participants (one row per participant), in the formats :mod:`hprune.contracts.responses`
and :mod:`hprune.contracts.participants` define.

Flask-free (SQLAlchemy + pandas), so a study database can be read without the web app::

    from study.export import export_responses
    frame = export_responses("postgresql+psycopg://host/db", study="my-study")
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from hprune.contracts import participants as participants_contract
from hprune.contracts.prolific import PROLIFIC_FILES, write_approvals
from hprune.contracts.responses import COLUMNS, EXPORT_FILES, write_responses
from hprune.errors import UserError
from hprune.fileio import atomic_output_dir
from study.db import Database, open_database
from study.flow.lifecycle import MOBILE_UA
from study.models import Answer, Participant, Stimulus, Study, StudyVersion, Trial
from study.spec import StudySpec

T = TypeVar("T")
#: Every file an export folder holds.
EXPORT_FILES_ALL = (*EXPORT_FILES, *participants_contract.PARTICIPANTS_FILES, *PROLIFIC_FILES)


def pseudonym(public_id: str) -> str:
    """The pseudonymous participant id of both exports: a hash of the server's random id."""
    return "p-" + hashlib.sha256(public_id.encode()).hexdigest()[:12]


def _read(source: str | Database, read: Callable[[Session], T]) -> T:
    """``read(session)`` in one read transaction of ``source``: a Database, or a URL that must
    name an existing, reachable study database (a one-line UserError otherwise, and no empty
    SQLite file is left behind), opened for this call only."""
    owned = not isinstance(source, Database)
    db = open_database(source) if owned else source
    try:
        with db.read() as session:
            return read(session)
    finally:
        if owned:
            db.dispose()


def export_responses(source: str | Database, study: str | None = None) -> pd.DataFrame:
    """Every answered trial of ``study`` (a name; all studies if None) as the tidy table."""
    return _read(source, lambda session: frame_from_session(session, study))


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
    """The responses export of ``study_name`` (all studies if None), typed."""
    _require_study(session, study_name)
    left, right = aliased(Stimulus), aliased(Stimulus)
    query = (
        select(
            Study.name.label("study"),
            Participant.public_id.label("participant"),
            Trial.position.label("trial_index"),
            Trial.kind.label("kind"),
            Trial.criterion.label("criterion"),
            Trial.prompt_id.label("prompt_id"),
            left.image_id.label("left_image"),
            right.image_id.label("right_image"),
            left.variant.label("left_variant"),
            right.variant.label("right_variant"),
            Answer.choice.label("choice"),
            Answer.rating.label("rating"),
            Answer.rt_ms.label("rt_ms"),
            Answer.server_ms.label("server_ms"),
            Trial.shown_at.label("shown_at"),
            Answer.answered_at.label("answered_at"),
            Participant.id.not_in(_failed_gold()).label("passed_checks"),
            StudyVersion.number.label("study_version"),
            Trial.seed.label("seed"),
            Trial.check.label("check"),
            Answer.passed.label("check_passed"),
            Participant.outcome.label("participant_outcome"),
            Participant.criterion_order.label("criterion_order"),
            Trial.min_display_ms.label("min_display_ms"),
            Answer.load_ms.label("load_ms"),
            Participant.version_id.label("version_id"),
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
    result = session.execute(query)
    frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    policies = _attention_policies(session)
    frame["attention_max_failures"] = frame.pop("version_id").map(policies).astype("Int64")
    return _typed(frame[COLUMNS])


def _attention_policies(session: Session) -> dict[int, int]:
    """Study version id -> its spec's attention.max_failures."""
    return {
        version_id: StudySpec.from_json(spec_json).attention.max_failures
        for version_id, spec_json in session.execute(
            select(StudyVersion.id, StudyVersion.spec_json)
        )
    }


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame["participant"] = frame["participant"].map(pseudonym)
    for column in ("trial_index", "rating", "study_version", "seed", "min_display_ms"):
        frame[column] = frame[column].astype("Int64")
    for column in ("rt_ms", "server_ms", "load_ms"):
        frame[column] = frame[column].astype("Float64")
    for column in ("passed_checks", "check_passed"):
        frame[column] = frame[column].astype("boolean")
    for column in ("shown_at", "answered_at"):
        frame[column] = pd.to_datetime(frame[column]).dt.tz_localize("UTC")
    text = [c for c in COLUMNS if frame[c].dtype == object]
    for column in text:
        frame[column] = frame[column].astype("string")
    return frame


def export_participants(source: str | Database, study: str | None = None) -> pd.DataFrame:
    """Every participant of ``study`` (a name; all studies if None), one row each."""
    return _read(source, lambda session: participants_from_session(session, study))


def participants_from_session(session: Session, study_name: str | None) -> pd.DataFrame:
    """The participants export of ``study_name`` (all studies if None), typed and checked."""
    _require_study(session, study_name)
    query = (
        select(
            Study.name,
            Participant.id,
            Participant.public_id,
            Participant.source,
            Participant.simulated,
            Participant.external_id,
            Participant.prolific_study_id,
            Participant.prolific_session_id,
            StudyVersion.number,
            Participant.version_id,
            Participant.outcome,
            Participant.completion_code,
            Participant.created_at,
            Participant.consented_at,
            Participant.finished_at,
            Participant.last_seen_at,
            Participant.id.not_in(_failed_gold()).label("passed_checks"),
            Participant.viewport_width,
            Participant.viewport_height,
            Participant.user_agent,
            Participant.order_seed,
            Participant.criterion_order,
        )
        .join(Study, Study.id == Participant.study_id)
        .join(StudyVersion, StudyVersion.id == Participant.version_id)
        .order_by(Study.name, Participant.id)
    )
    answers = (
        select(Answer.participant_id, Trial.kind, Answer.rt_ms, Answer.passed)
        .join(Trial, Trial.id == Answer.trial_id)
        .join(Participant, Participant.id == Answer.participant_id)
        .join(Study, Study.id == Participant.study_id)
    )
    if study_name is not None:
        query = query.where(Study.name == study_name)
        answers = answers.where(Study.name == study_name)
    people = session.execute(query).all()
    answered = pd.DataFrame(
        session.execute(answers).all(), columns=["id", "kind", "rt_ms", "passed"]
    )
    answered["failed"] = answered["passed"].map(lambda passed: passed is False)
    attention = answered[answered["kind"] == "attention"].groupby("id")
    n_answered = answered.groupby("id").size()
    n_attention, n_failed = attention.size(), attention["failed"].sum()
    median_rt = answered[answered["kind"] != "practice"].groupby("id")["rt_ms"].median()
    policies = _attention_policies(session)
    rows = []
    for person in people:
        rows.append(
            {
                "study": person.name,
                "participant": pseudonym(person.public_id),
                **identity(person),
                "study_version": person.number,
                "outcome": person.outcome,
                "completion_code": person.completion_code,
                "arrived_at": person.created_at,
                "consented_at": person.consented_at,
                "finished_at": person.finished_at,
                "last_seen_at": person.last_seen_at,
                "trials_answered": n_answered.get(person.id, 0),
                "attention_answered": n_attention.get(person.id, 0),
                "attention_failed": n_failed.get(person.id, 0),
                "attention_max_failures": policies[person.version_id],
                "passed_checks": person.passed_checks,
                "median_rt_ms": median_rt.get(person.id),
                "viewport_width": person.viewport_width,
                "viewport_height": person.viewport_height,
                "device_class": device_class(person.user_agent),
                "order_seed": person.order_seed,
                "criterion_order": person.criterion_order,
            }
        )
    frame = pd.DataFrame(rows, columns=participants_contract.COLUMNS)
    return participants_contract.validate_participants(frame)


def identity(person) -> dict:
    """The export's source, simulated flag and ids of a participant row, from the stored entry
    id (``PROLIFIC_PID``, ``lab:<id>`` or ``anon:<random>``): a simulated participant shows no
    Prolific id, whatever link the simulator entered by."""
    if person.simulated:
        return {"source": "simulated", "simulated": True, "external_id": person.external_id}
    if person.source == "prolific":
        return {
            "source": "prolific",
            "simulated": False,
            "prolific_pid": person.external_id,
            "prolific_study_id": person.prolific_study_id,
            "prolific_session_id": person.prolific_session_id,
        }
    lab_id = person.external_id.removeprefix("lab:") if person.source == "lab" else None
    return {"source": person.source, "simulated": False, "external_id": lab_id}


def device_class(user_agent: str | None) -> str | None:
    """mobile (phone or tablet) or desktop, by the user agent the browser sent (None if none)."""
    if not user_agent:
        return None
    return "mobile" if MOBILE_UA.search(user_agent) else "desktop"


def write_study_files(source: str | Database, folder: Path, *, study: str | None = None) -> None:
    """Write every export file of ``study`` into the existing ``folder``: the responses
    (``responses.csv``, ``responses.parquet``, ``codebook.json``), the participants
    (``participants.csv``, ``participants.parquet``, ``participants_codebook.json``) and the
    Prolific approvals (``prolific_approvals.csv``, ``prolific_bulk_approve.json``)."""
    frame, participants = _read(
        source,
        lambda session: (
            frame_from_session(session, study),
            participants_from_session(session, study),
        ),
    )
    write_responses(frame, folder)
    participants_contract.write_participants(participants, folder)
    write_approvals(participants, folder)


def write_export(
    source: str | Database,
    out_dir: str | Path,
    *,
    study: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write every export file (:func:`write_study_files`) into ``out_dir``, all or nothing;
    their paths by name."""
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        write_study_files(source, tmp, study=study)
    return {name: out_dir / name for name in EXPORT_FILES_ALL}


def study_names(source: str | Database) -> list[str]:
    return _read(
        source, lambda session: list(session.scalars(select(Study.name).order_by(Study.name)))
    )


__all__ = [
    "export_participants",
    "export_responses",
    "participants_from_session",
    "study_names",
    "write_export",
    "write_study_files",
]
