"""Calibration of the default quality control: how often it excludes honest participants,
and how often it catches random responders.

Honest participants answer from the model (Bradley-Terry, the same true scores for
everybody); a random responder answers every pair trial at random, and, where the study has
gold trials, fails each with probability 1/2. For each study size the whole default filter
runs (``analysis.qc.run_qc``: attention per policy, speed, the calibrated leave-one-out
likelihood) and the benchmark prints the per-participant exclusion rate of the honest ones
and the detection rate of the random ones, with a 95% binomial margin.

    nice -n 10 python benchmarks/qc_calibration.py --studies 40
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from analysis.qc import QCOptions, run_qc
from analysis.simulate import PairDesign, simulate_pairs, simulate_ratings

SCORES = {
    "spread 1 logit per step": [0.0, -1.0, -2.0, -3.0, -4.0],
    "spread 0.5 logit per step": [0.0, -0.5, -1.0, -1.5, -2.0],
}


def pair_study(participants, trials, scores, seed, random_share=0.1, gold=0):
    design = PairDesign(tuple("abcde"), participants, trials)
    frame = simulate_pairs(design, scores, seed=seed, spammers=random_share, attention_trials=gold)
    random_ids = set(frame.loc[(frame.kind == "pair") & (frame.rt_ms < 600), "participant"])
    frame["rt_ms"] = np.nan  # judge the likelihood and gold checks, not the speed
    return frame, random_ids


def rates(frame, random_ids, options):
    qc = run_qc(frame, options).participants.set_index("participant")
    is_random = qc.index.isin(list(random_ids))
    return qc["excluded"][~is_random].to_numpy(), qc["excluded"][is_random].to_numpy()


def margin(hits: np.ndarray) -> str:
    p = hits.mean() if len(hits) else float("nan")
    half = 1.96 * np.sqrt(max(p * (1 - p), 1e-12) / max(len(hits), 1))
    return f"{100 * p:.2f}% (+- {100 * half:.2f}; n={len(hits)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=40)
    args = parser.parse_args()
    options = QCOptions()
    print("| scores | participants | trials | gold trials | honest excluded | random detected |")
    print("|---|---:|---:|---:|---|---|")
    start = time.perf_counter()
    for label, scores in SCORES.items():
        for participants in (20, 50, 100):
            for gold in (0, 2):
                honest, caught = [], []
                for s in range(args.studies):
                    frame, ids = pair_study(
                        participants, 20, scores, [participants, gold, s], gold=gold
                    )
                    h, c = rates(frame, ids, options)
                    honest.append(h)
                    caught.append(c)
                print(f"| {label} | {participants} | 20 | {gold} | {margin(np.concatenate(honest))} "
                      f"| {margin(np.concatenate(caught))} |")  # fmt: skip
    print("\nDetection by trials per participant (50 participants, 1 logit per step, no gold):")
    for trials in (5, 10, 20, 40):
        caught, honest = [], []
        for s in range(args.studies):
            frame, ids = pair_study(50, trials, SCORES["spread 1 logit per step"], [trials, s])
            h, c = rates(frame, ids, options)
            honest.append(h)
            caught.append(c)
        print(f"| {trials} trials | honest excluded {margin(np.concatenate(honest))} | random "
              f"detected {margin(np.concatenate(caught))} |")  # fmt: skip
    print("\nRatings (MOS), ITU-R BT.500 screening + no-variance check, 20 ratings each:")
    for participants in (20, 50, 100):
        excluded = []
        for s in range(args.studies):
            frame = simulate_ratings(list("abcde"), [4.4, 4.2, 3.5, 3.4, 3.0],
                                     n_participants=participants, ratings_per_participant=20,
                                     n_prompts=4, seed=[participants, s])  # fmt: skip
            frame["rt_ms"] = np.nan
            qc = run_qc(frame, options).participants
            excluded.append(qc["excluded"].to_numpy())
        print(f"| ratings | {participants} | honest excluded {margin(np.concatenate(excluded))} |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
