"""Running counts of what a study has assigned and learned, for the schedulers.

Two small tables replace a grouped scan over every trial of the study at each assignment:

- ``tally_pairs``: per study, criterion and variant pair (``variant_a < variant_b``): pair
  trials assigned, how many with ``variant_a`` on the left, and the answers (a won, b won, tie);
- ``tally_cells``: per study, criterion, arm (a variant pair, or a rated variant with
  ``variant_b`` empty) and item (prompt, seed): trials assigned.

They count the main trials (kinds pair and rating) that have images, of every participant who
has not dropped out. A participant who fails the attention checks or times out is subtracted
when that happens (``study.flow.lifecycle.finish``), so their tasks go back to the pool. Each
count changes in the transaction that changes what it counts. Lock order: assignments and
subtractions hold the study row lock; an answer adds to one pair row, after the study lock
when its transaction takes that too, so tally rows are never waited for in two orders.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Table, bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from study.catalogue import Catalogue
from study.models import Answer, Stimulus, TallyCell, TallyPair, Trial
from study.scheduling import PairTask, RatingTask, SchedulingState

MAIN_KINDS = ("pair", "rating")
PAIR_KEY = ("study_id", "criterion", "variant_a", "variant_b")
CELL_KEY = (*PAIR_KEY, "prompt_id", "seed")
PAIR_COUNTS = ("assigned", "a_left", "a_wins", "b_wins", "ties")

# Built once (see study.flow.rows): the statements an assignment or an answer runs.
_of_criterion = (
    TallyCell.study_id == bindparam("study_id"),
    TallyCell.criterion == bindparam("criterion"),
)
READ_PAIRS = select(
    TallyPair.variant_a, TallyPair.variant_b, *(getattr(TallyPair, c) for c in PAIR_COUNTS)
).where(TallyPair.study_id == bindparam("study_id"), TallyPair.criterion == bindparam("criterion"))
_READ_CELLS = select(
    TallyCell.variant_a, TallyCell.variant_b, TallyCell.prompt_id, TallyCell.seed,
    TallyCell.assigned,
).where(*_of_criterion)  # fmt: skip
READ_ARM = _READ_CELLS.where(
    TallyCell.variant_a == bindparam("variant_a"), TallyCell.variant_b == bindparam("variant_b")
)
READ_PAIR_CELLS = _READ_CELLS.where(TallyCell.variant_b != "")
READ_RATING_CELLS = _READ_CELLS.where(TallyCell.variant_b == "")
_UPSERTS: dict[tuple[str, str], object] = {}


@dataclass
class PairCounts:
    assigned: int = 0
    a_left: int = 0
    a_wins: int = 0
    b_wins: int = 0
    ties: int = 0

    @property
    def answered(self) -> int:
        return self.a_wins + self.b_wins + self.ties


class CellCounts(Mapping):
    """Trials assigned per design cell of one criterion, read from ``tally_cells`` lazily.

    ``counts[task]`` reads the cells of the task's arm on first use (one small query); iterating
    reads them all. The active scheduler looks at one pair's cells only, so its cost does not
    grow with the number of pairs and items; the balanced scheduler iterates.
    """

    def __init__(self, session: Session, study_id: int, criterion: str, kind: str) -> None:
        self._session, self._study_id, self._criterion = session, study_id, criterion
        self._pairs = kind == "pair"
        self._counts: dict[PairTask | RatingTask, int] = {}
        self._arms: set[tuple[str, str]] = set()
        self._all = False

    def _read(self, arm: tuple[str, str] | None) -> None:
        params = {"study_id": self._study_id, "criterion": self._criterion}
        if arm is not None:
            query = READ_ARM
            params.update(variant_a=arm[0], variant_b=arm[1])
        else:
            query = READ_PAIR_CELLS if self._pairs else READ_RATING_CELLS
        for a, b, prompt_id, seed, n in self._session.connection().execute(query, params):
            task = PairTask(prompt_id, seed, a, b) if b else RatingTask(prompt_id, seed, a)
            self._counts[task] = n
        if arm is None:
            self._all = True
        else:
            self._arms.add(arm)

    def get(self, task: PairTask | RatingTask, default: int | None = None) -> int | None:
        if not self._all:
            arm = (task.variant_a, task.variant_b) if self._pairs else (task.variant, "")
            if arm not in self._arms:
                self._read(arm)
        return self._counts.get(task, default)

    def __getitem__(self, task: PairTask | RatingTask) -> int:
        count = self.get(task)
        if count is None:
            raise KeyError(task)
        return count

    def _everything(self) -> dict:
        if not self._all:
            self._read(None)
        return self._counts

    def __iter__(self) -> Iterator:
        return iter(self._everything())

    def __len__(self) -> int:
        return len(self._everything())


@dataclass
class StudyTallies:
    """One criterion's scheduling state, and the pair counts for left/right counterbalancing."""

    state: SchedulingState
    pairs: dict[tuple[str, str], PairCounts]


def read(
    session: Session,
    cat: Catalogue,
    criterion: str,
    mine: Iterable[PairTask | RatingTask] = (),
) -> StudyTallies:
    """The scheduling state of ``criterion`` for a participant who has the tasks ``mine``."""
    rows = (
        session.connection()
        .execute(READ_PAIRS, {"study_id": cat.study_id, "criterion": criterion})
        .all()
    )
    pairs = {(a, b): PairCounts(*counts) for a, b, *counts in rows}
    index = {v: k for k, v in enumerate(cat.variants)}
    n = len(cat.variants)
    wins, pending = np.zeros((n, n)), np.zeros((n, n))
    for (a, b), counts in pairs.items():
        if a in index and b in index:
            i, j = index[a], index[b]
            wins[i, j] += counts.a_wins + 0.5 * counts.ties
            wins[j, i] += counts.b_wins + 0.5 * counts.ties
            pending[i, j] = pending[j, i] = max(counts.assigned - counts.answered, 0)
    kind = cat.spec.kind
    state = SchedulingState(
        variants=cat.variants,
        items=cat.items,
        pairs=cat.pairs,
        wins=wins,
        pending=pending,
        participant_pairs={t for t in mine if isinstance(t, PairTask)},
        participant_ratings={t for t in mine if isinstance(t, RatingTask)},
    )
    cells = CellCounts(session, cat.study_id, criterion, kind)
    if kind == "pair":
        state.assigned_pairs = cells
    else:
        state.assigned_ratings = cells
    return StudyTallies(state, pairs)


def _add(session: Session, table: Table, key: tuple[str, ...], rows: list[dict]) -> None:
    """Add each row's counts to the stored row with the same key (created the first time)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    statement = _UPSERTS.get((dialect, table.name))
    if statement is None:
        statement = (sqlite_insert if dialect == "sqlite" else pg_insert)(table)
        counts = [c.name for c in table.columns if c.name not in key]
        statement = _UPSERTS[(dialect, table.name)] = statement.on_conflict_do_update(
            index_elements=list(key),
            set_={c: table.c[c] + statement.excluded[c] for c in counts},
        )
    session.connection().execute(statement, rows)


def _count(
    pairs: dict[tuple[str, str], PairCounts],
    cells: Counter,
    trial: tuple[str, int, str, str | None, str | None],
    *,
    assigned: int,
    answered: int,
) -> None:
    """Add one trial, (prompt_id, seed, left variant, right variant or None, choice or None),
    to in-memory counts: its assignment ``assigned`` times and its answer ``answered`` times."""
    prompt_id, seed, left, right, choice = trial
    if right is None:
        cells[(left, "", prompt_id, seed)] += assigned
        return
    a, b = (left, right) if left < right else (right, left)
    cells[(a, b, prompt_id, seed)] += assigned
    counts = pairs.setdefault((a, b), PairCounts())
    counts.assigned += assigned
    counts.a_left += assigned * (left == a)
    if choice == "tie":
        counts.ties += answered
    elif choice is not None:
        if (choice == "left") == (left == a):
            counts.a_wins += answered
        else:
            counts.b_wins += answered


def _write(session: Session, study_id: int, criterion: str, pairs: dict, cells: Counter) -> None:
    _add(
        session,
        TallyPair.__table__,
        PAIR_KEY,
        [
            {"study_id": study_id, "criterion": criterion, "variant_a": a, "variant_b": b,
             **{c: getattr(counts, c) for c in PAIR_COUNTS}}
            for (a, b), counts in pairs.items()
        ],
    )  # fmt: skip
    _add(
        session,
        TallyCell.__table__,
        CELL_KEY,
        [
            {"study_id": study_id, "criterion": criterion, "variant_a": a, "variant_b": b,
             "prompt_id": prompt_id, "seed": seed, "assigned": n}
            for (a, b, prompt_id, seed), n in cells.items()
            if n
        ],
    )  # fmt: skip


def add_assignments(
    session: Session,
    study_id: int,
    criterion: str,
    assigned: Iterable[tuple[str, int, str, str | None]],
) -> None:
    """Count newly assigned main trials: (prompt_id, seed, left variant, right variant or None).

    Call with the study row locked.
    """
    pairs: dict[tuple[str, str], PairCounts] = {}
    cells: Counter = Counter()
    for prompt_id, seed, left, right in assigned:
        _count(pairs, cells, (prompt_id, seed, left, right, None), assigned=1, answered=0)
    _write(session, study_id, criterion, pairs, cells)


def add_answer(
    session: Session,
    study_id: int,
    criterion: str,
    trial: tuple[str, int, str, str, str],
) -> None:
    """Count one answered pair trial (prompt_id, seed, left, right, choice): one pair row, so
    call it after taking the study lock if the transaction takes it (module docstring)."""
    pairs: dict[tuple[str, str], PairCounts] = {}
    _count(pairs, Counter(), trial, assigned=0, answered=1)
    _write(session, study_id, criterion, pairs, Counter())


def subtract_participants(session: Session, study_id: int, participant_ids: list[int]) -> None:
    """Take everything these participants' trials added out of the counts (study row locked)."""
    if not participant_ids:
        return
    left, right = aliased(Stimulus), aliased(Stimulus)
    rows = session.execute(
        select(
            Trial.criterion, Trial.prompt_id, Trial.seed, left.variant, right.variant,
            Answer.choice,
        )
        .join(left, left.id == Trial.left_id)
        .outerjoin(right, right.id == Trial.right_id)
        .outerjoin(Answer, Answer.trial_id == Trial.id)
        .where(Trial.participant_id.in_(participant_ids), Trial.kind.in_(MAIN_KINDS))
    ).all()  # fmt: skip
    by_criterion: dict[str, tuple[dict, Counter]] = {}
    for criterion, *trial in rows:
        pairs, cells = by_criterion.setdefault(criterion, ({}, Counter()))
        _count(pairs, cells, tuple(trial), assigned=-1, answered=-1)
    for criterion, (pairs, cells) in by_criterion.items():
        _write(session, study_id, criterion, pairs, cells)
