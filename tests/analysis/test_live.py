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


def test_live_mos_is_the_reports_mean_and_t_interval_per_criterion() -> None:
    from analysis.live import MOS_COLUMNS, live_mos
    from analysis.mos import mos_table, rating_trials

    rng = np.random.default_rng(4)
    rows = [
        {"kind": "rating", "criterion": c, "left_variant": v, "participant": f"p{p}",
         "prompt_id": f"q{k}", "rating": int(rng.integers(1, 6))}
        for c in ("quality", "alignment") for v in ("a", "b") for p in range(5) for k in range(3)
    ]  # fmt: skip
    rows.append({"kind": "rating", "criterion": "quality", "left_variant": "once",
                 "participant": "p0", "prompt_id": "q0", "rating": 4})  # fmt: skip
    rows.append({"kind": "pair", "criterion": "quality", "left_variant": "a", "choice": "left"})
    responses = pd.DataFrame(rows)
    table = live_mos(responses, criterion="quality").set_index("variant")
    assert list(table.reset_index().columns) == MOS_COLUMNS
    report = mos_table(rating_trials(responses[responses["kind"] == "rating"]))
    report = report[report["criterion"] == "quality"].set_index("variant")
    for variant in ("a", "b"):
        assert table.loc[variant, "mos"] == pytest.approx(report.loc[variant, "mean"])
        assert table.loc[variant, "ci_low"] == pytest.approx(report.loc[variant, "ci_low"])
        assert table.loc[variant, "n"] == 15 and table.loc[variant, "participants"] == 5
    assert np.isnan(table.loc["once", "ci_low"]) and table.loc["once", "n"] == 1
    assert table.attrs["warnings"] == ["variants rated once have no interval yet"]
    empty = live_mos(responses[responses["kind"] == "pair"])
    assert empty.empty and empty.attrs["warnings"] == ["no rating trials answered yet"]
