"""Thurstone Case V in JOD: closed forms, the 75% anchor, agreement with Bradley-Terry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from analysis.bradley_terry import fit_bradley_terry
from analysis.comparisons import from_pairs
from analysis.simulate import PairDesign, simulate_pairs
from analysis.thurstone import Z75, fit_thurstone, jod_to_probability
from hprune.errors import UserError
from tests.analysis.test_bradley_terry import two_items


def test_one_jod_is_75_percent() -> None:
    assert jod_to_probability(1.0) == pytest.approx(0.75)
    assert jod_to_probability(0.0) == pytest.approx(0.5)


@pytest.mark.parametrize(("k", "n"), [(75, 100), (3, 10), (99, 100)])
def test_two_items_closed_form(k: int, n: int) -> None:
    p = k / n
    fit = fit_thurstone(two_items(k, n - k), reference="b")
    assert fit.scale == "JOD"
    assert fit.scores[0] == pytest.approx(norm.ppf(p) / Z75, abs=1e-9)
    se = np.sqrt(p * (1 - p) / n) / (Z75 * norm.pdf(norm.ppf(p)))
    assert fit.se[0] == pytest.approx(se, rel=1e-7)


def test_thurstone_recovers_jod_truth_and_ranks_like_bradley_terry() -> None:
    truth = np.array([0.0, -0.5, -1.0, -2.0])
    design = PairDesign(("a", "b", "c", "d"), n_participants=60, trials_per_participant=60)
    responses = simulate_pairs(design, truth, link="thurstone", seed=3)
    comparisons, _, _ = from_pairs(responses)
    jod = fit_thurstone(comparisons)
    assert np.abs(jod.scores - (truth - truth.mean())).max() < 4 * jod.se.max()
    bt = fit_bradley_terry(comparisons)
    assert np.argsort(jod.scores).tolist() == np.argsort(bt.scores).tolist()


def test_ties_split_or_dropped_and_bad_input() -> None:
    half = fit_thurstone(two_items(30, 10, 20), reference="b")
    assert half.scores[0] == pytest.approx(norm.ppf(40 / 60) / Z75)
    drop = fit_thurstone(two_items(30, 10, 20), ties="drop", reference="b")
    assert drop.scores[0] == pytest.approx(norm.ppf(30 / 40) / Z75)
    with pytest.raises(UserError):
        fit_thurstone(two_items(10, 0))
    with pytest.raises(ValueError, match="splits ties"):
        fit_thurstone(two_items(3, 4), ties="davidson")  # type: ignore[arg-type]
