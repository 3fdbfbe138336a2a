"""The likelihoods checked against themselves: every link's analytic gradient and Hessian equal
central finite differences of its negative log-likelihood at random parameters, and the
Davidson Hessian's standard errors equal a participant bootstrap's on data with ties.

Standard errors rest on the Hessian, which no fit result reveals when it is wrong (the optimum
does not move): these tests are what would notice a dropped term.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from scipy.stats import kurtosis

from analysis.bootstrap import bootstrap_paired, make_plan, trial_cells
from analysis.bradley_terry import DavidsonLink, LogitLink, bradley_terry_model
from analysis.comparisons import LEFT, RIGHT, TIE, collapse, from_pairs
from analysis.estimation import PairedModel
from analysis.simulate import PairDesign, simulate_pairs
from analysis.thurstone import ProbitJODLink

LINKS = {
    "logit-half": lambda: LogitLink("half"),
    "logit-drop": lambda: LogitLink("drop"),
    "davidson": DavidsonLink,
    "thurstone-half": lambda: ProbitJODLink("half"),
    "thurstone-drop": lambda: ProbitJODLink("drop"),
}


def random_comparisons(rng: np.random.Generator, k: int = 4):
    """Every ordered pair of k items with random left/right/tie counts (ties included)."""
    left, right = np.array([(i, j) for i in range(k) for j in range(k) if i != j]).T
    comparisons, _ = collapse(tuple("abcdefgh"[:k]), left, right, np.zeros(len(left), int))
    counts = rng.poisson(4.0, size=(len(left), 3)).astype(float) + 1.0
    return comparisons.with_counts(counts)


def central_gradient(f, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


def central_jacobian(g, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    cols = []
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h
        cols.append((g(x + e) - g(x - e)) / (2 * h))
    return np.array(cols).T


@pytest.mark.parametrize("prior", [0.0, 0.7])
@pytest.mark.parametrize("position", [False, True])
@pytest.mark.parametrize("link", sorted(LINKS))
def test_gradient_and_hessian_equal_finite_differences(link, position, prior) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{link}-{position}-{prior}".encode()))
    comparisons = random_comparisons(rng)
    model = PairedModel(comparisons, LINKS[link](), position=position, prior=prior)
    objective = model.objective(comparisons.counts)
    for _ in range(3):  # three random points, each far from the optimum
        phi = rng.normal(0.0, 0.8, size=int(model.free.sum()))
        f, g, h = objective(phi, True)
        assert f == pytest.approx(objective(phi, False)[0], abs=0)
        fd_g = central_gradient(lambda x: objective(x, False)[0], phi)
        np.testing.assert_allclose(g, fd_g, rtol=1e-6, atol=1e-6 * max(1.0, abs(f)) ** 0.5)
        fd_h = central_jacobian(lambda x: objective(x, False)[1], phi)
        np.testing.assert_allclose(h, fd_h, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(h, h.T, atol=0)


@pytest.mark.parametrize("link", sorted(LINKS))
def test_the_objective_is_the_negative_log_likelihood_of_the_outcomes(link) -> None:
    """f is -sum(count x log P(outcome)) computed here from the link's published formula, so a
    gradient consistent with a wrong f cannot pass either."""
    from scipy.special import expit
    from scipy.stats import norm

    from analysis.thurstone import Z75

    rng = np.random.default_rng(3)
    comparisons = random_comparisons(rng, k=3)
    model = PairedModel(comparisons, LINKS[link](), position=True)
    params = np.concatenate([rng.normal(0, 1, 3), [0.3], [0.4] if link == "davidson" else []])
    s, gamma = params[:3], params[3]
    d = s[comparisons.left] - s[comparisons.right] + gamma
    c = comparisons.counts
    if link == "davidson":
        nu = np.exp(params[4])
        den = np.exp(d / 2) + np.exp(-d / 2) + nu
        p = np.stack([np.exp(d / 2) / den, np.exp(-d / 2) / den, nu / den], axis=1)
        expected = float((c * np.log(p)).sum())
    else:
        p_left = expit(d) if link.startswith("logit") else norm.cdf(Z75 * d)
        share = 0.5 if link.endswith("half") else 0.0
        wins_left, wins_right = c[:, LEFT] + share * c[:, TIE], c[:, RIGHT] + share * c[:, TIE]
        expected = float(wins_left @ np.log(p_left) + wins_right @ np.log1p(-p_left))
    assert model.loglik(params, c) == pytest.approx(expected, rel=1e-12)


def test_davidson_hessian_standard_errors_equal_the_participant_bootstrap() -> None:
    """2000 homogeneous participants x 10 trials, 35% ties, five items 1 logit apart and a
    position effect: the Hessian SEs equal the bootstrap SDs of every parameter.

    Tolerance: the bootstrap SD of R rounds has a Monte Carlo relative error of
    sqrt((kurtosis + 2) / (4 R)) (kurtosis: the draws' excess kurtosis; 1.6% at R = 2000), and
    the cluster bootstrap estimates the sandwich variance, whose meat is a mean over C
    participants: its SD differs from the Hessian's by about 1 / sqrt(2 C) (1.6% at C = 2000)
    on one data set. Each ratio must lie within four of their combined standard errors (~9%).
    Dropping the Hessian's -diff**2 term shrinks these SEs by 11-35% here.
    """
    design = PairDesign(tuple("abcde"), n_participants=2000, trials_per_participant=10)
    responses = simulate_pairs(
        design, [0.0, 1.0, 2.0, 3.0, 4.0], seed=11, tie_log_nu=0.5, position=0.3
    )
    assert 0.3 < (responses["choice"] == "tie").mean() < 0.4
    comparisons, row, outcome = from_pairs(responses)
    model = bradley_terry_model(comparisons, ties="davidson", position=True)
    fit = model.fit()
    assert fit.param_names[-2:] == ("position", "tie_log_nu")
    rounds = 2000
    plan = make_plan(responses["participant"], rounds=rounds, seed=5)
    cells = trial_cells(
        row, outcome, len(comparisons.left), plan.participant_codes(responses["participant"])
    )
    draws = bootstrap_paired(model, cells, plan, fit.params, workers=1).draws
    assert np.isfinite(draws).all()
    sd = draws.std(axis=0, ddof=1)
    monte_carlo = np.sqrt((kurtosis(draws, axis=0) + 2) / (4 * rounds))
    one_data_set = 1 / np.sqrt(2 * design.n_participants)
    tolerance = 4 * np.sqrt(monte_carlo**2 + one_data_set**2)
    ratio = sd / fit.se
    # The sum-zero scores have one redundant direction; every parameter is compared.
    assert np.all(np.abs(ratio - 1) < tolerance), (ratio, tolerance)
