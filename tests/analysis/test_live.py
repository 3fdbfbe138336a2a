"""The dashboard's live scores: the right columns, honest warnings, never a crash."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.bradley_terry import fit_bradley_terry
from analysis.comparisons import from_pairs
from analysis.live import COLUMNS, live_scores


def test_live_scores_match_the_full_fit(small_study) -> None:
    responses, _ = small_study
    table = live_scores(responses)
    assert list(table.columns) == COLUMNS
    assert table.attrs["warnings"] == []
    fit = fit_bradley_terry(from_pairs(responses)[0])
    assert table["score"].to_numpy() == pytest.approx(fit.scores)
    assert (table["ci_low"] < table["score"]).all() and (table["score"] < table["ci_high"]).all()
    assert table["n_comparisons"].sum() == 2 * len(responses)
    orig = table.set_index("variant").loc["orig"]
    shown = responses[(responses.left_variant == "orig") | (responses.right_variant == "orig")]
    won = ((shown.left_variant == "orig") & (shown.choice == "left")) | (
        (shown.right_variant == "orig") & (shown.choice == "right")
    )
    assert orig["win_rate"] == pytest.approx(won.mean())


def _rows(*trials):
    return pd.DataFrame(
        [
            {
                "participant": "p1",
                "kind": "pair",
                "criterion": "quality",
                "left_variant": a,
                "right_variant": b,
                "choice": c,
                "rating": np.nan,
            }
            for a, b, c in trials
        ]
    )


def test_young_study_warns_instead_of_failing() -> None:
    empty = live_scores(_rows())
    assert list(empty.columns) == COLUMNS and empty.empty
    one_way = live_scores(
        _rows(("a", "b", "left"), ("b", "a", "right"), ("a", "c", "left"), ("c", "b", "tie"))
    )
    assert np.isfinite(one_way["score"]).all()
    assert "prior" in one_way.attrs["warnings"][0]
    split = live_scores(_rows(("a", "b", "left"), ("c", "d", "right")))
    assert split["score"].isna().all() and "not connected" in split.attrs["warnings"][0]
    ties = live_scores(_rows(("a", "b", "tie")))
    assert ties["score"].isna().all() and "tie" in ties.attrs["warnings"][0]


def test_criterion_selection_and_pooling_warning(small_study) -> None:
    responses, _ = small_study
    other = responses.assign(criterion="alignment")
    both = pd.concat([responses, other])
    assert "pooled" in live_scores(both).attrs["warnings"][0]
    only = live_scores(both, criterion="alignment")
    assert only.attrs["warnings"] == []
    assert only["score"].to_numpy() == pytest.approx(live_scores(responses)["score"].to_numpy())
