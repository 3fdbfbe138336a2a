"""Cluster bootstrap by multinomial re-weighting, and the intervals read from it.

Trials of one participant are not independent (each person has her own taste and her own
position habit), so the unit of resampling is the participant (Field & Welsh 2007,
"Bootstrapping clustered data"), and optionally also the prompt: a two-way "pigeonhole"
bootstrap (Owen 2007) weights a trial by w_participant * w_prompt.

Drawing P participants with replacement is the same as giving participant p the weight
w_p ~ Multinomial(P, 1/P). Every bootstrap round is therefore a *weighted refit on the
same unique rows*: counts = sum over trials of their weights. No data is copied, and the
refit starts from the full-data optimum, where Newton converges in a few steps.

The rounds' weights are drawn once per report (``make_plan``) from one seed, so every
statistic (BT scores, MOS, the metric correlations) uses the same resampled studies and
the answers do not depend on the number of worker processes.

Intervals:
- percentile: the alpha/2 and 1 - alpha/2 quantiles of each parameter's draws;
- simultaneous (sup-t, e.g. Montiel Olea & Plagborg-Moller 2019): estimate +- c * sd,
  c the 1 - alpha quantile of max_k |draw_k - estimate_k| / sd_k, so that all intervals
  hold together with probability 1 - alpha;
- rank: the quantiles of each item's rank (1 = best) over the rounds.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata
from tqdm.auto import tqdm

from analysis.comparisons import is_estimable
from analysis.estimation import PairedModel


def available_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class BootstrapPlan:
    """Multinomial cluster weights of every round, shared by all statistics of a report."""

    participants: tuple[str, ...]
    participant_weights: np.ndarray  # (rounds, P): how often each participant was drawn
    prompts: tuple[str, ...] | None
    prompt_weights: np.ndarray | None  # (rounds, Q) for the two-way bootstrap
    seed: int

    @property
    def rounds(self) -> int:
        return self.participant_weights.shape[0]

    def participant_codes(self, ids: Sequence[str]) -> np.ndarray:
        return _codes(self.participants, ids)

    def prompt_codes(self, ids: Sequence[str]) -> np.ndarray | None:
        return None if self.prompts is None else _codes(self.prompts, ids)


def _codes(names: tuple[str, ...], ids: Sequence[str]) -> np.ndarray:
    """Each id's position in ``names`` (a hash lookup per distinct id, not per row)."""
    codes = pd.Index(names).get_indexer(pd.Index(np.asarray(ids, dtype=object)))
    if (codes < 0).any():
        raise KeyError("an id outside the bootstrap plan")
    return codes.astype(np.int64)


def make_plan(
    participants: Sequence[str],
    *,
    rounds: int,
    seed: int,
    prompts: Sequence[str] | None = None,
) -> BootstrapPlan:
    """Draw the weights of ``rounds`` resampled studies (participants, optionally prompts)."""
    rng = np.random.default_rng(seed)
    people = tuple(sorted(set(participants)))
    p_weights = rng.multinomial(len(people), np.full(len(people), 1 / len(people)), size=rounds)
    q_names, q_weights = None, None
    if prompts is not None:
        q_names = tuple(sorted(set(prompts)))
        q_weights = rng.multinomial(len(q_names), np.full(len(q_names), 1 / len(q_names)), rounds)
    return BootstrapPlan(people, p_weights, q_names, q_weights, seed)


# ------------------------------------------------------------------- intervals


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Per-column alpha/2 and 1 - alpha/2 quantiles (rows with NaN are failed rounds; NaN
    bounds when no round succeeded)."""
    alpha = 1 - level
    ok = draws[np.all(np.isfinite(draws), axis=1)]
    if len(ok) == 0:
        unknown = np.full(draws.shape[1], np.nan)
        return unknown, unknown.copy()
    low, high = np.quantile(ok, [alpha / 2, 1 - alpha / 2], axis=0)
    return low, high


def percentile_interval_by_column(
    draws: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column quantiles over the rounds where that column exists (a resampled study
    without any rater of a variant has no mean for it, but has one for the others); NaN
    bounds for a column that exists in no round."""
    alpha = 1 - level
    finite = np.isfinite(draws)
    low, high = np.full(draws.shape[1], np.nan), np.full(draws.shape[1], np.nan)
    seen = finite.any(axis=0)
    if seen.any():
        kept = np.where(finite[:, seen], draws[:, seen], np.nan)
        low[seen], high[seen] = np.nanquantile(kept, [alpha / 2, 1 - alpha / 2], axis=0)
    return low, high


def simultaneous_interval(
    draws: np.ndarray, estimate: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Sup-t bands: all columns covered together with probability ``level``."""
    ok = draws[np.all(np.isfinite(draws), axis=1)]
    sd = ok.std(axis=0, ddof=1)
    varying = sd > 0
    t = np.abs(ok[:, varying] - estimate[varying]) / sd[varying]
    c = np.quantile(t.max(axis=1), level) if varying.any() else 0.0
    return estimate - c * sd, estimate + c * sd


def rank_interval(
    draws: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantiles of each item's rank (1 = highest score) and how often it ranked first."""
    alpha = 1 - level
    ok = draws[np.all(np.isfinite(draws), axis=1)]
    ranks = rankdata(-ok, axis=1, method="min")
    low, high = np.quantile(ranks, [alpha / 2, 1 - alpha / 2], axis=0, method="inverted_cdf")
    return low.astype(int), high.astype(int), (ranks == 1).mean(axis=0)


@dataclass(frozen=True)
class BootstrapDraws:
    """Parameter draws of the bootstrap rounds (NaN rows: rounds with no finite estimate)."""

    names: tuple[str, ...]
    estimate: np.ndarray
    draws: np.ndarray
    seed: int

    @property
    def rounds(self) -> int:
        return self.draws.shape[0]

    @property
    def n_failed(self) -> int:
        return int((~np.all(np.isfinite(self.draws), axis=1)).sum())

    def columns(self, n: int) -> BootstrapDraws:
        """The first ``n`` parameters (the item scores)."""
        return BootstrapDraws(self.names[:n], self.estimate[:n], self.draws[:, :n], self.seed)

    def percentile(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        return percentile_interval(self.draws, level)

    def simultaneous(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        return simultaneous_interval(self.draws, self.estimate, level)

    def ranks(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return rank_interval(self.draws, level)

    def cov(self) -> np.ndarray:
        ok = self.draws[np.all(np.isfinite(self.draws), axis=1)]
        return np.cov(ok, rowvar=False)


# ------------------------------------------------------------ paired-model rounds


@dataclass(frozen=True)
class TrialCells:
    """Trials grouped by (participant, prompt, unique row, outcome), with their counts."""

    flat: np.ndarray  # row * 3 + outcome: where a cell's weight lands in the counts
    participant: np.ndarray
    prompt: np.ndarray | None
    count: np.ndarray
    n_rows: int

    def counts(self, participant_w: np.ndarray, prompt_w: np.ndarray | None = None) -> np.ndarray:
        """Outcome counts on the unique rows under one round's cluster weights."""
        w = self.count * participant_w[self.participant]
        if prompt_w is not None and self.prompt is not None:
            w = w * prompt_w[self.prompt]
        return np.bincount(self.flat, w, 3 * self.n_rows).reshape(-1, 3)

    def participant_matrix(self, n_participants: int) -> sp.csr_matrix:
        """(P, 3U) sparse counts per participant: weights @ matrix gives a round's counts."""
        return sp.csr_matrix(
            (self.count, (self.participant, self.flat)), shape=(n_participants, 3 * self.n_rows)
        )


def trial_cells(
    row: np.ndarray,
    outcome: np.ndarray,
    n_rows: int,
    participant: np.ndarray,
    prompt: np.ndarray | None = None,
) -> TrialCells:
    """Collapse per-trial codes into cells; the bootstrap's cost then scales with cells."""
    flat = np.asarray(row, np.int64) * 3 + np.asarray(outcome, np.int64)
    p = np.asarray(participant, np.int64)
    q = np.zeros_like(p) if prompt is None else np.asarray(prompt, np.int64)
    # One integer per (participant, prompt, cell), in the same lexicographic order.
    n_q, n_flat = int(q.max(initial=0)) + 1, 3 * n_rows
    unique, count = np.unique((p * n_q + q) * n_flat + flat, return_counts=True)
    return TrialCells(
        flat=unique % n_flat,
        participant=unique // (n_flat * n_q),
        prompt=None if prompt is None else (unique // n_flat) % n_q,
        count=count.astype(float),
        n_rows=n_rows,
    )


def _fit_rounds(
    model: PairedModel,
    cells: TrialCells,
    participant_w: np.ndarray,
    prompt_w: np.ndarray | None,
    init: np.ndarray,
) -> np.ndarray:
    out = np.full((participant_w.shape[0], model.n_params), np.nan)
    if prompt_w is None:
        all_counts = np.asarray(participant_w @ cells.participant_matrix(participant_w.shape[1]))
    for b in range(participant_w.shape[0]):
        if prompt_w is None:
            counts = all_counts[b].reshape(-1, 3)
        else:
            counts = cells.counts(participant_w[b], prompt_w[b])
        if not is_estimable(
            model.comparisons, counts, prior=model.prior, ties_link=model.link.ties_link
        ):
            continue
        params, converged = model.fit_params(counts, init)
        if converged:
            out[b] = params
    return out


_WORKER: dict = {}


def _init_worker(model, cells, participant_w, prompt_w, init) -> None:
    _WORKER.update(model=model, cells=cells, pw=participant_w, qw=prompt_w, init=init)


def _worker_rounds(start: int, stop: int) -> np.ndarray:
    w = _WORKER
    qw = None if w["qw"] is None else w["qw"][start:stop]
    return _fit_rounds(w["model"], w["cells"], w["pw"][start:stop], qw, w["init"])


def bootstrap_paired(
    model: PairedModel,
    cells: TrialCells,
    plan: BootstrapPlan,
    estimate: np.ndarray,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> BootstrapDraws:
    """Refit ``model`` under every round's weights; rounds run in ``workers`` processes.

    ``estimate`` is the full-data fit (identified parameters): each round starts there.
    A round whose resampled design has no finite MLE gets a NaN row (``n_failed``).
    """
    workers = available_workers() if workers is None else max(1, workers)
    qw = plan.prompt_weights if cells.prompt is not None else None
    rounds = plan.rounds
    n_chunks = min(rounds, 1 if workers == 1 and not progress else 4 * workers)
    edges = np.linspace(0, rounds, n_chunks + 1).astype(int)
    chunks = [(int(a), int(b)) for a, b in pairwise(edges) if b > a]
    bar = tqdm(total=rounds, desc="bootstrap", unit="round", disable=not progress)
    parts: list[np.ndarray] = []
    if workers == 1:
        for a, b in chunks:
            q = None if qw is None else qw[a:b]
            parts.append(_fit_rounds(model, cells, plan.participant_weights[a:b], q, estimate))
            bar.update(b - a)
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_init_worker,
            initargs=(model, cells, plan.participant_weights, qw, estimate),
        ) as pool:
            futures = [pool.submit(_worker_rounds, a, b) for a, b in chunks]
            for (a, b), future in zip(chunks, futures, strict=True):
                parts.append(future.result())
                bar.update(b - a)
    bar.close()
    return BootstrapDraws(model.param_names, np.asarray(estimate), np.vstack(parts), plan.seed)
