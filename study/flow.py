"""A participant's way through a study, kept entirely on the server.

consent -> instructions -> check -> trials -> end (or declined). Passing the screen check
assigns the participant's trials: practice first, then one block per criterion with the
main trials and the attention trials (gold trials with a broken image, repeats of an earlier
trial with the sides swapped) at random positions drawn from the participant's recorded
seed. The scheduler (``study.scheduling``) chooses the main tasks inside the assignment
transaction: ``balanced`` fills the whole list at once, ``active`` fills each main trial
when it becomes current. Left/right is counterbalanced per variant pair and criterion.

Every function here runs inside one write transaction of the caller; the participant row is
locked first (``FOR NO KEY UPDATE`` on PostgreSQL; SQLite serialises writers at ``BEGIN
IMMEDIATE``), then the study row when trials are assigned, always in that order. ``NO KEY``
locks serialise the assigners without blocking the foreign-key checks of rows that merely
reference the study (a new participant), which ``FOR UPDATE`` would, and could deadlock on.
"""

from __future__ import annotations

import functools
import itertools
import re
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from study.models import (
    Answer,
    Participant,
    Stimulus,
    Study,
    StudyVersion,
    Trial,
    VersionStimulus,
    utcnow,
)
from study.scheduling import PairTask, RatingTask, SchedulingState, get_scheduler
from study.spec import StudySpec

ACTIVE_PHASES = ("instructions", "check", "trials")
MOBILE_UA = re.compile(r"Mobi|Android|iPhone|iPad|iPod|Opera Mini|IEMobile", re.IGNORECASE)
EXCLUDED_OUTCOMES = ("failed_attention", "timed_out", "declined")


class FlowError(Exception):
    """A request the participant's state does not allow: an HTTP status and a clear sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def new_token(nbytes: int = 12) -> str:
    return secrets.token_urlsafe(nbytes)


@functools.lru_cache(maxsize=64)
def _parse_spec(version_id: int, spec_json: str) -> StudySpec:
    return StudySpec.from_json(spec_json)


def spec_of(version: StudyVersion) -> StudySpec:
    return _parse_spec(version.id, version.spec_json)


def latest_version(session: Session, study: Study) -> StudyVersion:
    return session.scalars(
        select(StudyVersion)
        .where(StudyVersion.study_id == study.id)
        .order_by(StudyVersion.number.desc())
        .limit(1)
    ).one()


# --- entering and moving through the phases --------------------------------------------------


def enter(
    session: Session,
    study: Study,
    *,
    external_id: str,
    source: str,
    prolific_study_id: str | None = None,
    prolific_session_id: str | None = None,
    user_agent: str | None = None,
) -> Participant:
    """The participant with this id in this study, created on first arrival."""
    query = select(Participant).where(
        Participant.study_id == study.id, Participant.external_id == external_id
    )
    participant = session.scalar(query.with_for_update(key_share=True))
    if participant is not None:
        participant.last_seen_at = utcnow()
        return participant
    if study.status != "open":
        raise FlowError(410, "This study is not accepting participants any more.")
    participant = Participant(
        public_id=new_token(),
        study_id=study.id,
        version_id=latest_version(session, study).id,
        external_id=external_id,
        source=source,
        prolific_study_id=prolific_study_id,
        prolific_session_id=prolific_session_id,
        phase="consent",
        order_seed=secrets.randbits(62),
        user_agent=(user_agent or "")[:400],
    )
    try:
        with session.begin_nested():
            session.add(participant)
    except IntegrityError:  # the same person arrived twice at once (two tabs): use the first
        participant = session.scalar(query.with_for_update(key_share=True))
    return participant


def expire_if_late(participant: Participant, now: datetime | None = None) -> bool:
    """Move a participant past their time limit to the end (timed out). True if it happened."""
    now = now or utcnow()
    if (
        participant.phase in ACTIVE_PHASES
        and participant.deadline_at is not None
        and now > participant.deadline_at
    ):
        _finish(participant, "timed_out", now)
        return True
    return False


def _finish(participant: Participant, outcome: str, now: datetime | None = None) -> None:
    participant.phase = "end" if outcome != "declined" else "declined"
    participant.outcome = outcome
    participant.finished_at = now or utcnow()


def complete(participant: Participant) -> None:
    """Every trial answered: the participant gets the completion code."""
    if participant.phase == "trials":
        _finish(participant, "completed")


def give_consent(participant: Participant, spec: StudySpec, agree: bool) -> None:
    if participant.phase != "consent":
        return  # a repeated form post: nothing to do, the caller redirects to the current phase
    now = utcnow()
    if not agree:
        _finish(participant, "declined", now)
        return
    participant.phase = "instructions"
    participant.consented_at = now
    participant.consent_version = spec.consent.version
    if spec.time_limit_minutes:
        participant.deadline_at = now + timedelta(minutes=spec.time_limit_minutes)


def finish_instructions(participant: Participant, spec: StudySpec) -> None:
    if participant.phase == "instructions":
        participant.phase = "check"
        participant.instructions_version = spec.instructions.version


def screen_refusal(
    spec: StudySpec, width: int, height: int, touch: bool, user_agent: str
) -> str | None:
    """Why this screen cannot take part, or None."""
    if spec.refuse_mobile and (touch or MOBILE_UA.search(user_agent or "")):
        return (
            "This study needs a desktop or laptop computer; it cannot be done on a phone or tablet."
        )
    if width < spec.min_width or height < spec.min_height:
        return (
            f"Your browser window is too small ({width}x{height}). This study needs at least "
            f"{spec.min_width}x{spec.min_height}: enlarge the window (or zoom out) and try again."
        )
    return None


def pass_check(
    session: Session, participant: Participant, spec: StudySpec, width: int, height: int
) -> None:
    if participant.phase != "check":
        return
    participant.viewport_width, participant.viewport_height = width, height
    assign(session, participant, spec)
    participant.phase = "trials"


# --- the study's images and the scheduling state ---------------------------------------------


@dataclass(frozen=True)
class Catalogue:
    """A study version's stimuli: what can be assigned."""

    variants: list[str]
    items: list[tuple[str, int]]
    pairs: list[tuple[str, str]]
    by_cell: dict[tuple[str, str, int], int]  # (variant, prompt_id, seed) -> stimulus id
    broken: list[tuple[int, tuple[str, int]]]  # (stimulus id, item)


@functools.lru_cache(maxsize=32)
def _catalogue(version_id: int, spec_json: str, rows: tuple) -> Catalogue:
    spec = _parse_spec(version_id, spec_json)
    by_cell, broken = {}, []
    for sid, role, variant, prompt_id, seed in rows:
        if role == "broken":
            broken.append((sid, (prompt_id, seed)))
        else:
            by_cell[(variant, prompt_id, seed)] = sid
    variants = list(spec.variants) if spec.variants else sorted({v for v, _, _ in by_cell})
    items = sorted({(p, s) for _, p, s in by_cell})
    if spec.compare == "reference":
        pairs = [(spec.reference, v) for v in variants if v != spec.reference]
    else:
        pairs = list(itertools.combinations(variants, 2))
    return Catalogue(variants, items, pairs, by_cell, sorted(broken))


def catalogue(session: Session, version: StudyVersion) -> Catalogue:
    rows = session.execute(
        select(Stimulus.id, Stimulus.role, Stimulus.variant, Stimulus.prompt_id, Stimulus.seed)
        .join(VersionStimulus, VersionStimulus.stimulus_id == Stimulus.id)
        .where(VersionStimulus.version_id == version.id)
        .order_by(Stimulus.id)
    ).all()
    return _catalogue(version.id, version.spec_json, tuple(tuple(r) for r in rows))


@dataclass
class StudyTallies:
    """What the study has assigned and learned so far, for one criterion."""

    state: SchedulingState
    left_counts: Counter  # (variant_a, variant_b) of a sorted pair -> times variant_a was left
    pair_counts: Counter  # (variant_a, variant_b) -> pair trials


def tallies(
    session: Session,
    study_id: int,
    participant: Participant,
    cat: Catalogue,
    criterion: str,
    now: datetime,
) -> StudyTallies:
    """The scheduling state of one criterion, from one grouped query over the study's trials.

    Counted: trials of participants who are still in time or who completed; those who failed
    the attention checks, timed out or declined free their tasks for others.
    """
    left, right = aliased(Stimulus), aliased(Stimulus)
    counted = and_(
        Participant.study_id == study_id,
        or_(Participant.outcome.is_(None), Participant.outcome.not_in(EXCLUDED_OUTCOMES)),
        or_(
            Participant.outcome.is_not(None),
            Participant.deadline_at.is_(None),
            Participant.deadline_at >= now,
        ),
    )
    base = (
        select(Trial.prompt_id, Trial.seed, left.variant, right.variant)
        .join(left, left.id == Trial.left_id)
        .outerjoin(right, right.id == Trial.right_id)
        .where(Trial.criterion == criterion, Trial.kind.in_(("pair", "rating")))
    )
    rows = session.execute(
        base.add_columns(Answer.choice, func.count())
        .join(Participant, Participant.id == Trial.participant_id)
        .outerjoin(Answer, Answer.trial_id == Trial.id)
        .where(counted)
        .group_by(Trial.prompt_id, Trial.seed, left.variant, right.variant, Answer.choice)
    ).all()
    mine = session.execute(base.where(Trial.participant_id == participant.id)).all()
    index = {v: k for k, v in enumerate(cat.variants)}
    state = SchedulingState(variants=cat.variants, items=cat.items, pairs=cat.pairs)
    for prompt_id, seed, lv, rv in mine:
        if rv is None:
            state.participant_ratings.add(RatingTask(prompt_id, seed, lv))
        else:
            state.participant_pairs.add(PairTask.unordered(prompt_id, seed, lv, rv))
    left_counts, pair_counts = Counter(), Counter()
    for prompt_id, seed, lv, rv, choice, n in rows:
        if rv is None:
            state.assigned_ratings[RatingTask(prompt_id, seed, lv)] += n
            continue
        task = PairTask.unordered(prompt_id, seed, lv, rv)
        state.assigned_pairs[task] += n
        pair_counts[task.pair] += n
        if lv == task.variant_a:
            left_counts[task.pair] += n
        if choice is not None and lv in index and rv in index:
            i, j = index[lv], index[rv]
            if choice == "left":
                state.wins[i, j] += n
            elif choice == "right":
                state.wins[j, i] += n
            else:
                state.wins[i, j] += 0.5 * n
                state.wins[j, i] += 0.5 * n
    return StudyTallies(state, left_counts, pair_counts)


def _sides(task: PairTask, tally: StudyTallies, rng: np.random.Generator) -> tuple[str, str]:
    """(left, right) variants: the variant that has been left less often in this pair goes left."""
    a, b = task.pair
    a_left = tally.left_counts[task.pair]
    b_left = tally.pair_counts[task.pair] - a_left
    first_left = bool(rng.integers(2)) if a_left == b_left else a_left < b_left
    tally.pair_counts[task.pair] += 1
    tally.left_counts[task.pair] += int(first_left)
    return (a, b) if first_left else (b, a)


def _lock_study(session: Session, study_id: int) -> None:
    session.execute(select(Study.id).where(Study.id == study_id).with_for_update(key_share=True))


# --- assignment ------------------------------------------------------------------------------


@dataclass
class Slot:
    kind: str  # practice | pair | rating | attention
    criterion: str
    check: str | None = None
    repeat_of: Slot | None = None


def plan(spec: StudySpec, rng: np.random.Generator) -> list[Slot]:
    """The order of a participant's trials: practice, then one block per criterion."""
    main_kind = spec.kind
    slots = [
        Slot("practice", spec.criteria[i % len(spec.criteria)].name)
        for i in range(spec.practice_trials)
    ]
    n_crit = len(spec.criteria)
    for k, criterion in enumerate(spec.criteria):
        block = [Slot(main_kind, criterion.name) for _ in range(spec.trials_per_criterion)]
        n_broken = spec.attention.broken // n_crit + (k < spec.attention.broken % n_crit)
        n_repeat = spec.attention.repeat // n_crit + (k < spec.attention.repeat % n_crit)
        for _ in range(n_broken):
            block.insert(
                int(rng.integers(len(block) + 1)), Slot("attention", criterion.name, "broken")
            )
        for _ in range(n_repeat):
            # after at least two main trials, repeating one at least two trials back if possible
            mains = [i for i, s in enumerate(block) if s.kind == main_kind]
            if len(mains) < 2:
                break
            at = int(rng.integers(mains[1] + 1, len(block) + 1))
            earlier = [i for i in mains if i < at - 1] or [i for i in mains if i < at]
            original = block[earlier[int(rng.integers(len(earlier)))]]
            block.insert(at, Slot("attention", criterion.name, "repeat", repeat_of=original))
        slots += block
    return slots


def assign(session: Session, participant: Participant, spec: StudySpec) -> None:
    """Create the participant's trials (once: a repeated check post finds them there)."""
    if session.scalar(select(Trial.id).where(Trial.participant_id == participant.id).limit(1)):
        return
    _lock_study(session, participant.study_id)
    rng = np.random.default_rng(participant.order_seed)
    cat = catalogue(session, participant.version)
    slots = plan(spec, rng)
    now = utcnow()
    trials: dict[int, Trial] = {}
    for position, slot in enumerate(slots):
        presentation = "rating" if spec.kind == "rating" else "pair"
        trials[id(slot)] = Trial(
            public_id=new_token(),
            participant_id=participant.id,
            position=position,
            kind=slot.kind,
            presentation=presentation,
            criterion=slot.criterion,
            check=slot.check,
            repeat_of=None,
        )
    for slot in slots:
        if slot.repeat_of is not None:
            trials[id(slot)].repeat_of = trials[id(slot.repeat_of)].position
    session.add_all(trials.values())
    session.flush()

    by_position = {t.position: t for t in trials.values()}
    for slot in slots:
        trial = trials[id(slot)]
        if slot.kind == "practice":
            _fill_practice(trial, cat, spec, rng)
        elif slot.check == "broken":
            _fill_broken(trial, cat, spec, rng)
    if spec.scheduler == "balanced":
        scheduler = get_scheduler("balanced", **spec.scheduler_options)
        for criterion in spec.criteria:
            mains = [
                t
                for t in by_position.values()
                if t.kind == spec.kind and t.criterion == criterion.name
            ]
            mains.sort(key=lambda t: t.position)
            tally = tallies(session, participant.study_id, participant, cat, criterion.name, now)
            tasks = _next_tasks(scheduler, spec, tally, len(mains), rng)
            order = rng.permutation(len(tasks))
            for trial, k in zip(mains, order, strict=False):
                _fill_task(trial, tasks[int(k)], cat, tally, rng)
            for trial in mains[len(tasks) :]:  # the participant has every task there is
                _drop(session, trial, by_position)
        for trial in sorted(by_position.values(), key=lambda t: t.position):
            if trial.check == "repeat":
                _fill_repeat(session, trial, by_position.get(trial.repeat_of))
    for trial in by_position.values():
        if trial.left_id is not None:
            trial.assigned_at = now
    session.flush()


def _next_tasks(scheduler, spec: StudySpec, tally: StudyTallies, n: int, rng) -> list:
    if spec.kind == "rating":
        return scheduler.next_ratings(tally.state, n, rng)
    return scheduler.next_pairs(tally.state, n, rng)


def _fill_task(trial: Trial, task, cat: Catalogue, tally: StudyTallies, rng) -> None:
    trial.prompt_id, trial.seed = task.prompt_id, task.seed
    if isinstance(task, RatingTask):
        trial.left_id = cat.by_cell[(task.variant, task.prompt_id, task.seed)]
        return
    lv, rv = _sides(task, tally, rng)
    trial.left_id = cat.by_cell[(lv, task.prompt_id, task.seed)]
    trial.right_id = cat.by_cell[(rv, task.prompt_id, task.seed)]


def _fill_practice(trial: Trial, cat: Catalogue, spec: StudySpec, rng) -> None:
    prompt_id, seed = cat.items[int(rng.integers(len(cat.items)))]
    trial.prompt_id, trial.seed = prompt_id, seed
    if spec.kind == "rating":
        variant = cat.variants[int(rng.integers(len(cat.variants)))]
        trial.left_id = cat.by_cell[(variant, prompt_id, seed)]
        return
    a, b = cat.pairs[int(rng.integers(len(cat.pairs)))]
    if rng.integers(2):
        a, b = b, a
    trial.left_id, trial.right_id = (
        cat.by_cell[(a, prompt_id, seed)],
        cat.by_cell[(b, prompt_id, seed)],
    )


def _fill_broken(trial: Trial, cat: Catalogue, spec: StudySpec, rng) -> None:
    """A gold trial: a broken image (beside an intact one of the same prompt, for pairs)."""
    broken_id, (prompt_id, seed) = cat.broken[int(rng.integers(len(cat.broken)))]
    trial.prompt_id, trial.seed = prompt_id, seed
    if spec.kind == "rating":
        trial.left_id, trial.expected = broken_id, "<=2"
        return
    partner = cat.by_cell[(cat.variants[int(rng.integers(len(cat.variants)))], prompt_id, seed)]
    if rng.integers(2):
        trial.left_id, trial.right_id, trial.expected = partner, broken_id, "left"
    else:
        trial.left_id, trial.right_id, trial.expected = broken_id, partner, "right"


def _fill_repeat(session: Session, trial: Trial, original: Trial | None) -> None:
    """The original trial again, sides swapped; dropped if the original could not be filled."""
    if original is None or original.left_id is None:
        session.delete(trial)
        return
    trial.prompt_id, trial.seed = original.prompt_id, original.seed
    if original.right_id is None:
        trial.left_id = original.left_id
    else:
        trial.left_id, trial.right_id = original.right_id, original.left_id


def _drop(session: Session, trial: Trial, by_position: dict[int, Trial]) -> None:
    by_position.pop(trial.position, None)
    session.delete(trial)


def _fill_active(session: Session, participant: Participant, spec: StudySpec, trial: Trial) -> bool:
    """Fill an empty main trial of an ``active`` study now that it is current."""
    _lock_study(session, participant.study_id)
    cat = catalogue(session, participant.version)
    tally = tallies(session, participant.study_id, participant, cat, trial.criterion, utcnow())
    rng = np.random.default_rng([participant.order_seed, trial.position])
    scheduler = get_scheduler(spec.scheduler, **spec.scheduler_options)
    tasks = _next_tasks(scheduler, spec, tally, 1, rng)
    if not tasks:
        return False
    _fill_task(trial, tasks[0], cat, tally, rng)
    trial.assigned_at = utcnow()
    return True


# --- trials and answers ----------------------------------------------------------------------


def current_trial(session: Session, participant: Participant, spec: StudySpec) -> Trial | None:
    """The first unanswered trial (filled and marked shown), or None when all are answered."""
    while True:
        trial = session.scalar(
            select(Trial)
            .outerjoin(Answer, Answer.trial_id == Trial.id)
            .where(Trial.participant_id == participant.id, Answer.id.is_(None))
            .order_by(Trial.position)
            .limit(1)
        )
        if trial is None:
            return None
        if trial.left_id is None:
            filled = (
                _fill_repeat_now(session, participant, trial)
                if trial.check == "repeat"
                else _fill_active(session, participant, spec, trial)
            )
            if not filled:
                session.delete(trial)
                session.flush()
                continue
        if trial.shown_at is None:
            trial.shown_at = utcnow()
        return trial


def _fill_repeat_now(session: Session, participant: Participant, trial: Trial) -> bool:
    original = session.scalar(
        select(Trial).where(
            Trial.participant_id == participant.id, Trial.position == trial.repeat_of
        )
    )
    if original is None or original.left_id is None:
        return False
    _fill_repeat(session, trial, original)
    trial.assigned_at = utcnow()
    return True


def next_trial_after(session: Session, trial: Trial) -> Trial | None:
    """The trial after ``trial`` (for preloading its images), if it is filled already."""
    return session.scalar(
        select(Trial)
        .where(Trial.participant_id == trial.participant_id, Trial.position > trial.position)
        .order_by(Trial.position)
        .limit(1)
    )


def progress(session: Session, participant: Participant) -> dict:
    rows = session.execute(
        select(Trial.kind, func.count(Trial.id), func.count(Answer.id))
        .outerjoin(Answer, Answer.trial_id == Trial.id)
        .where(Trial.participant_id == participant.id)
        .group_by(Trial.kind)
    ).all()
    out = {"done": 0, "total": 0, "practice_done": 0, "practice_total": 0}
    for kind, total, done in rows:
        prefix = "practice_" if kind == "practice" else ""
        out[prefix + "total"] += total
        out[prefix + "done"] += done
    return out


@dataclass(frozen=True)
class Submitted:
    choice: str | None
    rating: int | None
    rt_ms: float


def record_answer(
    session: Session,
    participant: Participant,
    spec: StudySpec,
    trial_public_id: str,
    submitted: Submitted,
) -> str:
    """Store an answer: ``"recorded"``, or ``"already_recorded"`` for an identical retry."""
    trial = session.scalar(
        select(Trial).where(
            Trial.public_id == trial_public_id, Trial.participant_id == participant.id
        )
    )
    if trial is None:
        raise FlowError(404, "There is no such trial in your session.")
    existing = session.scalar(select(Answer).where(Answer.trial_id == trial.id))
    if existing is not None:
        if (existing.choice, existing.rating) == (submitted.choice, submitted.rating):
            return "already_recorded"
        raise FlowError(409, "This trial has already been answered; its answer cannot change.")
    if participant.phase != "trials":
        raise FlowError(409, "Your session is not in the trials phase.")
    current = current_trial(session, participant, spec)
    if current is None or current.id != trial.id:
        raise FlowError(409, "This is not your current trial; reload the page to continue.")
    _validate(trial, spec, submitted)

    now = utcnow()
    answer = Answer(
        trial_id=trial.id,
        participant_id=participant.id,
        choice=submitted.choice,
        rating=submitted.rating,
        rt_ms=submitted.rt_ms,
        server_ms=(now - trial.shown_at).total_seconds() * 1000 if trial.shown_at else None,
        answered_at=now,
        passed=_check_passed(session, trial, submitted),
    )
    session.add(answer)
    session.flush()
    if trial.check == "broken" and answer.passed is False:
        failures = session.scalar(
            select(func.count(Answer.id))
            .join(Trial, Trial.id == Answer.trial_id)
            .where(
                Answer.participant_id == participant.id,
                Trial.check == "broken",
                Answer.passed.is_(False),
            )
        )
        if failures > spec.attention.max_failures:
            _finish(participant, "failed_attention", now)
    return "recorded"  # the caller's next current_trial() completes a finished participant


def _validate(trial: Trial, spec: StudySpec, submitted: Submitted) -> None:
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


def _check_passed(session: Session, trial: Trial, submitted: Submitted) -> bool | None:
    if trial.check == "broken":
        if trial.expected == "<=2":
            return submitted.rating is not None and submitted.rating <= 2
        return submitted.choice == trial.expected
    if trial.check == "repeat":
        original = session.scalar(
            select(Answer)
            .join(Trial, Trial.id == Answer.trial_id)
            .where(Trial.participant_id == trial.participant_id, Trial.position == trial.repeat_of)
        )
        if original is None:
            return None
        if submitted.rating is not None:
            return original.rating is not None and abs(original.rating - submitted.rating) <= 1
        mirrored = {"left": "right", "right": "left", "tie": "tie"}[submitted.choice]
        return original.choice == mirrored
    return None
