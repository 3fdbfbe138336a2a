"""Active scheduling: ask next the comparison that is expected to teach the most about the scores.

In the spirit of ASAP (Mikhailiuk, Wilmot, Perez-Ortiz, Yue, Mantiuk 2020, "Active Sampling for
Pairwise Comparisons via Approximate Message Passing and Information Gain Maximization"):

1. a Gaussian posterior over Thurstone Case V scores from the answered trials (a Laplace
   approximation with full covariance, see :mod:`study.scheduling.posterior` for how it differs
   from ASAP's TrueSkill/EP), cached on the win matrix; comparisons assigned but not answered
   yet tighten it as if answered (their outcome unknown), so simultaneous participants spread;
2. the expected information gain (KL between the posterior after and before) of every variant
   pair the study compares, vectorised;
3. one trial: the pair of largest gain; a batch: ASAP's batch mode, the edges of a minimum
   spanning tree of the graph weighted by 1 / gain (then of the edges left, and so on), so that
   one batch links every variant while favouring informative pairs;
4. within the pair, the prompt/seed item this pair has been assigned least that the participant
   does not have yet (preferring prompts the participant has seen least);
5. while fewer than ``warmup`` comparisons are answered, the balanced scheduler decides: the
   posterior is then mostly prior, and even coverage is the better start.

Ratings (MOS) are scheduled by the balanced scheduler: information gain here is about pairs.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from operator import attrgetter

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree

from study.scheduling.balanced import BalancedScheduler, _first
from study.scheduling.posterior import (
    JOD_NOISE_SD,
    GaussianPosterior,
    information_gain,
    thurstone_posterior,
    with_pending,
)
from study.scheduling.state import PairTask, RatingTask, SchedulingState


@lru_cache(maxsize=64)
def _cached_posterior(
    wins: bytes, pending: bytes, n: int, prior_sd: float, noise_sd: float
) -> GaussianPosterior:
    base = _cached_fit(wins, n, prior_sd, noise_sd)
    return with_pending(base, np.frombuffer(pending, dtype=float).reshape(n, n), noise_sd=noise_sd)


@lru_cache(maxsize=64)
def _cached_fit(wins: bytes, n: int, prior_sd: float, noise_sd: float) -> GaussianPosterior:
    matrix = np.frombuffer(wins, dtype=float).reshape(n, n)
    return thurstone_posterior(matrix, prior_sd=prior_sd, noise_sd=noise_sd)


@lru_cache(maxsize=256)
def _pair_tasks(pair: tuple[str, str], items: tuple[tuple[str, int], ...]) -> list[PairTask]:
    """Every task of one variant pair, in item order (built once: the hot path only looks up)."""
    return [PairTask(prompt, seed, *pair) for prompt, seed in items]


def pending_comparisons(state: SchedulingState) -> np.ndarray:
    """Pair trials assigned but not answered, per variant pair (symmetric matrix)."""
    if state.pending is not None:
        pending = np.asarray(state.pending, dtype=float)
        return np.maximum(pending, pending.T)
    n = len(state.variants)
    cell = {
        (a, b): i * n + j
        for i, a in enumerate(state.variants)
        for j, b in enumerate(state.variants)
        if a < b
    }
    pair_of = attrgetter("variant_a", "variant_b")
    tasks = state.assigned_pairs
    codes = np.fromiter((cell.get(pair_of(t), -1) for t in tasks), np.int64, len(tasks))
    counts = np.fromiter(tasks.values(), float, len(tasks))
    known = codes >= 0
    assigned = np.bincount(codes[known], counts[known], n * n).reshape(n, n)
    assigned = assigned + assigned.T
    return np.maximum(assigned - (state.wins + state.wins.T), 0.0)


def spanning_tree_order(
    gain: np.ndarray, first: np.ndarray, second: np.ndarray, n_nodes: int, n: int
) -> list[int]:
    """``n`` candidate indices in ASAP batch order.

    The minimum spanning tree of the graph whose edge k joins ``first[k]`` and ``second[k]`` with
    weight ``1 / gain[k]``, its edges by falling gain; then the tree of the edges not used yet,
    and so on; once every edge is used, round again.
    """
    weight = 1.0 / np.maximum(gain, 1e-12)
    edge_of = {}
    for k, (i, j) in enumerate(zip(first.tolist(), second.tolist(), strict=True)):
        edge_of[(i, j)] = edge_of[(j, i)] = k
    order: list[int] = []
    unused = np.ones(len(gain), dtype=bool)
    while len(order) < n:
        if not unused.any():
            unused[:] = True
        graph = np.zeros((n_nodes, n_nodes))
        idx = np.flatnonzero(unused)
        lo, hi = np.minimum(first[idx], second[idx]), np.maximum(first[idx], second[idx])
        graph[lo, hi] = weight[idx]
        rows, cols = minimum_spanning_tree(graph).nonzero()
        tree = [edge_of[(int(r), int(c))] for r, c in zip(rows, cols, strict=True)]
        tree.sort(key=lambda k: -gain[k])
        order.extend(tree)
        unused[tree] = False
    return order[:n]


class ActiveScheduler:
    """Information-gain pair selection over a Thurstone posterior (ASAP-style); see module doc.

    Options: ``warmup`` answered comparisons before it takes over from balanced (default: as many
    as the study has variants, i.e. each variant in about two answers; benchmarks/active_sampling.py
    found this better than none or one per pair), ``prior_sd`` of the scores in JOD (default 2),
    ``noise_sd`` of one comparison (default: JOD scale, 1 unit = 75% preference).
    """

    name = "active"

    def __init__(
        self,
        *,
        warmup: int | None = None,
        prior_sd: float = 2.0,
        noise_sd: float = JOD_NOISE_SD,
    ) -> None:
        if warmup is not None and warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        if prior_sd <= 0 or noise_sd <= 0:
            raise ValueError("prior_sd and noise_sd must be positive")
        self.warmup = warmup
        self.prior_sd = float(prior_sd)
        self.noise_sd = float(noise_sd)
        self.balanced = BalancedScheduler()

    def posterior(self, state: SchedulingState) -> GaussianPosterior:
        """The current score posterior, with pending comparisons counted in (cached)."""
        n = len(state.variants)
        wins = np.ascontiguousarray(state.wins, dtype=float)
        pending = np.ascontiguousarray(pending_comparisons(state), dtype=float)
        return _cached_posterior(wins.tobytes(), pending.tobytes(), n, self.prior_sd, self.noise_sd)

    def pair_gains(self, state: SchedulingState) -> tuple[list[tuple[str, str]], np.ndarray]:
        """The study's variant pairs and the expected information gain of comparing each (nats)."""
        pairs = state.unordered_pairs
        index = {v: k for k, v in enumerate(state.variants)}
        first = np.array([index[a] for a, _ in pairs])
        second = np.array([index[b] for _, b in pairs])
        gain = information_gain(self.posterior(state), first, second, noise_sd=self.noise_sd)
        return pairs, gain

    def next_pairs(
        self, state: SchedulingState, n: int, rng: np.random.Generator
    ) -> list[PairTask]:
        warmup = len(state.variants) if self.warmup is None else self.warmup
        if n <= 0:
            return []
        if float(state.wins.sum()) < warmup:
            return self.balanced.next_pairs(state, n, rng)
        pairs, gain = self.pair_gains(state)
        mine = Counter(task.pair for task in state.participant_pairs)
        open_pairs = np.array([mine[pair] < len(state.items) for pair in pairs])
        if not open_pairs.any():
            return []
        candidates = np.flatnonzero(open_pairs)
        if n == 1:
            order = [int(candidates[_first([-gain[candidates]], rng)])]
        else:
            index = {v: k for k, v in enumerate(state.variants)}
            first = np.array([index[pairs[k][0]] for k in candidates])
            second = np.array([index[pairs[k][1]] for k in candidates])
            picks = spanning_tree_order(gain[candidates], first, second, len(index), n)
            order = [int(candidates[k]) for k in picks]
        prompts_seen = Counter(task.prompt_id for task in state.participant_pairs)
        taken: set[PairTask] = set(state.participant_pairs)
        tasks = []
        for k in order:
            task = self._least_covered_item(state, pairs[k], taken, prompts_seen, rng)
            if task is None:
                continue
            tasks.append(task)
            taken.add(task)
            prompts_seen[task.prompt_id] += 1
        return tasks

    @staticmethod
    def _least_covered_item(
        state: SchedulingState,
        pair: tuple[str, str],
        taken: set[PairTask],
        prompts_seen: Counter,
        rng: np.random.Generator,
    ) -> PairTask | None:
        tasks = _pair_tasks(pair, tuple(state.items))
        open_tasks = [task for task in tasks if task not in taken]
        if not open_tasks:
            return None
        assigned = state.assigned_pairs
        coverage = np.fromiter((assigned.get(t, 0) for t in open_tasks), float, len(open_tasks))
        seen = np.fromiter((prompts_seen[t.prompt_id] for t in open_tasks), float, len(open_tasks))
        return open_tasks[_first([coverage, seen], rng)]

    def next_ratings(
        self, state: SchedulingState, n: int, rng: np.random.Generator
    ) -> list[RatingTask]:
        return self.balanced.next_ratings(state, n, rng)
