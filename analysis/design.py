"""Checks of a comparison design that come before any fit: can the position effect be told
apart from the scores?

The position effect gamma enters every row as ``d_u = s_left - s_right + gamma``. Within one
unordered pair {a, b}, shown both ways round, the two orders give ``s_a - s_b + gamma`` and
``s_b - s_a + gamma``: their sum identifies gamma. If every pair is always shown in the same
order, the column of ones of gamma can be written as a combination of score differences
(e.g. with pairs (b, a) and (c, b) always in that order, s' = s + gamma * (0, 1, 2) fits
exactly as well), so the scores and gamma are confounded: the likelihood has a flat ridge,
Newton "converges" anywhere on it and the standard errors explode.

The answers can make gamma unbounded too (Albert & Anderson 1984, "On the existence of
maximum likelihood estimates in logistic regression models"): when the left image won
every decided trial, a larger gamma always fits better. In general the maximum-likelihood
gamma is infinite when some direction (delta_s, delta_gamma = +-1) raises d_u for every
left win and lowers it for every right win; these are difference constraints
``delta_s_right - delta_s_left <= delta_gamma`` (a left win) and ``delta_s_left - delta_s_right
<= -delta_gamma`` (a right win), a tie or a pair won both ways imposing both, and they are
satisfiable exactly when their constraint graph has no negative cycle (Bellman-Ford).

Exact confounding is a rank question; near-confounding (one pair reversed twice in 200
trials) is as harmful in practice. Both are measured by the variance inflation factor of
gamma in the information matrix at equal scores (weights = trial counts):

    VIF = (1' W 1) / RSS_W,

RSS_W the weighted residual sum of squares of regressing the ones column on the score
differences. VIF = 1 for a counterbalanced design; VIF = inf when confounded. The position
term is kept when VIF <= 10, the conventional limit for collinearity (Kutner, Nachtsheim,
Neter & Li 2005, "Applied Linear Statistical Models", 5th ed., section 10.5): beyond it the
standard error of gamma is more than sqrt(10) = 3.2 times what counterbalancing would give,
and the scores share that uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.comparisons import PairedComparisons
from hprune.errors import UserError

#: Largest variance inflation of the position effect at which it is still fitted.
MAX_POSITION_VIF = 10.0


@dataclass(frozen=True)
class PositionCheck:
    """Whether the position effect is estimable, and the pairs that make it hard."""

    vif: float  # variance inflation of gamma (inf: confounded with the scores)
    unbounded: str  # "": gamma has a finite MLE; else "left" or "right" (the side it runs to)
    one_order: tuple[tuple[str, str, int], ...]  # (left, right, trials): pairs never reversed
    one_side: tuple[tuple[str, str, str, int], ...]  # (a, b, side, answers): all to one side

    @property
    def estimable(self) -> bool:
        return bool(np.isfinite(self.vif) and self.vif <= MAX_POSITION_VIF and not self.unbounded)

    def describe(self, limit: int = 4) -> str:
        """One line: why the position effect cannot be fitted, naming the pairs."""
        parts = []
        if not np.isfinite(self.vif) or self.vif > MAX_POSITION_VIF:
            shown = [f"{a} always left of {b} ({n} trials)" for a, b, n in self.one_order[:limit]]
            more = len(self.one_order) - limit
            head = (
                "the sides are confounded with the scores"
                if not np.isfinite(self.vif)
                else f"the sides are nearly confounded with the scores (VIF {self.vif:.0f} > "
                f"{MAX_POSITION_VIF:g})"
            )
            parts.append(
                f"{head}: {len(self.one_order)} pair(s) shown in one order only"
                + (": " + "; ".join(shown) if shown else "")
                + (f"; and {more} more" if more > 0 else "")
            )
        if self.unbounded:
            shown = [
                f"{a} vs {b}: all {n} to the {side}" for a, b, side, n in self.one_side[:limit]
            ]
            more = len(self.one_side) - limit
            parts.append(
                f"the answers push the position effect to infinity (towards the {self.unbounded})"
                + (": " + "; ".join(shown) if shown else "")
                + (f"; and {more} more pairs" if more > 0 else "")
            )
        return "; ".join(parts) if parts else f"estimable (VIF {self.vif:.1f})"


def _has_negative_cycle(k: int, src: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> bool:
    """Bellman-Ford from a virtual source joined to every node (k rounds of relaxation)."""
    dist = np.zeros(k)
    for _ in range(k + 1):
        relaxed = dist.copy()
        np.minimum.at(relaxed, dst, dist[src] + weight)
        if np.array_equal(relaxed, dist):
            return False
        dist = relaxed
    return True


def position_unbounded(comparisons: PairedComparisons, *, ties_count: bool = True) -> str:
    """ "left"/"right" when the answers leave the ML position effect infinite, else "".

    ``ties_count``: ties tie the two sides together (Davidson, or split half and half);
    with ties dropped they constrain nothing.
    """
    c = comparisons.counts
    left, right = comparisons.left, comparisons.right
    won_left = c[:, 0] > 0
    won_right = c[:, 1] > 0
    if ties_count:
        won_left = won_left | (c[:, 2] > 0)
        won_right = won_right | (c[:, 2] > 0)
    for g, side in ((1.0, "left"), (-1.0, "right")):
        src = np.concatenate([left[won_left], right[won_right]])
        dst = np.concatenate([right[won_left], left[won_right]])
        weight = np.concatenate([np.full(won_left.sum(), g), np.full(won_right.sum(), -g)])
        if not _has_negative_cycle(comparisons.n_items, src, dst, weight):
            return side
    return ""


def position_check(comparisons: PairedComparisons, *, ties_count: bool = True) -> PositionCheck:
    """The variance inflation and the boundedness of the position effect (module docstring)."""
    k = comparisons.n_items
    n = comparisons.counts.sum(axis=1)
    used = n > 0
    left, right, w = comparisons.left[used], comparisons.right[used], n[used]
    design = np.zeros((len(w), k))
    rows = np.arange(len(w))
    design[rows, left] = 1.0
    design[rows, right] = -1.0
    root = np.sqrt(w)
    ones = root.copy()
    coef, *_ = np.linalg.lstsq(design[:, 1:] * root[:, None], ones, rcond=None)
    residual = ones - (design[:, 1:] * root[:, None]) @ coef
    rss = float(residual @ residual)
    total = float(w.sum())
    vif = np.inf if rss <= 1e-9 * total else total / rss
    seen: dict[tuple[int, int], float] = {}
    for a, b, count in zip(left, right, w, strict=True):
        seen[(int(a), int(b))] = seen.get((int(a), int(b)), 0.0) + float(count)
    items = comparisons.items
    one_order = tuple(
        sorted(
            (
                (items[a], items[b], int(count))
                for (a, b), count in seen.items()
                if (b, a) not in seen
            ),
            key=lambda t: (-t[2], t[0], t[1]),
        )
    )
    c = comparisons.counts
    sides: dict[tuple[int, int], np.ndarray] = {}
    for a, b, row in zip(comparisons.left, comparisons.right, c, strict=True):
        key, chose = (min(a, b), max(a, b)), row[:2]  # (left chosen, right chosen)
        sides[key] = sides.get(key, np.zeros(2)) + chose
    one_side = tuple(
        sorted(
            (
                (items[a], items[b], "left" if lr[1] == 0 else "right", int(lr.sum()))
                for (a, b), lr in sides.items()
                if lr.sum() > 0 and min(lr) == 0
            ),
            key=lambda t: (-t[3], t[0], t[1]),
        )
    )
    unbounded = position_unbounded(comparisons, ties_count=ties_count)
    return PositionCheck(vif, unbounded, one_order, one_side)


def resolve_position(
    comparisons: PairedComparisons,
    requested: bool | None,
    *,
    sides: bool = True,
    ties_count: bool = True,
) -> tuple[bool, str]:
    """Whether to fit the position effect, and why not when it was wanted.

    ``requested``: True (asked for explicitly: refuse with a UserError when it cannot be
    fitted), False (never), None (automatic: fit it when the data record screen sides and
    the design and answers identify it; otherwise leave it out and say why).
    """
    if requested is False:
        return False, ""
    if not sides:
        if requested:
            raise UserError(
                "the responses record no screen sides (e.g. a pwcmp A/B file), so a left/right "
                "position effect cannot be fitted; leave out --position"
            )
        return False, ""
    check = position_check(comparisons, ties_count=ties_count)
    if check.estimable:
        return True, ""
    if requested:
        raise UserError(
            f"the position effect cannot be estimated: {check.describe()}. Counterbalance the "
            "sides or analyse with --no-position"
        )
    return False, check.describe()
