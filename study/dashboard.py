"""The numbers on the admin dashboard: participants, coverage, attention, live scores.

Flask-free. Live Bradley-Terry scores (pair studies) and mean opinion scores (rating
studies) come from the analysis package (:mod:`analysis.live`), the one place the study
calls into it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from study.export import frame_from_session, identity, pseudonym
from study.models import Answer, Participant, Stimulus, Study, Trial, utcnow
from study.spec import StudySpec


@dataclass
class Dashboard:
    study: Study
    kind: str  # pair | rating, as the latest version's spec says
    counts: dict[str, int]
    recent: list[dict]
    coverage: list[dict]  # one row per criterion and variant pair (or variant for ratings)
    attention: dict
    scores: dict[str, pd.DataFrame] = field(default_factory=dict)  # criterion -> live BT table
    score_warnings: dict[str, list[str]] = field(default_factory=dict)
    mos: dict[str, pd.DataFrame] = field(default_factory=dict)  # criterion -> live MOS table
    mos_warnings: dict[str, list[str]] = field(default_factory=dict)


def status_of(participant: Participant, now: datetime) -> str:
    """completed | failed_attention | timed_out | declined | dropped | in_progress."""
    if participant.outcome:
        return participant.outcome
    if participant.deadline_at is not None and now > participant.deadline_at:
        return "timed_out"
    return "in_progress"


def participant_counts(session: Session, study: Study, now: datetime) -> dict[str, int]:
    participants = session.scalars(select(Participant).where(Participant.study_id == study.id))
    counts = Counter(status_of(p, now) for p in participants)
    started = sum(counts.values()) - counts["declined"]
    return {
        "arrived": sum(counts.values()),
        "started": started,
        "completed": counts["completed"],
        "in_progress": counts["in_progress"],
        "dropped": counts["failed_attention"] + counts["timed_out"],
        "failed_attention": counts["failed_attention"],
        "timed_out": counts["timed_out"],
        "declined": counts["declined"],
    }


def recent_participants(session: Session, study: Study, now: datetime, limit: int = 50) -> list:
    rows = session.scalars(
        select(Participant)
        .where(Participant.study_id == study.id)
        .order_by(Participant.created_at.desc())
        .limit(limit)
    ).all()
    answered = dict(
        session.execute(
            select(Answer.participant_id, func.count(Answer.id))
            .where(Answer.participant_id.in_([p.id for p in rows]))
            .group_by(Answer.participant_id)
        ).all()
    )
    return [
        {
            "participant": pseudonym(p.public_id),
            **identity(p),  # both ids, as the exports give them
            "status": status_of(p, now),
            "phase": p.phase,
            "answered": answered.get(p.id, 0),
            "created_at": p.created_at,
            "finished_at": p.finished_at,
            "last_seen_at": p.last_seen_at,
        }
        for p in rows
    ]


def coverage(session: Session, study: Study) -> list[dict]:
    """Assigned and answered main trials per criterion and variant pair (sorted pair)."""
    left, right = aliased(Stimulus), aliased(Stimulus)
    rows = session.execute(
        select(
            Trial.criterion,
            left.variant,
            right.variant,
            func.count(Trial.id),
            func.count(Answer.id),
            func.count(case((Trial.left_id.is_not(None), 1))),
        )
        .join(Participant, Participant.id == Trial.participant_id)
        .join(left, left.id == Trial.left_id)
        .outerjoin(right, right.id == Trial.right_id)
        .outerjoin(Answer, Answer.trial_id == Trial.id)
        .where(Participant.study_id == study.id, Trial.kind.in_(("pair", "rating")))
        .group_by(Trial.criterion, left.variant, right.variant)
    ).all()
    table: dict[tuple, dict] = {}
    for criterion, lv, rv, assigned, answered, _ in rows:
        arm = tuple(sorted((lv, rv))) if rv else (lv,)
        entry = table.setdefault(
            (criterion, arm),
            {"criterion": criterion, "arm": " vs ".join(arm), "assigned": 0, "answered": 0},
        )
        entry["assigned"] += assigned
        entry["answered"] += answered
    return [table[k] for k in sorted(table)]


def attention_summary(session: Session, study: Study) -> dict:
    rows = session.execute(
        select(Trial.check, Answer.passed, func.count(Answer.id))
        .join(Answer, Answer.trial_id == Trial.id)
        .join(Participant, Participant.id == Trial.participant_id)
        .where(Participant.study_id == study.id, Trial.check.is_not(None))
        .group_by(Trial.check, Answer.passed)
    ).all()
    out = {}
    for check in ("broken", "repeat"):
        total = sum(n for c, _, n in rows if c == check)
        failed = sum(n for c, passed, n in rows if c == check and passed is False)
        out[check] = {
            "answered": total,
            "failed": failed,
            "rate": failed / total if total else None,
        }
    return out


def live_tables(frame: pd.DataFrame, live) -> tuple[dict[str, pd.DataFrame], dict[str, list[str]]]:
    """Per criterion: ``live(frame, criterion=...)``'s table and its warnings."""
    tables, warnings = {}, {}
    for criterion in sorted(frame["criterion"].dropna().unique()) if len(frame) else []:
        table = live(frame, criterion=str(criterion))
        tables[str(criterion)] = table
        warnings[str(criterion)] = list(table.attrs.get("warnings", []))
    return tables, warnings


def build(session: Session, study: Study) -> Dashboard:
    from analysis.live import live_mos, live_scores

    now = utcnow()
    frame = frame_from_session(session, study.name)
    attentive = frame[frame["passed_checks"].fillna(True).astype(bool)]
    scores, warnings = live_tables(attentive[attentive["kind"] == "pair"], live_scores)
    mos, mos_warnings = live_tables(attentive[attentive["kind"] == "rating"], live_mos)
    latest = max(study.versions, key=lambda v: v.number)
    return Dashboard(
        study=study,
        kind=StudySpec.from_json(latest.spec_json).kind,
        counts=participant_counts(session, study, now),
        recent=recent_participants(session, study, now),
        coverage=coverage(session, study),
        attention=attention_summary(session, study),
        scores=scores,
        score_warnings=warnings,
        mos=mos,
        mos_warnings=mos_warnings,
    )
