"""Which variants differ: the pairwise significance matrix with multiplicity correction.

For every pair (i, j) the difference s_i - s_j is tested against 0 either with a Wald
z-test from a covariance matrix (Hessian or bootstrap: Var = c_ii + c_jj - 2 c_ij) or
directly from bootstrap draws (two-sided p = 2 * min(P*(diff <= 0), P*(diff >= 0)),
with the +1 correction of Davison & Hinkley 1997). The K(K-1)/2 p-values are corrected
together: Holm (1979) controls the family-wise error, Benjamini-Hochberg (1995) the false
discovery rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import norm

CORRECTIONS = ("holm", "bh", "bonferroni", "none")


def adjust_pvalues(p: np.ndarray, correction: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values (``holm``, ``bh``, ``bonferroni`` or ``none``).

    Holm: sorted ascending, p_(i) * (m - i + 1), made non-decreasing. BH: sorted
    ascending, p_(i) * m / i, made non-increasing from the largest. Written out rather
    than taken from statsmodels' ``multipletests``, which runs ``gc.collect()`` on every
    call (0.15 s here), too slow for the thousands of calls of a power simulation; the
    tests check both against hand-computed values and against statsmodels.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r} ({', '.join(CORRECTIONS)})")
    p = np.asarray(p, float)
    m = len(p)
    if correction == "none" or m == 0:
        return p.copy()
    if correction == "bonferroni":
        return np.minimum(1.0, p * m)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if correction == "holm":
        adjusted = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:
        adjusted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(1.0, adjusted)
    return out


def pairwise_tests(
    items: Sequence[str],
    estimate: np.ndarray,
    *,
    cov: np.ndarray | None = None,
    draws: np.ndarray | None = None,
    correction: str = "holm",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """One row per pair: difference, its SE, raw and adjusted p, and the verdict.

    Give ``cov`` for Wald tests, or ``draws`` (rounds x items) for bootstrap tests.
    """
    if (cov is None) == (draws is None):
        raise ValueError("give exactly one of cov (Wald) or draws (bootstrap)")
    estimate = np.asarray(estimate, float)
    pairs = list(combinations(range(len(items)), 2))
    i = np.array([a for a, _ in pairs], dtype=int)
    j = np.array([b for _, b in pairs], dtype=int)
    diff = estimate[i] - estimate[j]
    if cov is not None:
        var = cov[i, i] + cov[j, j] - 2 * cov[i, j]
        se = np.sqrt(np.clip(var, 0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(se > 0, diff / se, np.nan)
        p = 2 * norm.sf(np.abs(z))
        method = "wald"
    else:
        ok = draws[np.all(np.isfinite(draws), axis=1)]
        d = ok[:, i] - ok[:, j]
        se = d.std(axis=0, ddof=1)
        n = len(d)
        below = ((d <= 0).sum(axis=0) + 1) / (n + 1)
        above = ((d >= 0).sum(axis=0) + 1) / (n + 1)
        p = np.minimum(1.0, 2 * np.minimum(below, above))
        method = "bootstrap"
    p_adj = adjust_pvalues(np.nan_to_num(p, nan=1.0), correction)
    return pd.DataFrame(
        {
            "a": [items[k] for k in i],
            "b": [items[k] for k in j],
            "difference": diff,
            "se": se,
            "p": p,
            "p_adjusted": p_adj,
            "significant": p_adj < alpha,
            "test": method,
            "correction": correction,
        }
    )


def significance_matrix(tests: pd.DataFrame, items: Sequence[str]) -> pd.DataFrame:
    """Square matrix of adjusted p-values (diagonal NaN), for the report's heatmap."""
    m = pd.DataFrame(np.nan, index=list(items), columns=list(items))
    for row in tests.itertuples(index=False):
        m.loc[row.a, row.b] = m.loc[row.b, row.a] = row.p_adjusted
    return m
