"""An answer to the current trial: validated, stored with its attention or repeat check,
then the participant moves on (or finishes, or fails the attention checks)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from study import tallies
from study.catalogue import Catalogue
from study.flow.errors import FlowError
from study.flow.lifecycle import EXCLUDED_OUTCOMES, complete, finish
from study.flow.rows import ParticipantRow, TrialRow
from study.flow.trials import current_trial
from study.models import Answer, utcnow
from study.spec import StudySpec

# Built once, as the statements in study.flow.rows.
_answers = Answer.__table__
INSERT_ANSWER = _answers.insert().returning(_answers.c.id)


@dataclass(frozen=True)
class Submitted:
    choice: str | None
    rating: int | None
    rt_ms: float
    load_ms: float | None = None  # client: from receiving the trial to its images displayed


def record_answer(
    session: Session,
    participant: ParticipantRow,
    cat: Catalogue,
    trials: list[TrialRow],
    trial_public_id: str,
    submitted: Submitted,
    *,
    fill_active: bool = True,
) -> tuple[str, TrialRow | None]:
    """Store an answer and move on: (``"recorded"`` or ``"already_recorded"`` for an identical
    retry, the participant's current trial afterwards or None; see
    :func:`~study.flow.trials.current_trial` for ``fill_active``)."""
    spec = cat.spec
    trial = next((t for t in trials if t.public_id == trial_public_id), None)
    if trial is None:
        raise FlowError(404, "There is no such trial in your session.")
    status = "already_recorded"
    if trial.answered:
        if (trial.choice, trial.rating) != (submitted.choice, submitted.rating):
            raise FlowError(409, "This trial has already been answered; its answer cannot change.")
    else:
        if participant.phase != "trials":
            raise FlowError(409, "Your session is not in the trials phase.")
        current = next((t for t in trials if not t.answered), None)
        if current is not trial or trial.left_id is None:
            raise FlowError(409, "This is not your current trial; reload the page to continue.")
        _validate(trial, spec, submitted)
        _store(session, participant, spec, trial, trials, submitted)
        status = "recorded"
    current = None
    if participant.phase == "trials":
        current = current_trial(session, participant, cat, trials, fill_active=fill_active)
    if current is None:
        complete(session, participant)
    if (
        status == "recorded"
        and trial.kind == "pair"
        and participant.outcome not in EXCLUDED_OUTCOMES
    ):
        # last: after the study lock that filling the next trial may have taken (tallies doc)
        left, right = cat.variant_of(trial.left_id), cat.variant_of(trial.right_id)
        tallies.add_answer(
            session, cat.study_id, trial.criterion,
            (trial.prompt_id, trial.seed, left, right, trial.choice),
        )  # fmt: skip
    return status, current


def _store(
    session: Session,
    participant: ParticipantRow,
    spec: StudySpec,
    trial: TrialRow,
    trials: list[TrialRow],
    submitted: Submitted,
) -> None:
    now = utcnow()
    trial.choice, trial.rating = submitted.choice, submitted.rating
    trial.passed = _check_passed(trial, trials, submitted)
    trial.answer_id = session.connection().scalar(
        INSERT_ANSWER,
        {
            "trial_id": trial.id,
            "participant_id": participant.id,
            "choice": submitted.choice,
            "rating": submitted.rating,
            "rt_ms": submitted.rt_ms,
            "load_ms": submitted.load_ms,
            "server_ms": (now - trial.shown_at).total_seconds() * 1000 if trial.shown_at else None,
            "answered_at": now,
            "passed": trial.passed,
        },
    )
    if trial.check == "broken" and trial.passed is False:
        failures = sum(t.check == "broken" and t.passed is False for t in trials)
        if failures > spec.attention.max_failures:
            finish(session, participant, "failed_attention", now)


def _validate(trial: TrialRow, spec: StudySpec, submitted: Submitted) -> None:
    if trial.presentation == "rating":
        if submitted.choice is not None or submitted.rating is None:
            raise FlowError(400, "This trial needs a rating, not a choice.")
        if submitted.rating not in spec.scale_labels:
            raise FlowError(400, f"The rating must be one of {sorted(spec.scale_labels)}.")
        return
    if submitted.rating is not None or submitted.choice is None:
        raise FlowError(400, "This trial needs a choice (left or right), not a rating.")
    allowed = ("left", "right", "tie") if spec.tie else ("left", "right")
    if submitted.choice not in allowed:
        raise FlowError(400, f"The choice must be one of: {', '.join(allowed)}.")


def _check_passed(trial: TrialRow, trials: list[TrialRow], submitted: Submitted) -> bool | None:
    if trial.check == "broken":
        if trial.expected == "<=2":
            return submitted.rating is not None and submitted.rating <= 2
        return submitted.choice == trial.expected
    if trial.check == "repeat":
        original = next((t for t in trials if t.position == trial.repeat_of), None)
        if original is None or not original.answered:
            return None
        if submitted.rating is not None:
            return original.rating is not None and abs(original.rating - submitted.rating) <= 1
        mirrored = {"left": "right", "right": "left", "tie": "tie"}[submitted.choice]
        return original.choice == mirrored
    return None
