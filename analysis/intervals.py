"""Which interval a score gets, and when to say that it cannot be trusted.

Three rules keep the reported intervals honest:

- **Never narrower than the model's without saying so.** The cluster bootstrap is the
  default interval because it respects that one person's answers are correlated, and then it
  is usually wider than the Hessian (Wald) interval. Where it is narrower it has usually
  failed, not found extra precision: with a handful of comparisons the resampled counts take
  few values (a variant seen once, in a tie, has the same estimate in almost every round), and
  under an L2 prior every round is pulled to the same place. The reported interval is the
  bootstrap percentile interval widened to cover the Wald interval there, and the ``interval``
  column says which one sets each bound.
- **Few comparisons.** A Wald interval rests on the normal approximation of a binomial
  proportion (the variant's win rate), which the textbook rule accepts when there are at
  least 5 wins and 5 losses (n p >= 5 and n (1 - p) >= 5; e.g. Brown, Cai & DasGupta 2001,
  "Interval estimation for a binomial proportion", on how poorly it covers below that), and a
  percentile bootstrap needs as much. A variant with fewer than ``MIN_COMPARISONS`` = 10
  comparisons, or fewer than 5 wins or 5 losses (ties count half), is marked unreliable.
- **Sum-zero scores share their mean.** Every sum-zero score is s_i - mean(s), so one badly
  measured variant puts its variance, divided by K^2, into every other score and its
  covariance into them all; one tie of a new variant can triple every other standard error.
  ``sum_zero_inflation`` measures it against centring on the well-measured variants only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from analysis.comparisons import LEFT, RIGHT, TIE, PairedComparisons

#: Fewest comparisons of a variant for its interval to be called reliable.
MIN_COMPARISONS = 10
#: Fewest wins and fewest losses (normal approximation of a binomial: n p, n (1 - p) >= 5).
MIN_EACH_OUTCOME = 5


def comparison_counts(comparisons: PairedComparisons) -> pd.DataFrame:
    """Per item: comparisons n, wins and losses (ties half each)."""
    k = comparisons.n_items
    c = comparisons.counts
    left, right = comparisons.left, comparisons.right
    n = np.bincount(left, c.sum(1), k) + np.bincount(right, c.sum(1), k)
    wins = np.bincount(left, c[:, LEFT] + 0.5 * c[:, TIE], k) + np.bincount(
        right, c[:, RIGHT] + 0.5 * c[:, TIE], k
    )
    return pd.DataFrame(
        {"variant": list(comparisons.items), "n": n, "wins": wins, "losses": n - wins}
    )


def reliability(counts: pd.DataFrame) -> pd.Series:
    """Why each item's interval is unreliable ("" when it is not)."""
    notes = []
    for row in counts.itertuples(index=False):
        if row.n < MIN_COMPARISONS:
            notes.append(f"only {row.n:g} comparison(s)")
        elif min(row.wins, row.losses) < MIN_EACH_OUTCOME:
            notes.append(f"{row.wins:g} win(s), {row.losses:g} loss(es)")
        else:
            notes.append("")
    return pd.Series(notes, index=counts.index)


def reported_interval(
    wald_low: np.ndarray,
    wald_high: np.ndarray,
    boot_low: np.ndarray | None,
    boot_high: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The bootstrap interval, widened to the Wald interval where narrower (module docstring)."""
    if boot_low is None or boot_high is None or not np.isfinite(boot_low).any():
        return np.asarray(wald_low), np.asarray(wald_high), ["Wald"] * len(wald_low)
    low = np.minimum(boot_low, wald_low)
    high = np.maximum(boot_high, wald_high)
    basis = []
    for bl, bh, wl, wh in zip(boot_low, boot_high, wald_low, wald_high, strict=True):
        if not (np.isfinite(bl) and np.isfinite(bh)):
            basis.append("Wald (no bootstrap)")
        elif bl <= wl and bh >= wh:
            basis.append("bootstrap")
        elif bl > wl and bh < wh:
            basis.append("Wald (bootstrap narrower)")
        else:
            basis.append("bootstrap widened to Wald on one side")
    return low, high, basis


def sum_zero_inflation(cov: np.ndarray, weak: np.ndarray) -> float:
    """Median ratio of the other items' sum-zero SEs to their SEs when centred on the
    well-measured items only (1 = the weak items do not matter)."""
    weak = np.asarray(weak, bool)
    k = len(weak)
    if weak.all() or not weak.any() or k < 3:
        return 1.0
    centre_all = np.eye(k) - 1.0 / k
    weights = (~weak) / (~weak).sum()
    centre_good = np.eye(k) - weights[None, :]
    se_all = np.sqrt(np.clip(np.diag(centre_all @ cov @ centre_all.T), 0, None))[~weak]
    se_good = np.sqrt(np.clip(np.diag(centre_good @ cov @ centre_good.T), 0, None))[~weak]
    ok = se_good > 0
    return float(np.median(se_all[ok] / se_good[ok])) if ok.any() else 1.0


def mean_halfwidth(sd, n, level: float = 0.95):
    """Half the width of the Student t-interval of a mean: t_{(1+level)/2, n-1} sd / sqrt(n)
    (a sample of one gets the quantile at 1 degree of freedom and its NaN sd)."""
    n = np.asarray(n, dtype=float)
    return student_t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * np.asarray(sd) / np.sqrt(n)
