"""Pairwise significance: Wald closed form, bootstrap p-values, Holm and BH."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from analysis.significance import adjust_pvalues, pairwise_tests, significance_matrix


def test_wald_test_closed_form() -> None:
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    tests = pairwise_tests(["a", "b"], np.array([0.5, 0.0]), cov=cov, correction="none")
    se = np.sqrt(0.04 + 0.09 - 0.02)
    assert tests.loc[0, "se"] == pytest.approx(se)
    assert tests.loc[0, "p"] == pytest.approx(2 * norm.sf(0.5 / se))


def test_holm_and_bh_against_hand_computed_values() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.20])
    # Holm: sorted 0.01*4, 0.03*3, 0.04*2, 0.20*1, made monotone.
    assert adjust_pvalues(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.20])
    # BH: sorted p * m / rank, made monotone from the top.
    assert adjust_pvalues(p, "bh") == pytest.approx([0.04, 0.0533333, 0.0533333, 0.20])
    with pytest.raises(ValueError):
        adjust_pvalues(p, "nope")


def test_bootstrap_tests_and_matrix() -> None:
    rng = np.random.default_rng(1)
    draws = rng.normal(size=(4000, 3)) * 0.1 + np.array([1.0, 0.95, 0.0])
    tests = pairwise_tests(["x", "y", "z"], np.array([1.0, 0.95, 0.0]), draws=draws)
    by_pair = tests.set_index(["a", "b"])
    assert not by_pair.loc[("x", "y"), "significant"]
    assert by_pair.loc[("x", "z"), "significant"] and by_pair.loc[("y", "z"), "significant"]
    assert by_pair.loc[("x", "z"), "p"] == pytest.approx(1 / 4001 * 2)
    m = significance_matrix(tests, ["x", "y", "z"])
    assert np.isnan(m.loc["x", "x"]) and m.loc["z", "x"] == m.loc["x", "z"]
    with pytest.raises(ValueError):
        pairwise_tests(["x"], np.zeros(1))


def test_adjustments_equal_statsmodels_on_random_pvalues() -> None:
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for _ in range(4):  # statsmodels' multipletests runs gc.collect() on every call
        p = rng.random(rng.integers(1, 30)) ** 3
        p[rng.random(len(p)) < 0.2] = p[0]  # ties
        for ours, theirs in (("holm", "holm"), ("bh", "fdr_bh"), ("bonferroni", "bonferroni")):
            assert adjust_pvalues(p, ours) == pytest.approx(multipletests(p, method=theirs)[1])
