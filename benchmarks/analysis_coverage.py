"""Empirical coverage of nominal 95% intervals over many simulated studies.

Each study: 6 variants with known scores, ``--participants`` x ``--trials`` pair trials.
Intervals per variant score (sum-zero): cluster-bootstrap percentile (participants),
Hessian (Wald) and cluster-robust sandwich. Two scenarios:

- homogeneous participants: everybody answers from the true scores; the target is the
  truth;
- heterogeneous participants (own scores ~ N(truth, 0.7^2)) with 5% lapses: a pooled
  Bradley-Terry fit estimates a flatter, population-average scale, so the target is its
  large-sample limit (the fit of one study with 40,000 participants), and the Hessian
  intervals, which treat every trial as independent, are expected to undercover.

    .venv/bin/python benchmarks/analysis_coverage.py --studies 200 --rounds 500
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import norm

from analysis.bootstrap import available_workers, bootstrap_paired, make_plan, trial_cells
from analysis.bradley_terry import bradley_terry_model
from analysis.comparisons import collapse
from analysis.simulate import PairDesign, simulate_pair_arrays

TRUTH = np.array([0.0, -0.2, -0.5, -0.9, 0.3, -1.4])
NAMES = tuple("abcdef")


def fit_study(design, behaviour, rng):
    sim = simulate_pair_arrays(design, TRUTH, rng, **behaviour)
    comparisons, row = collapse(NAMES, sim.left.ravel(), sim.right.ravel(), sim.outcome.ravel())
    return sim, comparisons, row


def pseudo_truth(behaviour, trials, seed=1) -> np.ndarray:
    if not behaviour:
        return TRUTH - TRUTH.mean()
    design = PairDesign(NAMES, 40_000, trials)
    _, comparisons, _ = fit_study(design, behaviour, np.random.default_rng(seed))
    return bradley_terry_model(comparisons).fit().scores


def run(scenario, behaviour, args) -> None:
    target = pseudo_truth(behaviour, args.trials)
    design = PairDesign(NAMES, args.participants, args.trials)
    rng = np.random.default_rng(args.seed)
    hits = {"bootstrap percentile": [], "Hessian (Wald)": [], "sandwich (cluster-robust)": []}
    z = norm.ppf(0.975)
    participant = np.repeat(np.arange(args.participants), args.trials)
    start = time.perf_counter()
    for s in range(args.studies):
        sim, comparisons, row = fit_study(design, behaviour, rng)
        model = bradley_terry_model(comparisons)
        fit = model.fit()
        plan = make_plan([f"p{i}" for i in range(args.participants)], rounds=args.rounds, seed=s)
        codes = plan.participant_codes([f"p{i}" for i in participant])
        cells = trial_cells(row, sim.outcome.ravel(), len(comparisons.left), codes)
        draws = bootstrap_paired(model, cells, plan, fit.params, workers=args.workers)
        low, high = draws.percentile()
        hits["bootstrap percentile"].append((low <= target) & (target <= high))
        hits["Hessian (Wald)"].append(np.abs(fit.scores - target) <= z * fit.se)
        per_person = (
            cells.participant_matrix(args.participants).toarray().reshape(args.participants, -1, 3)
        )
        robust = np.sqrt(np.diag(model.cluster_covariance(fit.params, per_person)))
        hits["sandwich (cluster-robust)"].append(np.abs(fit.scores - target) <= z * robust)
    elapsed = time.perf_counter() - start
    for name, h in hits.items():
        h = np.array(h)
        se = np.sqrt(h.mean() * (1 - h.mean()) / h.size)
        print(f"| {scenario} | {name} | {100 * h.mean():.1f}% (+- {100 * 1.96 * se:.1f}) | "
              f"{args.studies} x {len(NAMES)} | {elapsed:.0f} s |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--participants", type=int, default=30)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, default=available_workers())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| scenario | interval | coverage of nominal 95% | studies x scores | time |")
    print("|---|---|---|---|---|")
    run("homogeneous", {}, args)
    run("heterogeneous + 5% lapses", {"participant_sd": 0.7, "lapse": 0.05}, args)


if __name__ == "__main__":
    main()
