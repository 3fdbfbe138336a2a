"""Bradley-Terry fit time: hprune's ML on unique rows against choix's ``ilsr_pairwise``.

Also the dashboard's ``analysis.live.live_scores`` on 10,000 responses (goal < 50 ms).

Both fit the same simulated comparisons (random pairs, Bradley-Terry outcomes from known
scores) in one run. hprune's time includes collapsing the raw (winner, loser) arrays into
count-weighted unique rows; choix gets its list of (winner, loser) tuples ready-made. The
estimates are compared after centring (max absolute difference).

    .venv/bin/python benchmarks/analysis_bt_speed.py
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import choix
import numpy as np
from scipy.special import expit

from analysis.bradley_terry import bradley_terry_model
from analysis.comparisons import collapse
from analysis.live import live_scores
from analysis.simulate import PairDesign, simulate_pairs


def simulate(n_items: int, n_comparisons: int, seed: int):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 1, n_items)
    a = rng.integers(n_items, size=n_comparisons)
    b = (a + rng.integers(1, n_items, size=n_comparisons)) % n_items
    a_wins = rng.random(n_comparisons) < expit(scores[a] - scores[b])
    winner, loser = np.where(a_wins, a, b), np.where(a_wins, b, a)
    return winner, loser


def ours(n_items: int, winner: np.ndarray, loser: np.ndarray, *, with_se: bool):
    items = tuple(str(i) for i in range(n_items))
    comparisons, _ = collapse(items, winner, loser, np.zeros(len(winner), dtype=int))
    model = bradley_terry_model(comparisons)
    if with_se:
        return model.fit().scores
    return model.fit_params(comparisons.counts)[0]


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        "| items | comparisons | unique rows | hprune (estimates) | hprune (+ Hessian SEs) | choix ilsr_pairwise | speed-up | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n_items, n_comparisons in ((20, 20_000), (200, 200_000)):
        winner, loser = simulate(n_items, n_comparisons, args.seed)
        data = list(zip(winner.tolist(), loser.tolist(), strict=True))
        unique = len(np.unique(winner * n_items + loser))
        t_est, est = best_of(args.repeats, partial(ours, n_items, winner, loser, with_se=False))
        t_full, _ = best_of(args.repeats, partial(ours, n_items, winner, loser, with_se=True))
        t_choix, ref = best_of(args.repeats, partial(choix.ilsr_pairwise, n_items, data))
        diff = np.max(np.abs((est - est.mean()) - (ref - ref.mean())))
        print(
            f"| {n_items} | {n_comparisons:,} | {unique:,} | {1e3 * t_est:.1f} ms | "
            f"{1e3 * t_full:.1f} ms | {1e3 * t_choix:.1f} ms | {t_choix / t_est:.0f}x | {diff:.1e} |"
        )

    names = tuple(f"v{i}" for i in range(10))
    responses = simulate_pairs(PairDesign(names, 100, 100), -0.1 * np.arange(10), seed=0)
    live_scores(responses)
    t_live, _ = best_of(max(args.repeats, 5), partial(live_scores, responses))
    print(f"\nlive_scores on {len(responses):,} responses (10 variants): {1e3 * t_live:.1f} ms")


if __name__ == "__main__":
    main()
