"""A participant's way through a study, kept entirely on the server.

consent -> instructions -> check -> trials -> end (or declined). Passing the screen check
assigns the participant's trials: practice first, then one block per criterion with the
main trials and the attention trials (gold trials with a broken image, repeats of an earlier
trial with the sides swapped) at random positions drawn from the participant's recorded
seed. The scheduler (``study.scheduling``) chooses the main tasks inside the assignment
transaction from the study's running counts (``study.tallies``): ``balanced`` fills the whole
list at once, ``active`` fills each main trial when it becomes current. Left/right is
counterbalanced per variant pair and criterion.

Every function here runs inside one write transaction of the caller. Locks, always in this
order: the participant row (``FOR NO KEY UPDATE`` on PostgreSQL, taken by the statement that
loads it; SQLite serialises writers at ``BEGIN IMMEDIATE``), then the study row when trials are
assigned or a participant stops counting, then tally rows. ``NO KEY`` locks serialise the
assigners without blocking the foreign-key checks of rows that merely reference the study (a
new participant), which ``FOR UPDATE`` would, and could deadlock on.

A request works on the participant's trials as loaded by one query (:func:`load_trials`) and
writes back only what it changes, so an answer costs a handful of statements however large
the study is.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import bindparam, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from study import tallies
from study.catalogue import Catalogue, catalogue
from study.models import Answer, Participant, Study, StudyVersion, Trial, utcnow
from study.scheduling import PairTask, RatingTask, get_scheduler
from study.spec import StudySpec

ACTIVE_PHASES = ("instructions", "check", "trials")
MOBILE_UA = re.compile(r"Mobi|Android|iPhone|iPad|iPod|Opera Mini|IEMobile", re.IGNORECASE)
EXCLUDED_OUTCOMES = ("failed_attention", "timed_out", "declined")

# The statements of the answer path, built once: SQLAlchemy then reuses their compiled form
# without building and hashing a new statement each request.
_trials, _answers = Trial.__table__, Answer.__table__
_participants = Participant.__table__
LOAD_PARTICIPANT = (
    _participants.update()
    .where(_participants.c.public_id == bindparam("b_public_id"))
    .where(_participants.c.study_id == bindparam("b_study_id"))
    .values(last_seen_at=bindparam("b_now"))
    .returning(
        _participants.c.id, _participants.c.public_id, _participants.c.study_id,
        _participants.c.version_id, _participants.c.phase, _participants.c.outcome,
        _participants.c.order_seed, _participants.c.deadline_at,
    )
)  # fmt: skip
SAVE_PARTICIPANT = _participants.update().where(_participants.c.id == bindparam("b_id"))
_late = (
    (_participants.c.study_id == bindparam("study_id"))
    & (_participants.c.deadline_at < bindparam("now"))
    & _participants.c.outcome.is_(None)
    & _participants.c.phase.in_(ACTIVE_PHASES)
)
LOCK_STUDY = (  # and say whether any of its participants is past their time limit
    select(Study.id, exists().where(_late))
    .where(Study.id == bindparam("study_id"))
    .with_for_update(key_share=True)
)
LATE_PARTICIPANTS = (
    select(_participants.c.id, _participants.c.phase)
    .where(_late)
    .with_for_update(key_share=True, skip_locked=True)
)
TIME_OUT = (
    _participants.update()
    .where(_participants.c.id.in_(bindparam("ids", expanding=True)))
    .values(phase="end", outcome="timed_out", finished_at=bindparam("now"))
)
LOAD_TRIALS = (
    select(
        _trials.c.id, _trials.c.public_id, _trials.c.position, _trials.c.kind,
        _trials.c.presentation, _trials.c.criterion, _trials.c.check, _trials.c.repeat_of,
        _trials.c.expected, _trials.c.prompt_id, _trials.c.seed, _trials.c.left_id,
        _trials.c.right_id, _trials.c.shown_at,
        _answers.c.id, _answers.c.choice, _answers.c.rating, _answers.c.passed,
    )
    .outerjoin(_answers, _answers.c.trial_id == _trials.c.id)
    .where(_trials.c.participant_id == bindparam("participant_id"))
    .order_by(_trials.c.position)
)  # fmt: skip
INSERT_TRIALS = _trials.insert()
UPDATE_TRIAL = _trials.update().where(_trials.c.id == bindparam("trial_id"))
DELETE_TRIAL = _trials.delete().where(_trials.c.id == bindparam("trial_id"))
INSERT_ANSWER = _answers.insert().returning(_answers.c.id)


class FlowError(Exception):
    """A request the participant's state does not allow: an HTTP status and a clear sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def new_token(nbytes: int = 12) -> str:
    return secrets.token_urlsafe(nbytes)


def latest_version(session: Session, study: Study) -> StudyVersion:
    return session.scalars(
        select(StudyVersion)
        .where(StudyVersion.study_id == study.id)
        .order_by(StudyVersion.number.desc())
        .limit(1)
    ).one()


def lock_study(session: Session, study_id: int) -> None:
    """Serialise the assigners of this study (once per transaction), and time out its
    participants past their limit first, so that their tasks are free again."""
    if session.info.get("locked_study") == study_id:
        return
    now = utcnow()
    _, any_late = session.connection().execute(LOCK_STUDY, {"study_id": study_id, "now": now}).one()
    session.info["locked_study"] = study_id
    if any_late:
        expire_late_participants(session, study_id, now)


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


@dataclass(slots=True)
class ParticipantRow:
    """A participant as a request sees it, locked; changes go through :func:`change`."""

    id: int
    public_id: str
    study_id: int
    version_id: int
    phase: str
    outcome: str | None
    order_seed: int
    deadline_at: datetime | None


def load_participant(session: Session, study_id: int, public_id: str) -> ParticipantRow | None:
    """The participant, locked for this transaction and marked seen, in one statement."""
    row = (
        session.connection()
        .execute(
            LOAD_PARTICIPANT, {"b_public_id": public_id, "b_study_id": study_id, "b_now": utcnow()}
        )
        .first()
    )
    return None if row is None else ParticipantRow(*row)


def change(session: Session, participant: ParticipantRow, **fields) -> None:
    """Set columns of the participant's row (and the same attributes of ``participant``)."""
    for name, value in fields.items():
        if name in ParticipantRow.__slots__:
            setattr(participant, name, value)
    session.connection().execute(SAVE_PARTICIPANT, {"b_id": participant.id, **fields})


def finish(session: Session, participant: ParticipantRow, outcome: str, now=None) -> None:
    """End the session with ``outcome``; a participant who drops out stops counting."""
    counted = participant.phase == "trials"
    phase = "end" if outcome != "declined" else "declined"
    change(session, participant, phase=phase, outcome=outcome, finished_at=now or utcnow())
    if outcome in EXCLUDED_OUTCOMES and counted:
        lock_study(session, participant.study_id)
        tallies.subtract_participants(session, participant.study_id, [participant.id])


def is_late(participant: ParticipantRow, now: datetime) -> bool:
    return (
        participant.phase in ACTIVE_PHASES
        and participant.deadline_at is not None
        and now > participant.deadline_at
    )


def expire_if_late(session: Session, participant: ParticipantRow, now=None) -> bool:
    """Move a participant past their time limit to the end (timed out). True if it happened."""
    now = now or utcnow()
    if is_late(participant, now):
        finish(session, participant, "timed_out", now)
        return True
    return False


def expire_late_participants(session: Session, study_id: int, now: datetime) -> None:
    """Time out the study's participants past their limit (study row locked: :func:`lock_study`).

    Participants locked by a request of their own are skipped: that request times them out.
    """
    late = session.connection().execute(LATE_PARTICIPANTS, {"study_id": study_id, "now": now}).all()
    if late:
        session.connection().execute(TIME_OUT, {"ids": [pid for pid, _ in late], "now": now})
        tallies.subtract_participants(
            session, study_id, [pid for pid, phase in late if phase == "trials"]
        )


def complete(session: Session, participant: ParticipantRow) -> None:
    """Every trial answered: the participant gets the completion code."""
    if participant.phase == "trials":
        finish(session, participant, "completed")


def give_consent(
    session: Session, participant: ParticipantRow, spec: StudySpec, agree: bool
) -> None:
    if participant.phase != "consent":
        return  # a repeated form post: nothing to do, the caller redirects to the current phase
    now = utcnow()
    if not agree:
        finish(session, participant, "declined", now)
        return
    deadline = now + timedelta(minutes=spec.time_limit_minutes) if spec.time_limit_minutes else None
    change(
        session, participant, phase="instructions", consented_at=now,
        consent_version=spec.consent.version, deadline_at=deadline,
    )  # fmt: skip


def finish_instructions(session: Session, participant: ParticipantRow, spec: StudySpec) -> None:
    if participant.phase == "instructions":
        change(session, participant, phase="check", instructions_version=spec.instructions.version)


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


def pass_check(session: Session, participant: ParticipantRow, width: int, height: int) -> None:
    if participant.phase != "check":
        return
    assign(session, participant, catalogue(session, participant.version_id))
    change(session, participant, phase="trials", viewport_width=width, viewport_height=height)


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


@dataclass
class NewTrial:
    """A trial being planned, before it is inserted (the columns of ``trials``)."""

    public_id: str
    participant_id: int
    position: int
    kind: str
    presentation: str
    criterion: str
    check: str | None = None
    repeat_of: int | None = None
    expected: str | None = None
    prompt_id: str | None = None
    seed: int | None = None
    left_id: int | None = None
    right_id: int | None = None
    assigned_at: datetime | None = None


def assign(session: Session, participant: ParticipantRow, cat: Catalogue) -> None:
    """Create the participant's trials (once: a repeated check post finds them there)."""
    if session.scalar(select(Trial.id).where(Trial.participant_id == participant.id).limit(1)):
        return
    spec = cat.spec
    now = utcnow()
    lock_study(session, participant.study_id)
    rng = np.random.default_rng(participant.order_seed)
    slots = plan(spec, rng)
    presentation = "rating" if spec.kind == "rating" else "pair"
    trials = {
        id(slot): NewTrial(
            public_id=new_token(),
            participant_id=participant.id,
            position=position,
            kind=slot.kind,
            presentation=presentation,
            criterion=slot.criterion,
            check=slot.check,
        )
        for position, slot in enumerate(slots)
    }
    for slot in slots:
        if slot.repeat_of is not None:
            trials[id(slot)].repeat_of = trials[id(slot.repeat_of)].position
        if slot.kind == "practice":
            _fill_practice(trials[id(slot)], cat, rng)
        elif slot.check == "broken":
            _fill_broken(trials[id(slot)], cat, rng)
    kept = list(trials.values())
    if spec.scheduler == "balanced":
        scheduler = get_scheduler("balanced", **spec.scheduler_options)
        by_position = {t.position: t for t in kept}
        for criterion in spec.criteria:
            mains = [t for t in kept if t.kind == spec.kind and t.criterion == criterion.name]
            tally = tallies.read(session, cat, criterion.name)
            tasks = _next_tasks(scheduler, spec, tally, len(mains), rng)
            order = rng.permutation(len(tasks))
            for trial, k in zip(mains, order, strict=False):
                _fill_task(trial, tasks[int(k)], cat, tally, rng)
            tallies.add_assignments(
                session,
                cat.study_id,
                criterion.name,
                [_assignment(cat, t) for t in mains if t.left_id is not None],
            )
        for trial in kept:
            if trial.check == "repeat":
                original = by_position[trial.repeat_of]
                if original.left_id is not None:
                    _copy_swapped(trial, original)
        kept = [t for t in kept if t.left_id is not None]  # the participant has every task
    for trial in kept:
        if trial.left_id is not None:
            trial.assigned_at = now
    session.connection().execute(INSERT_TRIALS, [asdict(t) for t in kept])


def _assignment(cat: Catalogue, trial) -> tuple[str, int, str, str | None]:
    return (
        trial.prompt_id,
        trial.seed,
        cat.variant_of(trial.left_id),
        cat.variant_of(trial.right_id),
    )


def _next_tasks(scheduler, spec: StudySpec, tally: tallies.StudyTallies, n: int, rng) -> list:
    if spec.kind == "rating":
        return scheduler.next_ratings(tally.state, n, rng)
    return scheduler.next_pairs(tally.state, n, rng)


def _sides(
    task: PairTask, tally: tallies.StudyTallies, rng: np.random.Generator
) -> tuple[str, str]:
    """(left, right) variants: the variant that has been left less often in this pair goes left."""
    a, b = task.pair
    counts = tally.pairs.setdefault(task.pair, tallies.PairCounts())
    a_left, b_left = counts.a_left, counts.assigned - counts.a_left
    first_left = bool(rng.integers(2)) if a_left == b_left else a_left < b_left
    counts.assigned += 1
    counts.a_left += int(first_left)
    return (a, b) if first_left else (b, a)


def _fill_task(trial, task, cat: Catalogue, tally: tallies.StudyTallies, rng) -> None:
    trial.prompt_id, trial.seed = task.prompt_id, task.seed
    if isinstance(task, RatingTask):
        trial.left_id = cat.by_cell[(task.variant, task.prompt_id, task.seed)]
        return
    lv, rv = _sides(task, tally, rng)
    trial.left_id = cat.by_cell[(lv, task.prompt_id, task.seed)]
    trial.right_id = cat.by_cell[(rv, task.prompt_id, task.seed)]


def _fill_practice(trial: NewTrial, cat: Catalogue, rng) -> None:
    prompt_id, seed = cat.items[int(rng.integers(len(cat.items)))]
    trial.prompt_id, trial.seed = prompt_id, seed
    if cat.spec.kind == "rating":
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


def _fill_broken(trial: NewTrial, cat: Catalogue, rng) -> None:
    """A gold trial: a broken image (beside an intact one of the same prompt, for pairs)."""
    broken_id, (prompt_id, seed) = cat.broken[int(rng.integers(len(cat.broken)))]
    trial.prompt_id, trial.seed = prompt_id, seed
    if cat.spec.kind == "rating":
        trial.left_id, trial.expected = broken_id, "<=2"
        return
    partner = cat.by_cell[(cat.variants[int(rng.integers(len(cat.variants)))], prompt_id, seed)]
    if rng.integers(2):
        trial.left_id, trial.right_id, trial.expected = partner, broken_id, "left"
    else:
        trial.left_id, trial.right_id, trial.expected = broken_id, partner, "right"


def _copy_swapped(trial, original) -> None:
    """A repeat: the original trial again with the sides swapped."""
    trial.prompt_id, trial.seed = original.prompt_id, original.seed
    if original.right_id is None:
        trial.left_id = original.left_id
    else:
        trial.left_id, trial.right_id = original.right_id, original.left_id


# --- a participant's trials, as one request sees them ----------------------------------------


@dataclass(slots=True)
class TrialRow:
    """One of the participant's trials with its answer, as loaded for this request."""

    id: int
    public_id: str
    position: int
    kind: str
    presentation: str
    criterion: str
    check: str | None
    repeat_of: int | None
    expected: str | None
    prompt_id: str | None
    seed: int | None
    left_id: int | None
    right_id: int | None
    shown_at: datetime | None
    answer_id: int | None
    choice: str | None
    rating: int | None
    passed: bool | None

    @property
    def answered(self) -> bool:
        return self.answer_id is not None


def load_trials(session: Session, participant: ParticipantRow) -> list[TrialRow]:
    """The participant's trials in order, with their answers (one query)."""
    rows = session.connection().execute(LOAD_TRIALS, {"participant_id": participant.id})
    return [TrialRow(*row) for row in rows]


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
                    _copy_swapped(trial, original)
            else:
                filled = _fill_active(session, participant, cat, trials, trial)
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


def _fill_active(
    session: Session, participant: ParticipantRow, cat: Catalogue, trials: list[TrialRow], trial
) -> bool:
    """Fill an empty main trial of an ``active`` study now that it is current."""
    spec = cat.spec
    lock_study(session, participant.study_id)
    mine = [
        _task(cat, t)
        for t in trials
        if t.kind == spec.kind and t.criterion == trial.criterion and t.left_id is not None
    ]
    tally = tallies.read(session, cat, trial.criterion, mine)
    rng = np.random.default_rng([participant.order_seed, trial.position])
    scheduler = get_scheduler(spec.scheduler, **spec.scheduler_options)
    tasks = _next_tasks(scheduler, spec, tally, 1, rng)
    if not tasks:
        return False
    _fill_task(trial, tasks[0], cat, tally, rng)
    tallies.add_assignments(session, cat.study_id, trial.criterion, [_assignment(cat, trial)])
    return True


def _task(cat: Catalogue, trial: TrialRow) -> PairTask | RatingTask:
    left = cat.variant_of(trial.left_id)
    if trial.right_id is None:
        return RatingTask(trial.prompt_id, trial.seed, left)
    return PairTask.unordered(trial.prompt_id, trial.seed, left, cat.variant_of(trial.right_id))


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


# --- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    choice: str | None
    rating: int | None
    rt_ms: float


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
    retry, the participant's current trial afterwards or None; see :func:`current_trial` for
    ``fill_active``)."""
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
