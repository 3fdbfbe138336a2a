"""Which trials a participant gets, and which images fill them.

After the instructions :func:`assign` lays out the plan (practice, then one block per
criterion, the blocks in the order :func:`criterion_order` chooses, with the attention trials
at random positions drawn from the participant's seed) and fills the practice and gold
trials; the ``balanced`` scheduler fills the main trials there too, the ``active`` one fills
each main trial when it becomes current (:func:`fill_active`). Left/right is counterbalanced
per variant pair and criterion. Every trial gets image tokens of its own, so no two trials
(a repeat and the trial it repeats included) share an image URL.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from study import tallies
from study.catalogue import Catalogue
from study.flow.rows import ParticipantRow, TrialRow, change, new_token
from study.flow.study_lock import lock_study
from study.models import Participant, Trial, utcnow
from study.scheduling import PairTask, RatingTask, get_scheduler
from study.spec import StudySpec

# Built once, as the statements in study.flow.rows.
_trials = Trial.__table__
INSERT_TRIALS = _trials.insert()


@dataclass
class Slot:
    kind: str  # practice | pair | rating | attention
    criterion: str
    check: str | None = None
    repeat_of: Slot | None = None


#: Up to this many criteria every order of the blocks is used equally often; beyond, the
#: orders (k! of them) are too many to balance and each participant gets a random one.
BALANCED_ORDERS_UP_TO = 4
ORDER_SEPARATOR = "|"
#: The random stream of the block order, ``[order_seed, BLOCK_ORDER_STREAM]``: no trial
#: position (the streams of :func:`fill_active`) is ever this large.
BLOCK_ORDER_STREAM = 2**32 - 1


def criterion_order(
    session: Session, study_id: int, spec: StudySpec, rng: np.random.Generator
) -> tuple[str, ...]:
    """The order of a new participant's criterion blocks: for ``counterbalanced`` the order
    fewest of the study's participants have had so far (ties at random), so that each order is
    used equally often (to within one) and no criterion is always asked first. Needs the study
    lock (:func:`~study.flow.study_lock.lock_study`), like every assignment."""
    names = tuple(c.name for c in spec.criteria)
    if spec.criterion_order == "fixed" or len(names) == 1:
        return names
    if len(names) > BALANCED_ORDERS_UP_TO:
        return tuple(names[int(i)] for i in rng.permutation(len(names)))
    used = dict(
        session.execute(
            select(Participant.criterion_order, func.count())
            .where(Participant.study_id == study_id, Participant.criterion_order.is_not(None))
            .group_by(Participant.criterion_order)
        ).all()
    )
    orders = list(itertools.permutations(names))
    counts = np.array([used.get(ORDER_SEPARATOR.join(o), 0) for o in orders])
    fewest = np.flatnonzero(counts == counts.min())
    return orders[int(rng.choice(fewest))]


def plan(spec: StudySpec, rng: np.random.Generator, order: tuple[str, ...] = ()) -> list[Slot]:
    """The order of a participant's trials: practice, then one block per criterion, the
    blocks in ``order`` (the spec's order by default)."""
    main_kind = spec.kind
    order = order or tuple(c.name for c in spec.criteria)
    slots = [Slot("practice", order[i % len(order)]) for i in range(spec.practice_trials)]
    n_crit = len(order)
    for k, name in enumerate(order):
        block = [Slot(main_kind, name) for _ in range(spec.trials_per_criterion)]
        n_broken = spec.attention.broken // n_crit + (k < spec.attention.broken % n_crit)
        n_repeat = spec.attention.repeat // n_crit + (k < spec.attention.repeat % n_crit)
        for _ in range(n_broken):
            block.insert(int(rng.integers(len(block) + 1)), Slot("attention", name, "broken"))
        for _ in range(n_repeat):
            # after at least two main trials, repeating one at least two trials back if possible
            mains = [i for i, s in enumerate(block) if s.kind == main_kind]
            if len(mains) < 2:
                break
            at = int(rng.integers(mains[1] + 1, len(block) + 1))
            earlier = [i for i in mains if i < at - 1] or [i for i in mains if i < at]
            original = block[earlier[int(rng.integers(len(earlier)))]]
            block.insert(at, Slot("attention", name, "repeat", repeat_of=original))
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
    left_token: str | None = None
    right_token: str | None = None
    min_display_ms: int | None = None


def assign(session: Session, participant: ParticipantRow, cat: Catalogue) -> None:
    """Create the participant's trials (once: a repeated check post finds them there)."""
    if session.scalar(select(Trial.id).where(Trial.participant_id == participant.id).limit(1)):
        return
    spec = cat.spec
    now = utcnow()
    lock_study(session, participant.study_id)
    # The block order draws from a stream of its own: it depends on the study's state, and
    # the plan after it then depends on the seed and the order alone (a replay needs no more).
    order_rng = np.random.default_rng([participant.order_seed, BLOCK_ORDER_STREAM])
    order = criterion_order(session, participant.study_id, spec, order_rng)
    rng = np.random.default_rng(participant.order_seed)
    change(session, participant, criterion_order=ORDER_SEPARATOR.join(order))
    slots = plan(spec, rng, order)
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
            left_token=new_token(16),
            right_token=new_token(16) if presentation == "pair" else None,
            min_display_ms=spec.min_display_ms,
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
                    copy_swapped(trial, original)
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


def copy_swapped(trial, original) -> None:
    """A repeat: the original trial again with the sides swapped."""
    trial.prompt_id, trial.seed = original.prompt_id, original.seed
    if original.right_id is None:
        trial.left_id = original.left_id
    else:
        trial.left_id, trial.right_id = original.right_id, original.left_id


def fill_active(
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
