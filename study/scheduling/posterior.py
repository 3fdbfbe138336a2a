"""A Gaussian posterior over Thurstone Case V scores, and the information a comparison would add.

Model: variant i beats j with probability ``Phi((s_i - s_j) / noise_sd)``; with
``noise_sd = 1 / Phi^-1(0.75)`` the scores are in JOD units (1 JOD = 75% preference). Prior:
``s ~ N(0, prior_sd^2 I)``, which also fixes the scale's origin.

The posterior is a Laplace approximation: the MAP by Newton's method on the (log-concave)
log-posterior of the aggregated win counts, and the inverse negative Hessian there as the
covariance. This differs from ASAP (Mikhailiuk, Wilmot, Perez-Ortiz, Yue, Mantiuk 2020), which
runs expectation propagation on a TrueSkill factor graph over every single comparison and keeps
only independent marginals: with a few tens of variants the full covariance is a tiny matrix, so
we keep it (correlations between scores matter for which pair is informative) and refit from the
win matrix, which the caller can cache on its hash.

The information gain of comparing i and j is ASAP's: the expected KL divergence between the
posterior after the answer and the posterior before it. A single probit comparison only informs
the difference ``d = s_i - s_j``, and the Gaussian conditional of the other directions given d is
unchanged, so the KL of the full posterior equals the KL of d's marginal. We update d's marginal
``N(m, v)`` by exact moment matching (the TrueSkill/EP update ASAP uses, but with ``v`` taken from
the full covariance rather than from two independent marginals), which is closed form and
vectorises over all candidate pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, ndtr, ndtri

#: Observer noise that makes one score unit a JOD: Phi(1 / JOD_NOISE_SD) = 0.75.
JOD_NOISE_SD = float(1.0 / ndtri(0.75))

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


@dataclass(frozen=True)
class GaussianPosterior:
    """``N(mean, cov)`` over the variants' scores, plus the precision it came from."""

    mean: np.ndarray
    cov: np.ndarray
    precision: np.ndarray


def inverse_mills(z: np.ndarray) -> np.ndarray:
    """``phi(z) / Phi(z)``, computed in logs so that it stays finite far in the lower tail."""
    return np.exp(-0.5 * z * z - _LOG_SQRT_2PI - log_ndtr(z))


def _probit_curvature(x: np.ndarray) -> np.ndarray:
    """``-d^2/dx^2 log Phi(x) = lambda(x) (x + lambda(x))``, in (0, 1)."""
    lam = inverse_mills(x)
    return lam * (x + lam)


def _laplacian(weights: np.ndarray) -> np.ndarray:
    """Graph Laplacian of a symmetric non-negative weight matrix."""
    return np.diag(weights.sum(axis=1)) - weights


def thurstone_posterior(
    wins: np.ndarray,
    *,
    prior_sd: float = 2.0,
    noise_sd: float = JOD_NOISE_SD,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> GaussianPosterior:
    """Laplace approximation of the posterior of Thurstone Case V scores given a win matrix.

    ``wins[i, j]`` is the (possibly fractional, for ties) number of times i beat j. Newton's
    method with step halving on ``sum_ij wins_ij log Phi((s_i - s_j)/noise_sd) - |s|^2 /
    (2 prior_sd^2)``; the negative Hessian is ``Laplacian(A) + I / prior_sd^2`` with
    ``A_ij = (w_ij h(D_ij) + w_ji h(D_ji)) / noise_sd^2`` and ``h = -(log Phi)''``.
    """
    wins = np.asarray(wins, dtype=float)
    n = wins.shape[0]
    prior_precision = 1.0 / prior_sd**2

    def objective(s: np.ndarray) -> float:
        diff = (s[:, None] - s[None, :]) / noise_sd
        return float((wins * log_ndtr(diff)).sum() - 0.5 * prior_precision * s @ s)

    def neg_hessian(diff: np.ndarray) -> np.ndarray:
        curvature = wins * _probit_curvature(diff)
        return _laplacian(curvature + curvature.T) / noise_sd**2 + prior_precision * np.eye(n)

    scores = np.zeros(n)
    value = objective(scores)
    for _ in range(max_iter):
        diff = (scores[:, None] - scores[None, :]) / noise_sd
        flow = wins * inverse_mills(diff)
        gradient = (flow.sum(axis=1) - flow.sum(axis=0)) / noise_sd - prior_precision * scores
        step = np.linalg.solve(neg_hessian(diff), gradient)
        size = 1.0
        while True:
            candidate = scores + size * step
            candidate_value = objective(candidate)
            if candidate_value >= value - 1e-12 or size < 1e-6:
                break
            size /= 2
        scores, value = candidate, candidate_value
        if np.max(np.abs(size * step)) < tol:
            break
    precision = neg_hessian((scores[:, None] - scores[None, :]) / noise_sd)
    return GaussianPosterior(scores, np.linalg.inv(precision), precision)


def with_pending(
    posterior: GaussianPosterior, pending: np.ndarray, *, noise_sd: float = JOD_NOISE_SD
) -> GaussianPosterior:
    """The posterior once comparisons whose answers are still out are in: same mean, less spread.

    ``pending`` is symmetric: ``pending[i, j]`` comparisons of i and j are out. Each adds its expected Laplace curvature (over both answers,
    weighted by their predictive probability at the current mean) to the precision. Used so that
    participants assigned at the same moment do not all receive the same most-informative pair.
    """
    pending = np.asarray(pending, dtype=float)
    if not pending.any():
        return posterior
    diff = (posterior.mean[:, None] - posterior.mean[None, :]) / noise_sd
    p = ndtr(diff)
    expected = p * _probit_curvature(diff) + (1 - p) * _probit_curvature(-diff)
    weights = np.triu(pending, 1) * np.triu(expected, 1)
    precision = posterior.precision + _laplacian(weights + weights.T) / noise_sd**2
    return GaussianPosterior(posterior.mean, np.linalg.inv(precision), precision)


def _gaussian_kl(m1: np.ndarray, v1: np.ndarray, m0: np.ndarray, v0: np.ndarray) -> np.ndarray:
    """``KL(N(m1, v1) || N(m0, v0))`` elementwise."""
    return 0.5 * (v1 / v0 + (m1 - m0) ** 2 / v0 - 1.0 + np.log(v0 / v1))


def information_gain(
    posterior: GaussianPosterior,
    first: np.ndarray,
    second: np.ndarray,
    *,
    noise_sd: float = JOD_NOISE_SD,
) -> np.ndarray:
    """Expected KL(after || before) of comparing ``first[k]`` with ``second[k]``, for each k (nats).

    For ``d = s_i - s_j ~ N(m, v)``, ``c = sqrt(noise_sd^2 + v)``, ``z = m / c``: "i wins" has
    probability ``Phi(z)`` and moves d to mean ``m + v lambda(z) / c``, variance
    ``v - v^2 lambda(z) (z + lambda(z)) / c^2`` (``lambda = phi / Phi``); "j wins" mirrors it.
    """
    mean, cov = posterior.mean, posterior.cov
    m = mean[first] - mean[second]
    v = cov[first, first] + cov[second, second] - 2.0 * cov[first, second]
    v = np.maximum(v, 1e-12)
    c = np.sqrt(noise_sd**2 + v)
    z = m / c
    gain = np.zeros_like(m)
    for sign in (1.0, -1.0):
        zs = sign * z
        lam = inverse_mills(zs)
        m_after = m + sign * v * lam / c
        v_after = np.maximum(v - v * v * lam * (zs + lam) / c**2, 1e-300)
        gain += ndtr(zs) * _gaussian_kl(m_after, v_after, m, v)
    return gain
