"""Cluster bootstrap: determinism, agreement with Hessian SEs, heterogeneity, coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.bootstrap import (
    bootstrap_paired,
    make_plan,
    percentile_interval,
    percentile_interval_by_column,
    rank_interval,
    simultaneous_interval,
    trial_cells,
)
from analysis.bradley_terry import bradley_terry_model
from analysis.comparisons import from_pairs
from analysis.simulate import PairDesign, simulate_pairs
from analysis.thurstone import thurstone_model


def _bootstrap(
    responses,
    *,
    rounds=200,
    seed=0,
    workers=1,
    prompts=False,
    model_fn=bradley_terry_model,
    **options,
):
    comparisons, row, outcome = from_pairs(responses)
    model = model_fn(comparisons, **options)
    fit = model.fit()
    plan = make_plan(
        responses["participant"],
        rounds=rounds,
        seed=seed,
        prompts=responses["prompt_id"] if prompts else None,
    )
    cells = trial_cells(
        row,
        outcome,
        len(comparisons.left),
        plan.participant_codes(responses["participant"]),
        plan.prompt_codes(responses["prompt_id"]) if prompts else None,
    )
    return fit, bootstrap_paired(model, cells, plan, fit.params, workers=workers)


def test_same_seed_same_draws_whatever_the_worker_count(small_study) -> None:
    responses, _ = small_study
    _, one = _bootstrap(responses, rounds=40, workers=1)
    _, two = _bootstrap(responses, rounds=40, workers=2)
    np.testing.assert_allclose(one.draws, two.draws, atol=1e-10)
    _, other = _bootstrap(responses, rounds=40, seed=1)
    assert not np.allclose(one.draws, other.draws)


def test_homogeneous_participants_bootstrap_sd_matches_hessian_se(small_study) -> None:
    responses, _ = small_study
    fit, draws = _bootstrap(responses, rounds=300)
    k = fit.n_items
    ratio = draws.draws[:, :k].std(axis=0) / fit.se[:k]
    assert np.all((ratio > 0.7) & (ratio < 1.4)), ratio
    assert draws.n_failed == 0


def test_heterogeneous_participants_widen_the_cluster_bootstrap() -> None:
    design = PairDesign(("a", "b", "c", "d"), n_participants=25, trials_per_participant=80)
    responses = simulate_pairs(design, [0, -0.3, -0.6, -0.9], participant_sd=1.0, seed=5)
    fit, draws = _bootstrap(responses, rounds=300)
    ratio = draws.draws[:, :4].std(axis=0) / fit.se[:4]
    assert ratio.mean() > 1.3  # the Hessian SE ignores that trials cluster by person


def test_two_way_bootstrap_and_extra_parameters(small_study) -> None:
    responses, _ = small_study
    fit, draws = _bootstrap(responses, rounds=60, prompts=True, position=True)
    assert draws.names[-1] == "position" and draws.draws.shape == (60, fit.n_items + 1)
    low, high = draws.percentile()
    assert np.all(low <= fit.params) and np.all(fit.params <= high)
    _, jod = _bootstrap(responses, rounds=30, model_fn=thurstone_model)
    assert np.isfinite(jod.draws).all()


def test_rounds_without_a_finite_mle_are_counted_not_hidden() -> None:
    # Only p1 ever saw "a" lose: every round that leaves p1 out has no finite MLE.
    trials = [("p1", "b", "a", "left")] + [
        (p, lft, rgt, c)
        for p in ("p2", "p3", "p4")
        for lft, rgt, c in [
            ("a", "b", "left"),
            ("b", "c", "left"),
            ("c", "b", "left"),
            ("a", "c", "left"),
        ]
    ]
    responses = pd.DataFrame(
        [
            {"participant": p, "prompt_id": "x", "left_variant": a, "right_variant": b, "choice": c}
            for p, a, b, c in trials
        ]
    )
    _, draws = _bootstrap(responses, rounds=100)
    # P(p1 not drawn) = (3/4)^4 = 0.32.
    assert 15 < draws.n_failed < 50
    assert np.isnan(draws.draws).any(axis=1).sum() == draws.n_failed
    low, _ = draws.percentile()
    assert np.isfinite(low).all()
    _, with_prior = _bootstrap(responses, rounds=50, prior=0.5)
    assert with_prior.n_failed == 0  # a prior always has an answer


def test_interval_helpers_on_known_draws() -> None:
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(20000, 5)) + np.arange(5) * 10
    low, _ = percentile_interval(draws)
    assert low == pytest.approx(np.arange(5) * 10 - 1.96, abs=0.05)
    _, s_high = simultaneous_interval(draws, np.arange(5) * 10.0)
    # Five independent normals: the joint 95% band is +- 2.57 (Sidak: z at 1 - 0.05/10).
    assert (s_high - np.arange(5) * 10) == pytest.approx(np.full(5, 2.57), abs=0.05)
    r_low, r_high, first = rank_interval(draws)
    assert r_low.tolist() == [5, 4, 3, 2, 1] == r_high.tolist()
    assert first.tolist() == [0, 0, 0, 0, 1]


def test_percentile_intervals_cover_the_truth_on_a_small_run() -> None:
    # Loose bound on a small run; benchmarks/analysis_coverage.py measures the real figure.
    truth = np.array([0.0, -0.4, -0.8, 0.4, -0.2])
    design = PairDesign(tuple("abcde"), n_participants=20, trials_per_participant=40)
    hits = []
    for seed in range(12):
        responses = simulate_pairs(design, truth, seed=100 + seed)
        _, draws = _bootstrap(responses, rounds=150, seed=seed)
        low, high = draws.percentile()
        centred = truth - truth.mean()
        hits.append((low[:5] <= centred) & (centred <= high[:5]))
    coverage = np.mean(hits)
    assert 0.8 <= coverage <= 1.0


def test_intervals_when_rounds_fail_or_a_column_is_missing() -> None:
    """Fits that failed (NaN rows) drop out together; a rated variant that a resampled study
    happens to leave without raters drops out of that round alone; nothing left: NaN."""
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(400, 3))
    gaps = draws.copy()
    gaps[::4, 2] = np.nan  # the third column is missing from a quarter of the rounds
    low, high = percentile_interval_by_column(gaps, 0.9)
    expected = np.quantile(draws[np.arange(400) % 4 != 0, 2], [0.05, 0.95])
    assert (low[2], high[2]) == pytest.approx(tuple(expected))
    assert low[:2] == pytest.approx(np.quantile(draws[:, :2], 0.05, axis=0))
    row_low, _ = percentile_interval(gaps, 0.9)  # a failed round drops every column
    assert row_low[0] == pytest.approx(np.quantile(draws[np.arange(400) % 4 != 0, 0], 0.05))
    nothing = np.full((5, 2), np.nan)
    for interval in (percentile_interval, percentile_interval_by_column):
        low, high = interval(nothing)
        assert np.isnan(low).all() and np.isnan(high).all()
