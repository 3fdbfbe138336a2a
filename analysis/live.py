"""Bradley-Terry scores while a study is running, for the admin dashboard.

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

COLUMNS = ["variant", "score", "ci_low", "ci_high", "n_comparisons", "win_rate"]

#: Precision of the L2 prior used only while the MLE does not exist (prior SD ~3 logits).
LIVE_PRIOR = 0.1


def live_scores(
    responses: pd.DataFrame, *, criterion: str | None = None, level: float = 0.95
) -> pd.DataFrame:
    """One row per variant: sum-zero BT score, Hessian CI, comparisons and win rate.

    ``responses`` has the responses-export columns (only ``kind == "pair"`` rows with a
    choice are used). Pass ``criterion`` to score one criterion; otherwise all pair
    trials are pooled (and a warning says so when there are several criteria).
    ``attrs["warnings"]`` lists anything the numbers need read with.
    """
    warnings: list[str] = []
    if responses.empty:
        responses = pd.DataFrame(columns=["kind", "choice", "criterion"])
    pairs = responses[responses["kind"] == "pair"]
    pairs = pairs[pairs["choice"].notna()]
    if criterion is not None:
        pairs = pairs[pairs["criterion"] == criterion]
    elif "criterion" in pairs and pairs["criterion"].nunique() > 1:
        warnings.append(
            "criteria pooled: " + ", ".join(sorted(map(str, pairs["criterion"].unique())))
        )
    if pairs.empty:
        table = pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS})
        table["variant"] = table["variant"].astype(object)
        table.attrs["warnings"] = [*warnings, "no pair trials answered yet"]
        return table

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
