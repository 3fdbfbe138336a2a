"""MOS: the paper's degradation arithmetic, intervals, the bootstrap and the mixed model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from analysis.bootstrap import BootstrapPlan, make_plan
from analysis.mos import (
    bootstrap_means,
    degradation_table,
    mos_mixed_model,
    mos_table,
    perceived_degradation,
    rating_trials,
)
from analysis.simulate import simulate_ratings
from hprune.contracts.responses import validate_responses
from hprune.errors import UserError


def test_paper_arithmetic() -> None:
    assert round(100 * perceived_degradation(4.38, 4.16), 1) == 5.3
    assert round(100 * perceived_degradation(4.33, 4.13), 1) == 4.8


def _paper_ratings() -> pd.DataFrame:
    """Ratings whose means are exactly the paper's: quality 4.38 / 4.16, alignment 4.33 / 4.13."""
    rows = []
    plan = {
        ("quality", "original"): (19, 31),
        ("quality", "hierarchicalprune"): (8, 42),
        ("alignment", "original"): (33, 67),
        ("alignment", "hierarchicalprune"): (13, 87),
    }
    for (criterion, variant), (fives, fours) in plan.items():
        values = [5.0] * fives + [4.0] * fours
        for i, value in enumerate(values):
            rows.append(
                {
                    "participant": f"p{i % 10}",
                    "kind": "rating",
                    "criterion": criterion,
                    "prompt_id": f"q{i % 7}",
                    "left_variant": variant,
                    "right_variant": None,
                    "choice": None,
                    "rating": value,
                }
            )
    return rating_trials(validate_responses(pd.DataFrame(rows)))


def test_degradation_table_reproduces_the_paper() -> None:
    ratings = _paper_ratings()
    plan = make_plan(ratings["participant"], rounds=300, seed=0)
    table = degradation_table(ratings, "original", plan=plan).set_index("criterion")
    assert table.loc["quality", "mos_reference"] == pytest.approx(4.38)
    assert table.loc["quality", "mos_variant"] == pytest.approx(4.16)
    assert round(100 * table.loc["quality", "degradation"], 1) == 5.3
    assert round(100 * table.loc["alignment", "degradation"], 1) == 4.8
    for criterion in ("quality", "alignment"):
        row = table.loc[criterion]
        assert row["ci_low"] < row["degradation"] < row["ci_high"]
    with pytest.raises(UserError, match="reference variant"):
        degradation_table(ratings, "nope")


def test_t_interval_closed_form() -> None:
    ratings = _paper_ratings()
    table = mos_table(ratings).set_index(["criterion", "variant"])
    row = table.loc[("quality", "original")]
    values = np.array([5.0] * 19 + [4.0] * 31)
    half = student_t.ppf(0.975, 49) * values.std(ddof=1) / np.sqrt(50)
    assert row["ci_low"] == pytest.approx(4.38 - half)
    assert row["ci_high"] == pytest.approx(4.38 + half)
    assert row["n"] == 50 and row["participants"] == 10


def test_unit_weights_give_the_plain_means() -> None:
    ratings = _paper_ratings()
    people = tuple(sorted(ratings.participant.unique()))
    prompts = tuple(sorted(ratings.prompt_id.unique()))
    ones = BootstrapPlan(people, np.ones((2, len(people))), prompts, np.ones((2, len(prompts))), 0)
    columns, means = bootstrap_means(ratings, ones)
    expected = ratings.groupby(ratings.criterion + "\x1f" + ratings.variant)["rating"].mean()
    assert means[0] == pytest.approx(expected[columns].to_numpy())
    single = BootstrapPlan(people, np.ones((1, len(people))), None, None, 0)
    assert bootstrap_means(ratings, single)[1][0] == pytest.approx(expected[columns].to_numpy())


def test_mixed_model_balanced_design_equals_mean_differences() -> None:
    # Every participant rates every variant on every prompt once: GLS = OLS, so the
    # variant effects are exactly the differences of the raw means.
    rng = np.random.default_rng(0)
    rows = [
        {
            "participant": f"p{p}",
            "prompt_id": f"q{q}",
            "variant": v,
            "criterion": "quality",
            "rating": float(
                np.clip(np.round(4 - 0.5 * i + 0.4 * rng.normal() + 0.3 * (p % 3)), 1, 5)
            ),
        }
        for p in range(8)
        for q in range(5)
        for i, v in enumerate(["a", "b", "c"])
    ]
    ratings = pd.DataFrame(rows)
    effects, components = mos_mixed_model(ratings, "a")
    means = ratings.groupby("variant")["rating"].mean()
    by_variant = effects.set_index("variant")["estimate"]
    assert by_variant["b"] == pytest.approx(means["b"] - means["a"], abs=1e-6)
    assert by_variant["c"] == pytest.approx(means["c"] - means["a"], abs=1e-6)
    assert by_variant["a"] == pytest.approx(means["a"], abs=1e-6)
    assert components["participant"] >= 0 and components["residual"] > 0


def test_mixed_model_recovers_simulated_effects_and_refuses_one_participant() -> None:
    truth = [4.4, 4.1, 3.6]
    ratings = rating_trials(
        simulate_ratings(
            ["orig", "hpp", "bk"], truth, n_participants=25, ratings_per_participant=24, seed=4
        )
    )
    effects, components = mos_mixed_model(ratings, "orig")
    est = effects.set_index("variant")
    for name, true in (("hpp", truth[1] - truth[0]), ("bk", truth[2] - truth[0])):
        assert (
            abs(est.loc[name, "estimate"] - true) < 4 * est.loc[name, "se"] + 0.1
        )  # rounding to 1..5
    assert components["converged"]
    with pytest.raises(UserError, match="two participants"):
        mos_mixed_model(ratings[ratings.participant == "p0000"], "orig")


def test_nan_ratings_are_a_user_error() -> None:
    frame = pd.DataFrame(
        [
            {
                "participant": "p",
                "kind": "rating",
                "left_variant": "a",
                "right_variant": None,
                "choice": None,
                "rating": float("nan"),
            }
        ]
    )
    with pytest.raises(UserError, match="no numeric rating"):
        validate_responses(frame)
