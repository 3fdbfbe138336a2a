"""The large-study shortcuts of the analysis give what the direct computation gives.

Each shortcut (the leave-one-out scalings of every observer at once, the Monte Carlo
p-value from uniforms, the bootstrap as weights on per-participant cells) is checked here against a direct, one-at-a-time computation written
independently in the test, on data small enough for the direct one.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.special import gammaln, log_ndtr, ndtr
from scipy.stats import binom

from analysis.bootstrap import bootstrap_paired, make_plan, trial_cells
from analysis.bradley_terry import bradley_terry_model
from analysis.comparisons import from_pairs
from analysis.pwcmp import (
    SIGMA,
    _monte_carlo_p,
    outlier_likelihoods,
    preference_matrix,
    scale_with_prior,
)
from analysis.simulate import PairDesign, simulate_pairs


def _preference(trials, items):
    return preference_matrix(from_pairs(trials, items)[0])


def test_leave_one_out_likelihoods_equal_one_lbfgs_scaling_per_observer() -> None:
    """Every observer's likelihood under the others' L-BFGS scaling, one at a time.

    Tolerance 1e-6 (log10 likelihood per pair): scale_with_prior stops at a gradient of
    1e-10 and the batched iteration at steps of 1e-10 JOD, so the scores agree to about
    1e-9 and so do the likelihoods (measured: 4e-9); any change of the objective or of the
    cells scored moves them by far more.
    """
    design = PairDesign(("a", "b", "c", "d"), n_participants=12, trials_per_participant=24)
    responses = simulate_pairs(
        design, [0.0, -0.4, 0.3, -0.9], tie_log_nu=-1.5, spammers=0.2, seed=3
    )
    items = ("a", "b", "c", "d")
    table = outlier_likelihoods(responses).set_index("participant")
    everybody = _preference(responses, items)
    for person, trials in responses.groupby("participant"):
        mine = _preference(trials, items)
        q, converged = scale_with_prior(everybody - mine)
        assert converged
        n = mine + mine.T
        i, j = np.nonzero(np.triu(n > 0, 1))
        x = (q[i] - q[j]) / SIGMA
        k, m = mine[i, j], n[i, j]  # ties make half answers: the gamma-function binomial
        ll = (
            gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
            + k * log_ndtr(x) + (m - k) * log_ndtr(-x)
        ) / np.log(10)  # fmt: skip
        expected = np.maximum(ll, -200).sum() / len(i)
        assert table.loc[person, "loo_log10_lik"] == pytest.approx(expected, abs=1e-6)
        assert table.loc[person, "loo_pairs"] == len(i)


def test_monte_carlo_p_matches_the_exact_distribution() -> None:
    """The p-value from uniforms against exact enumeration of every outcome of the cells.

    A Monte Carlo p from 1000 draws has SD sqrt(p (1 - p) / 1000) (at most 0.016); the
    test allows 4 SD plus the 1/1001 of the +1 rule, and checks several observed values.
    """
    n = np.array([1, 2, 1, 3, 1, 2, 1, 1])
    x = np.array([0.3, -0.5, 1.2, 0.1, -1.0, 0.7, 0.0, 2.0])
    combos = list(itertools.product(*(range(m + 1) for m in n)))
    outcomes = np.array(
        [np.maximum(binom.logpmf(np.array(k), n, ndtr(x)) / np.log(10), -200).sum() for k in combos]
    )
    weights = np.array([binom.pmf(np.array(k), n, ndtr(x)).prod() for k in combos])
    assert weights.sum() == pytest.approx(1.0)
    for observed in np.quantile(outcomes, [0.02, 0.2, 0.5]):
        exact = weights[outcomes <= observed + 1e-9].sum()
        p = _monte_carlo_p(observed, n.astype(float), x, np.random.default_rng(0), 1000)
        tolerance = 4 * np.sqrt(max(exact * (1 - exact), 1e-3) / 1000) + 1 / 1001
        assert abs(p - exact) <= tolerance


def test_cluster_bootstrap_equals_refitting_resampled_rows() -> None:
    """Weights on per-participant cells give the fit of the study rebuilt row by row.

    For a few rounds of the plan, the participants drawn (with their multiplicity) are
    concatenated as a new data set of rows and fitted from scratch; the weighted refit on
    the collapsed cells must give the same scores (both are the same maximum-likelihood
    problem: 1e-6 is the optimisers' tolerance), with the prompt weights too.
    """
    design = PairDesign(("a", "b", "c"), n_participants=9, trials_per_participant=18, n_prompts=3)
    responses = simulate_pairs(design, [0.0, -0.5, 0.4], tie_log_nu=-1.0, position=0.3, seed=5)
    comparisons, row, outcome = from_pairs(responses)
    model = bradley_terry_model(comparisons, position=True)
    fit = model.fit()
    for prompts in (None, responses["prompt_id"]):
        plan = make_plan(responses["participant"], rounds=4, seed=1, prompts=prompts)
        cells = trial_cells(
            row, outcome, len(comparisons.left),
            plan.participant_codes(responses["participant"]),
            plan.prompt_codes(responses["prompt_id"]) if prompts is not None else None,
        )  # fmt: skip
        draws = bootstrap_paired(model, cells, plan, fit.params, workers=1)
        for b in range(plan.rounds):
            parts = []
            for person, times in zip(plan.participants, plan.participant_weights[b], strict=True):
                mine = responses[responses["participant"] == person]
                if prompts is not None:
                    weight = dict(zip(plan.prompts, plan.prompt_weights[b], strict=True))
                    mine = mine.loc[mine.index.repeat(mine["prompt_id"].map(weight))]
                parts += [mine] * int(times)
            again = pd.concat(parts, ignore_index=True)
            rebuilt = from_pairs(again, comparisons.items)[0]
            counts = np.zeros_like(comparisons.counts)
            pairs = zip(comparisons.left, comparisons.right, strict=True)
            index = {(lf, rt): u for u, (lf, rt) in enumerate(pairs)}
            for u in range(len(rebuilt.left)):
                counts[index[(rebuilt.left[u], rebuilt.right[u])]] = rebuilt.counts[u]
            expected, converged = model.fit_params(counts, fit.params)
            assert converged
            np.testing.assert_allclose(draws.draws[b], expected, atol=1e-6)
