"""Bradley-Terry, Davidson and position effects: closed forms, choix, identification, bad input."""

from __future__ import annotations

import choix
import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import expit, logit

from analysis.bradley_terry import (
    bradley_terry_model,
    fit_bradley_terry,
    tie_probability_at_equal_scores,
)
from analysis.comparisons import (
    LEFT,
    RIGHT,
    TIE,
    check_estimable,
    collapse,
    from_pairs,
    is_estimable,
)
from hprune.errors import UserError


def two_items(left_wins: float, right_wins: float, ties: float = 0.0, *, reverse=None):
    """Item a on the left against b; optionally also b on the left against a."""
    rows = [(0, 1, left_wins, right_wins, ties)]
    if reverse is not None:
        rows.append((1, 0, *reverse))
    left, right, outcome, weight = [], [], [], []
    for lft, rgt, *counts in rows:
        for code, n in zip((LEFT, RIGHT, TIE), counts, strict=True):
            left.append(lft)
            right.append(rgt)
            outcome.append(code)
            weight.append(n)
    comparisons, _ = collapse(
        ("a", "b"), np.array(left), np.array(right), np.array(outcome), np.array(weight, float)
    )
    return comparisons


@pytest.mark.parametrize(("k", "n"), [(7, 10), (1, 3), (50, 51), (500, 1000)])
def test_two_items_k_of_n_is_the_log_odds(k: int, n: int) -> None:
    fit = fit_bradley_terry(two_items(k, n - k), reference="b")
    assert fit.scores[0] == pytest.approx(np.log(k / (n - k)), abs=1e-9)
    assert fit.se[0] == pytest.approx(np.sqrt(n / (k * (n - k))), rel=1e-7)
    centred = fit_bradley_terry(two_items(k, n - k))
    assert centred.scores == pytest.approx([np.log(k / (n - k)) / 2, -np.log(k / (n - k)) / 2])
    assert centred.identification == "sum-zero"


def test_reference_and_sum_zero_are_the_same_fit_shifted(small_study) -> None:
    responses, _ = small_study
    comparisons, _, _ = from_pairs(responses)
    centred = fit_bradley_terry(comparisons)
    ref = fit_bradley_terry(comparisons, reference="orig")
    i = comparisons.items.index("orig")
    assert ref.scores == pytest.approx(centred.scores - centred.scores[i], abs=1e-9)
    assert ref.se[i] == 0
    # Var(s_j - s_orig) is the same whichever way the scale is pinned.
    c = centred.score_cov
    diff_var = np.diag(c) + c[i, i] - 2 * c[:, i]
    assert ref.se[: len(c)] ** 2 == pytest.approx(diff_var, abs=1e-12)
    assert centred.scores.sum() == pytest.approx(0, abs=1e-12)
    # Sum-zero covariance: every row sums to zero.
    assert c.sum(axis=1) == pytest.approx(np.zeros(len(c)), abs=1e-12)


def test_equals_choix_ilsr_on_simulated_data(small_study) -> None:
    responses, truth = small_study
    comparisons, _, _ = from_pairs(responses)
    fit = fit_bradley_terry(comparisons)
    assert np.max(np.abs(fit.scores - _choix_centred(comparisons))) < 1e-5
    # ... and recovers the truth it was simulated from.
    truth = np.array(truth)[
        [["orig", "hpp", "bk", "koala", "sana", "tiny"].index(v) for v in comparisons.items]
    ]
    assert np.max(np.abs(fit.scores - (truth - truth.mean()))) < 4 * fit.se.max()


def _choix_centred(comparisons):
    c = comparisons.counts
    data = []
    for lft, rgt, (nl, nr, _) in zip(comparisons.left, comparisons.right, c, strict=True):
        data += [(lft, rgt)] * int(nl) + [(rgt, lft)] * int(nr)
    params = choix.ilsr_pairwise(comparisons.n_items, data, tol=1e-12, max_iter=2000)
    return params - params.mean()


def test_equals_choix_on_published_tone_mapping_data(tmo_responses) -> None:
    comparisons, _, _ = from_pairs(tmo_responses)
    assert comparisons.n_items == 7 and comparisons.n_comparisons == 1213
    fit = fit_bradley_terry(comparisons)
    assert np.max(np.abs(fit.scores - _choix_centred(comparisons))) < 1e-5


def test_equals_choix_on_published_light_field_data_per_scene(lightfield_responses) -> None:
    checked = 0
    for scene, trials in lightfield_responses.groupby("prompt_id"):
        comparisons, _, _ = from_pairs(trials)
        fit = fit_bradley_terry(comparisons)
        assert np.max(np.abs(fit.scores - _choix_centred(comparisons))) < 1e-5, scene
        checked += 1
    assert checked == 14


def test_davidson_two_items_is_saturated() -> None:
    # Three outcome rates, two free parameters (d, nu): the MLE reproduces them exactly,
    # d = log(nL / nR) and nu = nT / sqrt(nL nR).
    fit = fit_bradley_terry(two_items(30, 10, 12), reference="b")
    assert fit.model == "davidson"
    assert fit.scores[0] == pytest.approx(np.log(30 / 10), abs=1e-9)
    assert np.exp(fit.param("tie_log_nu")[0]) == pytest.approx(12 / np.sqrt(300), rel=1e-9)
    nu = 12 / np.sqrt(300)
    assert tie_probability_at_equal_scores(fit) == pytest.approx(nu / (2 + nu))


def test_tie_handling_half_and_drop() -> None:
    half = fit_bradley_terry(two_items(30, 10, 12), ties="half", reference="b")
    assert half.scores[0] == pytest.approx(np.log(36 / 16))
    drop = fit_bradley_terry(two_items(30, 10, 12), ties="drop", reference="b")
    assert drop.scores[0] == pytest.approx(np.log(3))
    assert fit_bradley_terry(two_items(30, 10), ties="davidson").model == "bradley-terry"


def test_position_effect_two_orientations_closed_form() -> None:
    # a left vs b right: a wins 40 of 50; b left vs a right: b (left) wins 20 of 50.
    fit = fit_bradley_terry(two_items(40, 10, reverse=(20, 30, 0)), position=True, reference="b")
    l1, l2 = logit(40 / 50), logit(20 / 50)
    assert fit.param("position")[0] == pytest.approx((l1 + l2) / 2, abs=1e-9)
    assert fit.scores[0] == pytest.approx((l1 - l2) / 2, abs=1e-9)


def test_l2_prior_two_items_solves_its_stationarity_equation() -> None:
    # s_a = -s_b = x with n sigma(2x) - k + prior x = 0.
    k, n, prior = 9, 10, 2.0
    x = brentq(lambda x: n * expit(2 * x) - k + prior * x, -10, 10)
    fit = fit_bradley_terry(two_items(k, n - k), prior=prior)
    assert fit.scores == pytest.approx([x, -x], abs=1e-9)
    # With a prior even a one-way design has a finite answer.
    assert np.isfinite(fit_bradley_terry(two_items(10, 0), prior=1.0).scores).all()


def test_bad_designs_are_user_errors() -> None:
    with pytest.raises(UserError, match=r"one-way|do not exist"):
        fit_bradley_terry(two_items(10, 0))
    with pytest.raises(UserError, match="every pair trial is a tie"):
        fit_bradley_terry(two_items(0, 0, 9))
    comparisons, _ = collapse(
        ("a", "b", "c", "d"), np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2]), np.array([0, 0, 0, 0])
    )
    with pytest.raises(UserError, match="disconnected"):
        fit_bradley_terry(comparisons)
    single, _ = collapse(("a",), np.zeros(0, int), np.zeros(0, int), np.zeros(0, int))
    with pytest.raises(UserError, match="at least two variants"):
        fit_bradley_terry(single)
    with pytest.raises(UserError, match="reference variant"):
        fit_bradley_terry(two_items(5, 5), reference="nope")


def test_fast_estimability_check_agrees_with_the_graph_check() -> None:
    rng = np.random.default_rng(0)
    items = tuple("abcde")
    left, right = np.array([(i, j) for i in range(5) for j in range(5) if i != j]).T
    agree = 0
    for _ in range(300):
        counts = rng.poisson(0.25, size=(len(left), 3)).astype(float)
        counts[:, TIE] *= rng.random() < 0.5
        comparisons = collapse(items, left, right, np.zeros(len(left), int))[0].with_counts(counts)
        for prior, ties_link in ((0.0, True), (0.0, False), (1.0, True)):
            try:
                if counts[:, :2].sum() == 0:
                    raise UserError("no preference")
                check_estimable(comparisons, prior=prior, ties_link=ties_link)
                expected = True
            except UserError:
                expected = False
            fast = is_estimable(comparisons, counts, prior=prior, ties_link=ties_link)
            agree += fast == expected or counts[:, :2].sum() == 0
    assert agree == 900


def test_sandwich_covariance_two_items_closed_form() -> None:
    # Every trial its own cluster, k wins of n: the meat sum (y - p)^2 equals n p (1 - p),
    # so the sandwich variance is the Hessian's 1 / (n p (1 - p)) times n / (n - 1).
    k, n = 30, 40
    comparisons = two_items(k, n - k)
    model = bradley_terry_model(comparisons, reference="b")
    fit = model.fit()
    per_trial = np.zeros((n, 1, 3))
    per_trial[:k, 0, LEFT] = 1
    per_trial[k:, 0, RIGHT] = 1
    cov = model.cluster_covariance(fit.params, per_trial)
    p = k / n
    assert cov[0, 0] == pytest.approx(1 / (n * p * (1 - p)) * n / (n - 1), rel=1e-9)
    assert fit.se[0] ** 2 == pytest.approx(1 / (n * p * (1 - p)), rel=1e-9)
