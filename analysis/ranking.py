"""The answer first: per criterion, the variants in rank order with what a reader needs.

A reader of a compression study asks: which variant is best, how sure are we, and is the
compressed model distinguishable from the original? ``pair_ranking`` answers that from a
criterion's fitted scores and its multiplicity-corrected pairwise tests; ``mos_ranking``
from the mean opinion scores and the paper's perceived degradation. Both are small tables
(variant, score, 95% interval, rank range, n, verdict against the reference) meant to be
read; the full tables stay available as downloads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _interval(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return ""
    return f"[{low:+.2f}, {high:+.2f}]"


def _verdict(tests: pd.DataFrame, variant: str, reference: str) -> str:
    """What the corrected test of variant against reference says, in words."""
    if variant == reference:
        return "reference"
    row = tests[
        ((tests["a"] == variant) & (tests["b"] == reference))
        | ((tests["a"] == reference) & (tests["b"] == variant))
    ]
    if row.empty:
        return ""
    r = row.iloc[0]
    difference = r["difference"] if r["a"] == variant else -r["difference"]
    p = f"p_adj = {r['p_adjusted']:.3g}"
    if not r["significant"]:
        return f"indistinguishable ({p})"
    return f"{'better' if difference > 0 else 'worse'} ({p})"


def pair_ranking(scores: pd.DataFrame, tests: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Rank, variant, score, reported interval, rank range, n, verdict against ``reference``.

    ``scores`` is a criterion's full score table (sorted by rank), ``tests`` its pairwise
    tests; ``reference`` is the study's reference variant, else the top-ranked one.
    """
    rank_range = [
        f"{int(lo)}-{int(hi)}"
        if np.isfinite(lo) and lo != hi
        else (f"{int(lo)}" if np.isfinite(lo) else "")
        for lo, hi in zip(scores["rank_low"], scores["rank_high"], strict=True)
    ]
    return pd.DataFrame(
        {
            "rank": scores["rank"].to_numpy(),
            "variant": scores["variant"].to_numpy(),
            "score": scores["bt_score"].round(3).to_numpy(),
            "95% interval": [
                _interval(lo, hi)
                for lo, hi in zip(scores["ci_low"], scores["ci_high"], strict=True)
            ],
            "rank range": rank_range,
            "n": scores["n_comparisons"].to_numpy(),
            f"vs {reference}": [_verdict(tests, v, reference) for v in scores["variant"]],
            "note": scores["unreliable"].map(lambda t: f"unreliable: {t}" if t else "").to_numpy(),
        }
    )


def mos_ranking(
    mos: pd.DataFrame, degradation: pd.DataFrame | None, criterion: str
) -> pd.DataFrame:
    """Variants by MOS on one criterion, with interval and the perceived degradation."""
    part = mos[mos["criterion"] == criterion].sort_values("mean", ascending=False)
    has_boot = "boot_low" in part and part["boot_low"].notna().all()
    low = part["boot_low"] if has_boot else part["ci_low"]
    high = part["boot_high"] if has_boot else part["ci_high"]
    table = pd.DataFrame(
        {
            "rank": np.arange(1, len(part) + 1),
            "variant": part["variant"].to_numpy(),
            "MOS": part["mean"].round(3).to_numpy(),
            "95% interval": [_interval(a, b) for a, b in zip(low, high, strict=True)],
            "n": part["n"].to_numpy(),
        }
    )
    if degradation is not None and not degradation.empty:
        d = degradation[degradation["criterion"] == criterion].set_index("variant")
        table["perceived degradation"] = [
            f"{100 * d.loc[v, 'degradation']:.1f}%" if v in d.index else ""
            for v in table["variant"]
        ]
    return table
