"""Power by simulation: monotone in participants, sandwich SEs honest, known easy/hard cases."""

from __future__ import annotations

import numpy as np

from analysis.power import PowerPlan, participants_needed, power_curve, simulate_once


def test_power_grows_with_participants_and_big_gaps_are_easy() -> None:
    plan = PowerPlan(("orig", "hpp", "bk"), (0.0, -0.3, -1.5), trials_per_participant=30)
    curve = power_curve(plan, [5, 40], simulations=40, seed=1)
    assert curve["power: orig vs bk"].min() >= 0.95
    assert curve["power: orig vs hpp"].iloc[1] > curve["power: orig vs hpp"].iloc[0]
    assert participants_needed(curve, 0.5) == 40
    assert participants_needed(curve, 1.01) is None
    again = power_curve(plan, [5, 40], simulations=40, seed=1)
    assert again.equals(curve)


def test_no_difference_gives_about_alpha_and_honest_coverage() -> None:
    # Equal scores: a detection is a false positive (~alpha / 2 with the sign condition),
    # and with heterogeneous participants the sandwich intervals still cover ~95%.
    plan = PowerPlan(("a", "b"), (0.0, 0.0), trials_per_participant=20, participant_sd=0.8)
    rng = np.random.default_rng(0)
    results = [simulate_once(plan, 30, rng) for _ in range(150)]
    detected = np.mean([r[0][0] for r in results])
    covered = np.mean([r[2][0] for r in results])
    assert detected < 0.08
    assert 0.88 <= covered <= 0.99


def test_jod_scale_and_other_targets() -> None:
    plan = PowerPlan(("a", "b", "c"), (0.0, -1.0, -2.0), trials_per_participant=30, scale="jod",
                     targets="adjacent")  # fmt: skip
    curve = power_curve(plan, [20], simulations=10, seed=0)
    assert curve["power_all"].iloc[0] >= 0.9
    assert [c for c in curve.columns if c.startswith("power:")] == [
        "power: a vs b",
        "power: b vs c",
    ]
