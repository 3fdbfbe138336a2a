"""What a scheduler sees and what it hands back: tasks, the study's assignment state, the protocol.

The web app builds a :class:`SchedulingState` inside its assignment transaction (row lock on
PostgreSQL, serialised on SQLite), asks a scheduler for the next tasks of one participant, and
stores them with left/right counterbalancing. Schedulers are pure functions of the state and a
``numpy.random.Generator``: the same state and seed give the same tasks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class PairTask:
    """One pairwise trial to assign: two variants of the same prompt and seed.

    Unordered: ``variant_a < variant_b`` always (build it with :meth:`unordered` when the order
    is unknown); the app decides which image goes left.
    """

    prompt_id: str
    seed: int
    variant_a: str
    variant_b: str

    def __post_init__(self) -> None:
        if not self.variant_a < self.variant_b:
            raise ValueError(
                f"PairTask needs variant_a < variant_b, got {self.variant_a!r}, {self.variant_b!r}"
            )

    @classmethod
    def unordered(cls, prompt_id: str, seed: int, first: str, second: str) -> PairTask:
        """The task comparing ``first`` and ``second`` in whichever order they come."""
        a, b = (first, second) if first < second else (second, first)
        return cls(prompt_id, seed, a, b)

    @property
    def pair(self) -> tuple[str, str]:
        return (self.variant_a, self.variant_b)

    @property
    def item(self) -> tuple[str, int]:
        return (self.prompt_id, self.seed)


@dataclass(frozen=True)
class RatingTask:
    """One single-image (MOS) trial to assign."""

    prompt_id: str
    seed: int
    variant: str

    @property
    def item(self) -> tuple[str, int]:
        return (self.prompt_id, self.seed)


@dataclass
class SchedulingState:
    """The study as far as scheduling is concerned, seen from one participant.

    ``wins[i, j]`` counts answered trials where ``variants[i]`` beat ``variants[j]`` (a tie adds
    0.5 to both). ``pending[i, j]`` (optional, symmetric) counts pair trials of variants i and j
    that are assigned but not answered yet: the active scheduler treats them as comparisons whose
    outcome is still unknown, so that simultaneous participants spread over pairs. When it is
    None the active scheduler derives it from ``assigned_pairs`` minus the answered counts, which
    is exact but costs a pass over ``assigned_pairs``; the app passes it from its running counts.

    ``assigned_pairs`` and ``assigned_ratings`` may be any mapping of task -> count (missing: 0):
    the app passes ``study.tallies.CellCounts``, which reads one arm's counts from the database
    when the scheduler first looks at that arm; schedulers only use ``get``, ``items`` and
    iteration on them.
    """

    variants: list[str]
    items: list[tuple[str, int]]
    pairs: list[tuple[str, str]]
    assigned_pairs: Mapping[PairTask, int] = field(default_factory=Counter)
    assigned_ratings: Mapping[RatingTask, int] = field(default_factory=Counter)
    wins: np.ndarray | None = None
    participant_pairs: set[PairTask] = field(default_factory=set)
    participant_ratings: set[RatingTask] = field(default_factory=set)
    pending: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.variants)
        if self.wins is None:
            self.wins = np.zeros((n, n))
        self.wins = np.asarray(self.wins, dtype=float)
        if self.wins.shape != (n, n):
            raise ValueError(f"wins must be {n}x{n} for {n} variants, got {self.wins.shape}")
        known = set(self.variants)
        for a, b in self.pairs:
            if a not in known or b not in known or a == b:
                raise ValueError(f"pair ({a!r}, {b!r}) is not two different study variants")

    @property
    def unordered_pairs(self) -> list[tuple[str, str]]:
        """``pairs`` with each pair sorted and duplicates dropped, in first-seen order."""
        seen: dict[tuple[str, str], None] = {}
        for a, b in self.pairs:
            seen[(a, b) if a < b else (b, a)] = None
        return list(seen)


class Scheduler(Protocol):
    """Chooses a participant's next trials. Returns at most ``n`` tasks, fewer only when the
    participant has already been given every task there is, never one they already have."""

    name: str

    def next_pairs(
        self, state: SchedulingState, n: int, rng: np.random.Generator
    ) -> list[PairTask]: ...

    def next_ratings(
        self, state: SchedulingState, n: int, rng: np.random.Generator
    ) -> list[RatingTask]: ...
