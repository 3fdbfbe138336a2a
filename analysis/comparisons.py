"""Pairwise trials as count-weighted unique rows, and the shape of the comparison graph.

A study with 100k answered pairs over 10 variants has at most 90 distinct ordered
(left, right) pairs. Every estimator here works on those unique rows with outcome
counts, so a fit costs O(unique pairs), not O(trials), and a bootstrap round is just
a new set of counts on the same rows.

Whether a Bradley-Terry maximum-likelihood estimate exists is a property of this
graph (Zermelo 1929; Ford 1957, "Solution of a ranking problem from binary
comparisons"): the MLE is finite and unique iff, for every split of the items into
two non-empty groups, some item of each group has beaten some item of the other,
i.e. the directed "beats" graph is strongly connected. Without any comparison
between two groups the scores of one group are not comparable with the other's at
all (the undirected graph is disconnected).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from hprune.errors import UserError

#: Outcome codes of one trial, from the left stimulus' point of view.
LEFT, RIGHT, TIE = 0, 1, 2


@dataclass(frozen=True)
class PairedComparisons:
    """Outcome counts on unique ordered (left, right) item pairs.

    ``counts[u] = (left wins, right wins, ties)`` for the pair ``(left[u], right[u])``;
    counts are floats so that bootstrap weights and tie halves fit the same type.
    """

    items: tuple[str, ...]
    left: np.ndarray  # (U,) int item index shown on the left
    right: np.ndarray  # (U,) int item index shown on the right
    counts: np.ndarray  # (U, 3) float: left wins, right wins, ties

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_comparisons(self) -> float:
        return float(self.counts.sum())

    def with_counts(self, counts: np.ndarray) -> PairedComparisons:
        """The same rows with other counts (a bootstrap round, a leave-one-out refit)."""
        return PairedComparisons(self.items, self.left, self.right, np.asarray(counts, float))

    def wins_matrix(self) -> np.ndarray:
        """``W[i, j]``: how often i beat j (either side), ties split half and half."""
        k = self.n_items
        half_ties = 0.5 * self.counts[:, TIE]
        wins = np.zeros((k, k))
        np.add.at(wins, (self.left, self.right), self.counts[:, LEFT] + half_ties)
        np.add.at(wins, (self.right, self.left), self.counts[:, RIGHT] + half_ties)
        return wins

    def count_matrix(self) -> np.ndarray:
        """``N[i, j]``: how often i and j were compared (symmetric)."""
        total = self.counts.sum(axis=1)
        k = self.n_items
        n = np.zeros((k, k))
        np.add.at(n, (self.left, self.right), total)
        return n + n.T


def collapse(
    items: Sequence[str],
    left: np.ndarray,
    right: np.ndarray,
    outcome: np.ndarray,
    weights: np.ndarray | None = None,
) -> tuple[PairedComparisons, np.ndarray]:
    """Collapse per-trial (left, right, outcome) codes into unique rows with counts.

    Returns the comparisons and, for each trial, the index of its unique row, so that
    per-trial weights (bootstrap, exclusions) can be summed onto the rows later with
    ``np.bincount(row * 3 + outcome, weights)``.
    """
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    outcome = np.asarray(outcome, dtype=np.int64)
    k = len(items)
    if np.any(left == right):
        raise UserError("a pair trial compares a variant with itself")
    key = left * k + right
    unique_keys, row = np.unique(key, return_inverse=True)
    counts = np.bincount(row * 3 + outcome, weights=weights, minlength=3 * len(unique_keys))
    comparisons = PairedComparisons(
        items=tuple(items),
        left=unique_keys // k,
        right=unique_keys % k,
        counts=counts.reshape(-1, 3).astype(float),
    )
    return comparisons, row


CHOICE_CODES = {"left": LEFT, "right": RIGHT, "tie": TIE}


def trial_codes(
    pairs: pd.DataFrame, items: Sequence[str] | None = None
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Item indices and outcome codes of answered pair trials (responses-export rows).

    ``items`` fixes the item order (unknown variants in the rows are then an error);
    by default the variants seen, sorted.
    """
    left_names = pairs["left_variant"].astype("string")
    right_names = pairs["right_variant"].astype("string")
    if left_names.isna().any() or right_names.isna().any():
        raise UserError("some pair trials lack a left_variant or right_variant")
    seen = sorted(set(left_names.unique()) | set(right_names.unique()))
    if items is None:
        items = seen
    else:
        unknown = sorted(set(seen) - set(items))
        if unknown:
            raise UserError(
                f"pair trials refer to unknown variants: {', '.join(unknown)} "
                f"(known: {', '.join(items)})"
            )
    index = {name: i for i, name in enumerate(items)}
    choice = pairs["choice"].astype("string").str.strip().str.lower()
    outcome = choice.map(CHOICE_CODES)
    if outcome.isna().any():
        bad = sorted(set(pairs["choice"][outcome.isna()].astype(str)))[:5]
        raise UserError(f"pair trials with a choice other than left/right/tie: {', '.join(bad)}")
    return (
        tuple(items),
        left_names.map(index).to_numpy(np.int64),
        right_names.map(index).to_numpy(np.int64),
        outcome.to_numpy(np.int64),
    )


def from_pairs(
    pairs: pd.DataFrame, items: Sequence[str] | None = None
) -> tuple[PairedComparisons, np.ndarray, np.ndarray]:
    """Unique-row comparisons of pair trials, plus each trial's row and outcome code."""
    names, left, right, outcome = trial_codes(pairs, items)
    comparisons, row = collapse(names, left, right, outcome)
    return comparisons, row, outcome


def components(comparisons: PairedComparisons) -> list[list[str]]:
    """Groups of items linked by at least one comparison (the undirected graph)."""
    k = comparisons.n_items
    used = comparisons.counts.sum(axis=1) > 0
    graph = sp.coo_matrix(
        (np.ones(used.sum()), (comparisons.left[used], comparisons.right[used])), shape=(k, k)
    )
    n, labels = connected_components(graph, directed=False)
    return [[comparisons.items[i] for i in np.flatnonzero(labels == c)] for c in range(n)]


def beats_components(comparisons: PairedComparisons, *, ties_link: bool = True) -> list[list[str]]:
    """Strongly connected components of the directed graph "j -> i when i beat j".

    With ``ties_link`` a tie links both ways, as it does in Davidson's model. One
    component means the maximum-likelihood scores exist and are finite.
    """
    k = comparisons.n_items
    c = comparisons.counts
    src, dst = [], []
    for mask, a, b in (
        (c[:, LEFT] > 0, comparisons.right, comparisons.left),  # right -> left: left beat right
        (c[:, RIGHT] > 0, comparisons.left, comparisons.right),
    ):
        src.append(a[mask])
        dst.append(b[mask])
    if ties_link:
        tied = c[:, TIE] > 0
        src += [comparisons.left[tied], comparisons.right[tied]]
        dst += [comparisons.right[tied], comparisons.left[tied]]
    s, d = np.concatenate(src), np.concatenate(dst)
    graph = sp.coo_matrix((np.ones(len(s)), (s, d)), shape=(k, k))
    n, labels = connected_components(graph, directed=True, connection="strong")
    return [[comparisons.items[i] for i in np.flatnonzero(labels == c)] for c in range(n)]


def _reach(adjacency: np.ndarray, start: int) -> np.ndarray:
    """Nodes reachable from ``start`` along ``adjacency[i, j]`` (i -> j) edges."""
    seen = np.zeros(len(adjacency), dtype=bool)
    seen[start] = True
    frontier = seen.copy()
    while frontier.any():
        new = adjacency[frontier].any(axis=0) & ~seen
        seen |= new
        frontier = new
    return seen


def is_estimable(
    comparisons: PairedComparisons, counts: np.ndarray, *, prior: float, ties_link: bool
) -> bool:
    """Fast yes/no version of ``check_estimable`` for many count vectors on the same rows.

    Dense breadth-first reachability from item 0: cheap for the tens of items a study
    has, and called once per bootstrap round.
    """
    k = comparisons.n_items
    left, right = comparisons.left, comparisons.right
    beats = np.zeros((k, k), dtype=bool)  # beats[j, i]: edge j -> i, i beat j
    beats[right[counts[:, LEFT] > 0], left[counts[:, LEFT] > 0]] = True
    beats[left[counts[:, RIGHT] > 0], right[counts[:, RIGHT] > 0]] = True
    tied = counts[:, TIE] > 0
    if ties_link:
        beats[left[tied], right[tied]] = True
        beats[right[tied], left[tied]] = True
    if prior > 0 or not ties_link:
        met = beats | beats.T
        met[left[tied], right[tied]] = met[right[tied], left[tied]] = True
        if not _reach(met, 0).all():
            return False
        if prior > 0:
            return True
    return bool(_reach(beats, 0).all() and _reach(beats.T, 0).all())


def _describe(groups: list[list[str]], limit: int = 4) -> str:
    shown = ["{" + ", ".join(g[:6]) + (", ..." if len(g) > 6 else "") + "}" for g in groups[:limit]]
    more = f" and {len(groups) - limit} more" if len(groups) > limit else ""
    return " ".join(shown) + more


def check_estimable(
    comparisons: PairedComparisons, *, prior: float = 0.0, ties_link: bool = True
) -> None:
    """Raise a UserError when maximum-likelihood scores would be meaningless.

    Checked: at least two items; a connected design (scores of separate groups are not
    comparable, with or without a prior); some non-tie outcome; and, without a prior,
    a strongly connected "beats" graph (else some score runs off to infinity).
    """
    if comparisons.n_items < 2:
        raise UserError(
            "pairwise analysis needs at least two variants; the responses name only "
            + (repr(comparisons.items[0]) if comparisons.items else "none")
        )
    if comparisons.n_comparisons <= 0:
        raise UserError("there are no answered pair trials to analyse")
    groups = components(comparisons)
    if len(groups) > 1:
        raise UserError(
            f"the comparison design is disconnected ({len(groups)} groups never compared "
            f"with each other: {_describe(groups)}); scores across groups are not comparable. "
            "Analyse the groups separately or add linking comparisons."
        )
    c = comparisons.counts
    if c[:, LEFT].sum() + c[:, RIGHT].sum() <= 0:
        raise UserError("every pair trial is a tie: the responses carry no preference")
    if prior <= 0:
        strong = beats_components(comparisons, ties_link=ties_link)
        if len(strong) > 1:
            raise UserError(
                "maximum-likelihood scores do not exist: some variants won (or lost) every "
                f"comparison against the rest ({len(strong)} one-way groups: {_describe(strong)}). "
                "Collect more trials or fit with an explicit L2 prior (--prior)."
            )
