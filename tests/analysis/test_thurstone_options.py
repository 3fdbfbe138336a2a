"""Thurstone's options each do what they say: the model's defaults, ties that link a design,
the prior, the position effect and the reference, each against a closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from analysis.comparisons import LEFT, RIGHT, TIE, collapse
from analysis.thurstone import Z75, _mills, fit_thurstone, thurstone_model
from hprune.errors import UserError
from tests.analysis.test_bradley_terry import two_items


def test_the_models_defaults_split_ties_without_position_or_prior() -> None:
    comparisons = two_items(30, 10, 20)
    model = thurstone_model(comparisons)
    assert (model.position, model.prior, model.link.tie_share) == (False, 0.0, 0.5)
    assert model.param_names == ("a", "b") and model.identification == "sum-zero"
    assert model.fit().scores[0] == pytest.approx(norm.ppf(40 / 60) / Z75 / 2)


def three_items_linked_by_ties():
    """a and b trade wins; b and c only ever tie."""
    rows = [(0, 1, LEFT, 5), (0, 1, RIGHT, 3), (1, 2, TIE, 4)]
    left, right, outcome, weight = (np.array(col) for col in zip(*rows, strict=True))
    return collapse(("a", "b", "c"), left, right, outcome, weight.astype(float))[0]


def test_split_ties_link_a_design_that_dropped_ties_leave_unestimable() -> None:
    comparisons = three_items_linked_by_ties()
    fit = fit_thurstone(comparisons, reference="a")
    # b vs c: 2 half wins each way, so they are equal; a vs b: 5 of 8
    assert fit.scores[1] == pytest.approx(fit.scores[2], abs=1e-7)
    assert fit.scores[1] == pytest.approx(-norm.ppf(5 / 8) / Z75, abs=1e-7)
    with pytest.raises(UserError, match="do not exist"):
        fit_thurstone(comparisons, ties="drop")


def test_a_prior_solves_its_stationarity_equation_and_makes_one_way_designs_finite() -> None:
    # s_a = -s_b = x, d = 2x; l = phi / Phi: d/dx of the nll + (prior / 2)(s_a^2 + s_b^2) is
    # 2 z (-k l(z d) + (n - k) l(-z d)) + 2 prior x = 0
    k, n, prior = 9, 10, 2.0

    def score(x):
        zd = Z75 * 2 * x
        return (
            2 * Z75 * (-k * _mills(np.array(zd)) + (n - k) * _mills(np.array(-zd))) + 2 * prior * x
        )

    x = brentq(score, -10, 10)
    fit = fit_thurstone(two_items(k, n - k), prior=prior)
    assert fit.prior == prior and fit.scores == pytest.approx([x, -x], abs=1e-8)
    assert np.isfinite(fit_thurstone(two_items(10, 0), prior=1.0).scores).all()
    with pytest.raises(UserError, match="do not exist"):
        fit_thurstone(two_items(10, 0))


def test_position_effect_two_orientations_closed_form() -> None:
    # a left vs b right: a wins 40 of 50; b left vs a right: b (left) wins 20 of 50
    fit = fit_thurstone(two_items(40, 10, reverse=(20, 30, 0)), position=True, reference="b")
    q1, q2 = norm.ppf(40 / 50), norm.ppf(20 / 50)
    assert fit.param("position")[0] == pytest.approx((q1 + q2) / (2 * Z75), abs=1e-8)
    assert fit.scores[0] == pytest.approx((q1 - q2) / (2 * Z75), abs=1e-8)


def test_an_unknown_reference_is_named() -> None:
    with pytest.raises(UserError, match=r"reference variant 'nope' does not occur"):
        fit_thurstone(two_items(5, 5), reference="nope")
