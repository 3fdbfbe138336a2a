"""The participant's trials during the trials phase: the current one (filled when it comes
up), the one after it, and how far along they are."""

from __future__ import annotations

from sqlalchemy import bindparam
from sqlalchemy.orm import Session

from study.catalogue import Catalogue
from study.flow import planning
from study.flow.rows import ParticipantRow, TrialRow
from study.models import Trial, utcnow

# Built once, as the statements in study.flow.rows.
_trials = Trial.__table__
UPDATE_TRIAL = _trials.update().where(_trials.c.id == bindparam("trial_id"))
DELETE_TRIAL = _trials.delete().where(_trials.c.id == bindparam("trial_id"))


def current_trial(
    session: Session,
    participant: ParticipantRow,
    cat: Catalogue,
    trials: list[TrialRow],
    *,
    fill_active: bool = True,
) -> TrialRow | None:
    """The first unanswered trial (filled and marked shown), or None when all are answered.

    With ``fill_active=False`` a trial the active scheduler has yet to fill comes back empty
    (``left_id`` None), untouched: the caller fills it in a transaction of its own.
    """
    now = utcnow()
    for trial in [t for t in trials if not t.answered]:
        changes = {}
        if trial.left_id is None:
            if trial.check != "repeat" and not fill_active:
                return trial
            if trial.check == "repeat":
                original = next((t for t in trials if t.position == trial.repeat_of), None)
                filled = original is not None and original.left_id is not None
                if filled:
                    planning.copy_swapped(trial, original)
            else:
                filled = planning.fill_active(session, participant, cat, trials, trial)
            if not filled:  # nothing left to ask: the trial goes
                session.connection().execute(DELETE_TRIAL, {"trial_id": trial.id})
                trials.remove(trial)
                continue
            changes = {
                "prompt_id": trial.prompt_id, "seed": trial.seed, "left_id": trial.left_id,
                "right_id": trial.right_id, "assigned_at": now,
            }  # fmt: skip
        if trial.shown_at is None:
            trial.shown_at = changes["shown_at"] = now
        if changes:
            session.connection().execute(UPDATE_TRIAL, {"trial_id": trial.id, **changes})
        return trial
    return None


def following(trials: list[TrialRow], trial: TrialRow) -> TrialRow | None:
    """The trial after ``trial`` (for preloading its images)."""
    index = trials.index(trial)
    return trials[index + 1] if index + 1 < len(trials) else None


def progress(trials: list[TrialRow]) -> dict:
    out = {"done": 0, "total": 0, "practice_done": 0, "practice_total": 0}
    for trial in trials:
        prefix = "practice_" if trial.kind == "practice" else ""
        out[prefix + "total"] += 1
        out[prefix + "done"] += trial.answered
    return out
