"""Bradley-Terry scores and mean opinion scores while a study is running, for the admin
dashboard.

Called on every dashboard refresh with the responses answered so far, so it must be
fast (a few ms for 10k trials: the fit runs on unique pairs) and must never fail on a
study that is merely young. Where the maximum-likelihood scores do not exist yet (a
variant won every comparison so far) the scores are shown under a weak, explicit L2
prior and the table says so in ``attrs["warnings"]``; where the design is still
disconnected the scores are NaN, because no number would be honest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from analysis.bradley_terry import fit_bradley_terry
from analysis.comparisons import LEFT, RIGHT, TIE, beats_components, components, from_pairs
from analysis.intervals import mean_halfwidth

COLUMNS = ["variant", "score", "ci_low", "ci_high", "n_comparisons", "win_rate"]

#: Precision of the L2 prior used only while the MLE does not exist (prior SD ~3 logits).
LIVE_PRIOR = 0.1


def _answered(
    responses: pd.DataFrame, kind: str, answer: str, criterion: str | None
) -> tuple[pd.DataFrame, list[str]]:
    """The answered trials of ``kind`` (``answer`` set) for ``criterion`` (all if None, with a
    warning when that pools several), and the warnings."""
    if responses.empty:
        responses = pd.DataFrame(columns=["kind", answer, "criterion"])
    rows = responses[(responses["kind"] == kind) & responses[answer].notna()]
    warnings = []
    if criterion is not None:
        rows = rows[rows["criterion"] == criterion]
    elif "criterion" in rows and rows["criterion"].nunique() > 1:
        warnings.append(
            "criteria pooled: " + ", ".join(sorted(map(str, rows["criterion"].unique())))
        )
    return rows, warnings


def _empty(columns: list[str], warnings: list[str]) -> pd.DataFrame:
    table = pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    table["variant"] = table["variant"].astype(object)
    table.attrs["warnings"] = warnings
    return table


def live_scores(
    responses: pd.DataFrame, *, criterion: str | None = None, level: float = 0.95
) -> pd.DataFrame:
    """One row per variant: sum-zero BT score, Hessian CI, comparisons and win rate.

    ``responses`` has the responses-export columns (only ``kind == "pair"`` rows with a
    choice are used). Pass ``criterion`` to score one criterion; otherwise all pair
    trials are pooled (and a warning says so when there are several criteria).
    ``attrs["warnings"]`` lists anything the numbers need read with.
    """
    pairs, warnings = _answered(responses, "pair", "choice", criterion)
    if pairs.empty:
        return _empty(COLUMNS, [*warnings, "no pair trials answered yet"])

    comparisons, _, _ = from_pairs(pairs)
    c = comparisons.counts
    n_per_item = np.bincount(comparisons.left, c.sum(1), comparisons.n_items) + np.bincount(
        comparisons.right, c.sum(1), comparisons.n_items
    )
    wins = np.bincount(
        comparisons.left, c[:, LEFT] + 0.5 * c[:, TIE], comparisons.n_items
    ) + np.bincount(comparisons.right, c[:, RIGHT] + 0.5 * c[:, TIE], comparisons.n_items)
    table = pd.DataFrame(
        {
            "variant": list(comparisons.items),
            "score": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "n_comparisons": n_per_item.astype(int),
            "win_rate": wins / np.maximum(n_per_item, 1),
        }
    )
    groups = components(comparisons)
    if comparisons.n_items < 2:
        warnings.append("only one variant has been compared so far")
    elif len(groups) > 1:
        warnings.append(
            f"design not connected yet ({len(groups)} groups never compared with each other): "
            "no scores"
        )
    elif c[:, LEFT].sum() + c[:, RIGHT].sum() <= 0:
        warnings.append("every answer so far is a tie: no scores")
    else:
        prior = 0.0
        if len(beats_components(comparisons)) > 1:
            prior = LIVE_PRIOR
            warnings.append(
                "some variant won or lost every comparison so far: scores shown with a weak "
                f"L2 prior ({LIVE_PRIOR}) because maximum likelihood has no finite answer yet"
            )
        fit = fit_bradley_terry(comparisons, prior=prior)
        z = norm.ppf(0.5 + level / 2)
        se = fit.se[: fit.n_items]
        table["score"] = fit.scores
        table["ci_low"] = fit.scores - z * se
        table["ci_high"] = fit.scores + z * se
    table.attrs["warnings"] = warnings
    return table


MOS_COLUMNS = ["variant", "mos", "ci_low", "ci_high", "n", "participants"]


def live_mos(
    responses: pd.DataFrame, *, criterion: str | None = None, level: float = 0.95
) -> pd.DataFrame:
    """One row per rated variant: mean opinion score, its t-interval, ratings and raters.

    ``responses`` has the responses-export columns (only ``kind == "rating"`` rows with a
    rating are used). The interval is the t-interval of the mean over ratings, as the paper
    prints it and ``analysis.mos.mos_table`` computes it; it treats one person's ratings as
    independent, so it is narrower than the report's participant-cluster bootstrap. A
    variant rated once has no interval. ``attrs["warnings"]`` lists anything the numbers
    need read with.
    """
    ratings, warnings = _answered(responses, "rating", "rating", criterion)
    if ratings.empty:
        return _empty(MOS_COLUMNS, [*warnings, "no rating trials answered yet"])
    by_variant = ratings.assign(rating=ratings["rating"].astype(float)).groupby(
        ratings["left_variant"].astype(str), sort=True
    )
    table = by_variant["rating"].agg(mos="mean", sd="std", n="count")
    table["participants"] = by_variant["participant"].nunique()
    halfwidth = mean_halfwidth(table["sd"], table["n"], level)
    table["ci_low"], table["ci_high"] = table["mos"] - halfwidth, table["mos"] + halfwidth
    table = table.rename_axis("variant").reset_index()[MOS_COLUMNS]
    if (table["n"] < 2).any():
        warnings.append("variants rated once have no interval yet")
    table.attrs["warnings"] = warnings
    return table
