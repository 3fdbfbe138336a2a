"""Cluster bootstrap speed: 1,000 participant-resampling rounds on 100,000 responses.

A simulated study (10 variants, 500 participants x 200 pair trials, Davidson ties, a
position effect) is fitted once; then every round re-weights participants (multinomial
weights) and refits Bradley-Terry on the same unique rows, starting from the full fit.
Timed with 1 and 2 worker processes (and the two-way participant x prompt bootstrap).

    .venv/bin/python benchmarks/analysis_bootstrap.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analysis.bootstrap import bootstrap_paired, make_plan, trial_cells
from analysis.bradley_terry import bradley_terry_model
from analysis.comparisons import from_pairs
from analysis.simulate import PairDesign, simulate_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--participants", type=int, default=500)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--variants", type=int, default=10)
    args = parser.parse_args()
    names = tuple(f"v{i}" for i in range(args.variants))
    design = PairDesign(names, args.participants, args.trials, n_prompts=100)
    responses = simulate_pairs(
        design, -0.15 * np.arange(args.variants), seed=0, tie_log_nu=-1.0, position=0.1,
        participant_sd=0.3,
    )  # fmt: skip
    start = time.perf_counter()
    comparisons, row, outcome = from_pairs(responses)
    model = bradley_terry_model(comparisons, position=True)
    fit = model.fit()
    prepare = time.perf_counter() - start
    print(f"{len(responses):,} responses, {len(comparisons.left)} unique rows; "
          f"collapse + full fit {prepare:.2f} s")  # fmt: skip
    print("| bootstrap | workers | rounds | time | per round | failed rounds |")
    print("|---|---|---|---|---|---|")
    for two_way in (False, True):
        plan = make_plan(
            responses["participant"], rounds=args.rounds, seed=0,
            prompts=responses["prompt_id"] if two_way else None,
        )  # fmt: skip
        cells = trial_cells(
            row, outcome, len(comparisons.left), plan.participant_codes(responses["participant"]),
            plan.prompt_codes(responses["prompt_id"]) if two_way else None,
        )  # fmt: skip
        for workers in (1, 2):
            start = time.perf_counter()
            draws = bootstrap_paired(model, cells, plan, fit.params, workers=workers)
            elapsed = time.perf_counter() - start
            kind = "participants x prompts" if two_way else "participants"
            print(f"| {kind} | {workers} | {args.rounds} | {elapsed:.2f} s | "
                  f"{1e3 * elapsed / args.rounds:.2f} ms | {draws.n_failed} |")  # fmt: skip


if __name__ == "__main__":
    main()
