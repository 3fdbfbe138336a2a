"""Thurstone Case V scaling in JOD units (just-objectionable differences).

Thurstone (1927), Case V: each stimulus' perceived quality is normal with a common
variance, so item i shown left beats item j with

    P(left wins) = Phi(z75 * d),  d = m_i - m_j (+ gamma),  z75 = Phi^-1(0.75) = 0.6745,

and the scale is chosen so that a difference of 1 JOD means 75% preference
(Perez-Ortiz & Mantiuk 2017, "A practical guide and software for analysing pairwise
comparison experiments", arXiv:1712.03686). Ties count half to each side, or are dropped.

Closed form, two items: k wins of n gives d = Phi^-1(k/n) / z75, with delta-method
standard error sqrt(p (1 - p) / n) / (z75 * phi(Phi^-1(p))), p = k/n.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.special import log_ndtr
from scipy.stats import norm

from analysis.comparisons import PairedComparisons, check_estimable
from analysis.estimation import BinaryLink, LinkTerms, PairedFit, PairedModel
from hprune.errors import UserError

#: Probit slope that makes one unit of score one JOD (Phi(Z75) = 0.75).
Z75 = float(norm.ppf(0.75))
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def _mills(x: np.ndarray) -> np.ndarray:
    """phi(x) / Phi(x), computed in logs so that it stays finite far in the left tail."""
    return np.exp(-0.5 * x * x - _LOG_SQRT_2PI - log_ndtr(x))


class ProbitJODLink(BinaryLink):
    """Thurstone Case V on the JOD scale."""

    name = "thurstone"

    def __call__(self, d: np.ndarray, counts: np.ndarray, extra: np.ndarray) -> LinkTerms:
        n_left, n_right = self.decided(counts)
        x = Z75 * d
        lam_left, lam_right = _mills(x), _mills(-x)
        nll = -float(n_left @ log_ndtr(x) + n_right @ log_ndtr(-x))
        g_d = Z75 * (n_right * lam_right - n_left * lam_left)
        h_d = Z75**2 * (n_left * lam_left * (x + lam_left) + n_right * lam_right * (lam_right - x))
        return LinkTerms(nll=nll, g_d=g_d, h_d=h_d)


def thurstone_model(
    comparisons: PairedComparisons,
    *,
    ties: Literal["half", "drop"] = "half",
    position: bool = False,
    prior: float = 0.0,
    reference: str | None = None,
) -> PairedModel:
    """The Thurstone Case V model of these rows, checked for an existing, finite MLE."""
    if ties not in ("half", "drop"):
        raise ValueError(f"Thurstone scaling splits ties ('half') or drops them, not {ties!r}")
    check_estimable(comparisons, prior=prior, ties_link=ties == "half")
    if reference is not None and reference not in comparisons.items:
        raise UserError(f"reference variant {reference!r} does not occur in the pair trials")
    return PairedModel(
        comparisons,
        ProbitJODLink(ties),
        position=position,
        prior=prior,
        reference=reference,
        scale="JOD",
    )


def fit_thurstone(
    comparisons: PairedComparisons,
    *,
    ties: Literal["half", "drop"] = "half",
    position: bool = False,
    prior: float = 0.0,
    reference: str | None = None,
) -> PairedFit:
    """Maximum-likelihood Thurstone Case V scores in JOD, with Hessian standard errors."""
    return thurstone_model(
        comparisons, ties=ties, position=position, prior=prior, reference=reference
    ).fit()


def jod_to_probability(difference: float | np.ndarray) -> float | np.ndarray:
    """Preference probability of a JOD difference (1 JOD -> 0.75)."""
    return norm.cdf(Z75 * np.asarray(difference))
