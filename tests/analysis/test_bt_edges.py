"""Bradley-Terry's edges that the fits do not show: Davidson's starting tie parameter matches
the observed tie rate, and Firth's bias reduction reaches fit_bradley_terry."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bradley_terry import DavidsonLink, fit_bradley_terry
from tests.analysis.test_bradley_terry import two_items


@pytest.mark.parametrize(
    ("counts", "rate"),
    [
        ([[3, 1, 4], [2, 2, 0]], 4 / 12),
        ([[0.25, 0.0, 0.25]], 0.5),  # weights below one (a weighted refit) count as they are
        ([[5, 5, 0]], 1e-6),  # no ties: the rate is floored, tau stays finite
        ([[0, 0, 6]], 1 - 1e-6),  # only ties: capped
    ],
)
def test_davidson_starts_at_the_observed_tie_rate(counts, rate) -> None:
    """tau0 = log nu with nu / (2 + nu) = the share of ties (equal scores)."""
    (tau,) = DavidsonLink().initial_extra(np.array(counts, float))
    nu = np.exp(tau)
    assert np.isfinite(tau) and nu / (2 + nu) == pytest.approx(rate, rel=1e-9)


def test_bias_reduction_is_firths_half_count_correction() -> None:
    """For one binomial row Firth's estimate adds 1/2 to both counts: log((k + 1/2)/(n - k + 1/2)),
    finite even when one side won everything."""
    fit = fit_bradley_terry(two_items(10, 0), bias_reduction=True, reference="b")
    assert fit.scores[0] == pytest.approx(np.log(10.5 / 0.5), abs=1e-8)
    fit = fit_bradley_terry(two_items(7, 3), bias_reduction=True, reference="b")
    assert fit.scores[0] == pytest.approx(np.log(7.5 / 3.5), abs=1e-8)
