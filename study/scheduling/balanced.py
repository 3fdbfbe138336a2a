"""Balanced scheduling: every variant pair and every prompt/seed item covered evenly.

The design is a table of cells (arm x item), where an arm is a variant pair (pairwise trials) or
a variant (ratings). Tasks are handed out greedily, one at a time, by these keys in order:

- only an arm's least-assigned open items are candidates (each arm's cell counts stay within
  one of each other);
- the arm the participant has had least, then the arm the whole study has had least: each
  participant sees the arms within one of each other, and the study's arm totals stay within one
  of each other (the minimum arm is always the one topped up);
- then the item the study has had least over all arms (chosen jointly with the arm, so that
  ties between arms go to the one that can top up the least-covered item), then the prompt the
  participant has seen least (so that a participant rarely sees a prompt again while unseen
  ones remain);
- a draw from ``rng`` breaks the remaining ties, so the same state and seed give the same tasks.

A participant never gets a cell they already have; they get fewer than ``n`` tasks only once
every cell is theirs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable

import numpy as np

from study.scheduling.state import PairTask, RatingTask, SchedulingState


def _cell_table(
    arms: list[Hashable],
    items: list[tuple[str, int]],
    assigned: Counter,
    mine: Iterable,
    arm_of,
) -> tuple[np.ndarray, np.ndarray]:
    """Study-wide counts and this participant's cells, as (arms x items) arrays."""
    arm_index = {arm: k for k, arm in enumerate(arms)}
    item_index = {item: k for k, item in enumerate(items)}
    counts = np.zeros((len(arms), len(items)), dtype=np.int64)
    for task, count in assigned.items():
        row, col = arm_index.get(arm_of(task)), item_index.get(task.item)
        if row is not None and col is not None:
            counts[row, col] += count
    seen = np.zeros(counts.shape, dtype=bool)
    for task in mine:
        row, col = arm_index.get(arm_of(task)), item_index.get(task.item)
        if row is not None and col is not None:
            seen[row, col] = True
    return counts, seen


def _first(keys: list[np.ndarray], rng: np.random.Generator) -> int:
    """Index of the smallest entry by ``keys`` (most significant first), ties drawn from ``rng``.

    Filters by one key at a time (linear, no sort), so it stays cheap over many candidates.
    """
    candidates = np.arange(len(keys[0]))
    for key in keys:
        values = key[candidates]
        candidates = candidates[values == values.min()]
        if candidates.size == 1:
            return int(candidates[0])
    return int(candidates[rng.integers(candidates.size)])


def balanced_cells(
    counts: np.ndarray,
    seen: np.ndarray,
    prompt_of_item: np.ndarray,
    n: int,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """Choose up to ``n`` (arm, item) cells for one participant; see the module docstring.

    ``counts``: study-wide assignments per cell; ``seen``: the participant's cells;
    ``prompt_of_item``: an integer prompt id per item column. Arrays are not modified.
    """
    counts = counts.copy()
    arm_totals = counts.sum(axis=1)
    item_totals = counts.sum(axis=0)
    my_arms = seen.sum(axis=1)
    my_prompts = np.bincount(prompt_of_item, weights=seen.sum(axis=0)).astype(np.int64)
    unseen = ~seen
    full = np.iinfo(np.int64).max
    open_min = np.where(unseen, counts, full).min(axis=1)  # each arm's least-assigned open cell
    chosen: list[tuple[int, int]] = []
    for _ in range(n):
        arms = np.flatnonzero(open_min < full)
        if arms.size == 0:
            break
        for key in (my_arms, arm_totals):
            arms = arms[key[arms] == key[arms].min()]
        rows, items = np.nonzero(unseen[arms] & (counts[arms] == open_min[arms, None]))
        k = _first([item_totals[items], my_prompts[prompt_of_item[items]]], rng)
        arm, item = int(arms[rows[k]]), int(items[k])
        chosen.append((arm, item))
        counts[arm, item] += 1
        unseen[arm, item] = False
        open_min[arm] = np.where(unseen[arm], counts[arm], full).min()
        arm_totals[arm] += 1
        item_totals[item] += 1
        my_arms[arm] += 1
        my_prompts[prompt_of_item[item]] += 1
    return chosen


def prompt_codes(items: list[tuple[str, int]]) -> np.ndarray:
    """An integer per item, equal for items of the same prompt."""
    codes: dict[str, int] = {}
    return np.array([codes.setdefault(prompt, len(codes)) for prompt, _ in items], dtype=np.int64)


class BalancedScheduler:
    """Even coverage of pairs, variants and items; no task twice for a participant."""

    name = "balanced"

    def next_pairs(
        self, state: SchedulingState, n: int, rng: np.random.Generator
    ) -> list[PairTask]:
        pairs = state.unordered_pairs
        counts, seen = _cell_table(
            pairs, state.items, state.assigned_pairs, state.participant_pairs, lambda t: t.pair
        )
        cells = balanced_cells(counts, seen, prompt_codes(state.items), n, rng)
        return [PairTask(*state.items[item], *pairs[arm]) for arm, item in cells]

    def next_ratings(
        self, state: SchedulingState, n: int, rng: np.random.Generator
    ) -> list[RatingTask]:
        counts, seen = _cell_table(
            state.variants,
            state.items,
            state.assigned_ratings,
            state.participant_ratings,
            lambda t: t.variant,
        )
        cells = balanced_cells(counts, seen, prompt_codes(state.items), n, rng)
        return [RatingTask(*state.items[item], state.variants[arm]) for arm, item in cells]
