"""Maximum likelihood for paired-comparison models on count-weighted unique rows.

Every pairwise model here (Bradley-Terry, Davidson ties, Thurstone Case V) has the same
shape: a row u compares item ``left[u]`` with item ``right[u]`` through the linear
predictor

    d_u = s_left - s_right (+ gamma, the left/right position effect, when modelled)

and a *link* turns d_u (and, for Davidson, a tie parameter tau) into the probabilities
of the three outcomes. The negative log-likelihood is a sum over unique rows weighted by
outcome counts, so with the sparse design matrix X (d = X theta) the gradient is
``X^T g_d`` and the Hessian ``X^T diag(h_d) X`` (Fisher scoring is exact here since the
links are canonical or log-concave).

Identification: the likelihood only sees differences of scores. Without a prior one
item (the reference, else the first) is fixed at 0 during the fit; with an explicit L2
prior ``(prior / 2) * sum(s^2)`` every score is free and the optimum is sum-zero by
itself. The result is then reported either sum-zero or relative to a reference item,
with the covariance carried through the same linear map (Hessian standard errors).

Bias reduction (Firth 1993, "Bias reduction of maximum likelihood estimates", Biometrika 80:
27-38): for the logit link the penalised likelihood l(theta) + (1/2) log |I(theta)| has the
modified score U*_r = sum_u (y_u - n_u p_u + h_u (1/2 - p_u)) x_ur, h_u = w_u x_u' I^-1 x_u
the leverage of row u and w_u = n_u p_u (1 - p_u) (Heinze & Schemper 2002). It removes the
O(1/n) bias of the MLE and is finite even where a variant won every comparison; it is what
R's BradleyTerry2 fits with ``br = TRUE`` (through brglm). Solved by Fisher scoring on the
modified score (Kosmidis & Firth 2010); its covariance is I^-1 at the estimate, as brglm's.
Firth's estimate is equivariant under linear reparametrisation, so pinning a reference
item and reporting sum-zero afterwards gives the same differences.

The optimiser is L-BFGS with the analytic gradient, followed by a few Newton steps with
the Hessian that the standard errors need anyway, which take the optimum to machine
precision. A bootstrap round starts from the full-data optimum and goes straight to
Newton (it is already in the quadratic basin), falling back to L-BFGS if that fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.linalg as sla
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import norm
from threadpoolctl import ThreadpoolController

from analysis.comparisons import LEFT, RIGHT, TIE, PairedComparisons

Objective = Callable[[np.ndarray, bool], tuple[float, np.ndarray, np.ndarray | None]]


@dataclass
class LinkTerms:
    """Per-row pieces of the negative log-likelihood of one link."""

    nll: float
    g_d: np.ndarray  # d nll / d d_u
    h_d: np.ndarray  # d2 nll / d d_u^2
    g_e: np.ndarray = field(default_factory=lambda: np.zeros(0))  # d nll / d extra (summed)
    h_de: np.ndarray | None = None  # (U, E) d2 nll / d d_u d extra
    h_ee: np.ndarray | None = None  # (E, E) summed


class Link(Protocol):
    """The outcome model of one paired comparison, given the predictor d."""

    name: str
    extra_names: tuple[str, ...]
    ties_link: bool  # whether a tie links both items in the "beats" graph

    def __call__(self, d: np.ndarray, counts: np.ndarray, extra: np.ndarray) -> LinkTerms: ...

    def initial_extra(self, counts: np.ndarray) -> np.ndarray: ...


class BinaryLink:
    """Base of the links with two outcomes: ties split half and half ("half") or dropped."""

    name = "binary"
    extra_names: tuple[str, ...] = ()

    def __init__(self, ties: str = "half") -> None:
        if ties not in ("half", "drop"):
            raise ValueError(f"a two-outcome link splits ties ('half') or drops them, not {ties!r}")
        self.tie_share = 0.5 if ties == "half" else 0.0
        self.ties_link = ties == "half"

    def decided(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) win counts with the ties' share added to both."""
        tie = self.tie_share * counts[:, TIE]
        return counts[:, LEFT] + tie, counts[:, RIGHT] + tie

    def initial_extra(self, counts: np.ndarray) -> np.ndarray:
        return np.zeros(0)


# --------------------------------------------------------------------------- optimiser


@dataclass
class Optimum:
    x: np.ndarray
    nll: float
    hessian: np.ndarray
    converged: bool
    iterations: int


def _newton(objective: Objective, x: np.ndarray, *, max_iter: int = 30) -> Optimum | None:
    """Damped Newton steps; None when the Hessian is not positive definite or no descent."""
    f, g, h = objective(x, True)
    for it in range(max_iter + 1):
        try:
            chol = np.linalg.cholesky(h)  # also the positive-definiteness test
        except np.linalg.LinAlgError:
            return None
        step = -np.linalg.solve(chol.T, np.linalg.solve(chol, g))
        decrement = -float(g @ step)
        if not np.isfinite(decrement):
            return None
        if decrement <= 1e-15 * max(1.0, abs(f)) or np.max(np.abs(step)) < 1e-11:
            # In the quadratic basin the last Newton step is the exact remaining correction.
            x = x + step
            f, _, h = objective(x, True)
            return Optimum(x, f, h, True, it)
        if it == max_iter:
            break
        # Near the optimum f changes below its rounding error: take the full step then.
        quadratic = decrement < 1e-6 * max(1.0, abs(f))
        slack = 1e-12 * max(1.0, abs(f)) if quadratic else 0.0
        t = 1.0
        while True:
            x_new = x + t * step
            f_new, g_new, h_new = objective(x_new, True)
            if np.isfinite(f_new) and f_new <= f - 1e-4 * t * decrement + slack:
                break
            t *= 0.5
            if t < 1e-10:
                # At machine precision no step decreases f any more: we are there.
                return Optimum(x, f, h, decrement < 1e-8 * max(1.0, abs(f)), it)
        x, f, g, h = x_new, f_new, g_new, h_new
    return None


_BLAS: ThreadpoolController | None = None


def _single_threaded_blas():
    """BLAS limited to one thread while a model is fitted.

    scipy's L-BFGS-B makes many tiny BLAS calls, and Newton factorises a small Hessian;
    with a multi-threaded OpenBLAS each call wakes the thread pool, which on a busy 2-core
    machine made a 10-parameter fit 200x slower (140 ms instead of 0.7 ms) and a 200x200
    Cholesky 0.4 s. Matrices of this size never profit from threads.
    """
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def fit_ml(objective: Objective, x0: np.ndarray, *, newton_first: bool = False) -> Optimum:
    """Minimise a smooth convex negative log-likelihood: L-BFGS, then Newton polish."""
    with _single_threaded_blas():
        return _fit_ml(objective, x0, newton_first=newton_first)


def _fit_ml(objective: Objective, x0: np.ndarray, *, newton_first: bool) -> Optimum:
    if newton_first:
        optimum = _newton(objective, np.asarray(x0, float), max_iter=12)
        if optimum is not None and optimum.converged:
            return optimum
    result = minimize(
        lambda x: objective(x, False)[:2],
        np.asarray(x0, float),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 5000, "gtol": 1e-9, "ftol": 1e-15, "maxcor": 20},
    )
    optimum = _newton(objective, result.x)
    if optimum is None:  # Hessian not positive definite: report L-BFGS's answer honestly
        f, _, h = objective(result.x, True)
        return Optimum(result.x, f, h, bool(result.success), int(result.nit))
    optimum.iterations += int(result.nit)
    return optimum


# ------------------------------------------------------------------- paired model


@dataclass(frozen=True)
class PairedFit:
    """A fitted paired-comparison model, identified sum-zero or against a reference.

    ``params`` holds the item scores first, then the position effect (if modelled),
    then the link's extra parameters; ``cov`` is their covariance from the Hessian.
    """

    model: str
    items: tuple[str, ...]
    param_names: tuple[str, ...]
    params: np.ndarray
    cov: np.ndarray
    loglik: float
    n_comparisons: float
    identification: str  # "sum-zero" or "reference:<item>"
    prior: float
    converged: bool
    iterations: int
    scale: str = "logit"  # what one unit of score means ("logit" or "JOD")

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def scores(self) -> np.ndarray:
        return self.params[: self.n_items]

    @property
    def score_cov(self) -> np.ndarray:
        return self.cov[: self.n_items, : self.n_items]

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov), 0, None))

    def param(self, name: str) -> tuple[float, float]:
        """(estimate, standard error) of a named parameter, e.g. ``"position"``."""
        i = self.param_names.index(name)
        return float(self.params[i]), float(self.se[i])

    def has_param(self, name: str) -> bool:
        return name in self.param_names

    def wald_interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Normal-approximation intervals for every parameter from the Hessian."""
        z = norm.ppf(0.5 + level / 2)
        return self.params - z * self.se, self.params + z * self.se

    def to_frame(self, level: float = 0.95) -> pd.DataFrame:
        """One row per item: score, Hessian SE and Wald interval."""
        low, high = self.wald_interval(level)
        k = self.n_items
        return pd.DataFrame(
            {
                "variant": list(self.items),
                "score": self.scores,
                "se": self.se[:k],
                "ci_low": low[:k],
                "ci_high": high[:k],
            }
        )


class PairedModel:
    """Design, identification and objective of one paired model on fixed unique rows.

    The rows (who met whom, on which side) are fixed at construction; ``fit`` takes
    any counts on those rows, so a bootstrap round or a leave-one-out refit reuses the
    design matrix.
    """

    def __init__(
        self,
        comparisons: PairedComparisons,
        link: Link,
        *,
        position: bool = False,
        prior: float = 0.0,
        reference: str | None = None,
        scale: str = "logit",
        bias_reduction: bool = False,
    ) -> None:
        if prior < 0:
            raise ValueError("prior must be >= 0")
        if bias_reduction and (link.extra_names or link.name != "bradley-terry"):
            raise ValueError("bias reduction is implemented for the logit link without ties")
        self.bias_reduction = bias_reduction
        self.comparisons = comparisons
        self.link = link
        self.position = position
        self.prior = float(prior)
        self.scale = scale
        k = comparisons.n_items
        self.n_items = k
        self.reference = None if reference is None else comparisons.items.index(reference)
        self.param_names = (
            tuple(comparisons.items) + (("position",) if position else ()) + link.extra_names
        )
        n_linear = k + int(position)
        self.n_params = n_linear + len(link.extra_names)
        # Free parameters: all but one pinned score (no prior) or all (prior).
        pinned = None if prior > 0 else (self.reference if self.reference is not None else 0)
        self.free = np.array([i != pinned for i in range(self.n_params)])
        self._n_linear = n_linear
        left, right = comparisons.left, comparisons.right
        # Flat indices of the four Hessian entries each row touches: (l,l), (r,r), (l,r), (r,l).
        self._hess_index = np.concatenate(
            [left * k + left, right * k + right, left * k + right, right * k + left]
        )
        # Linear map from free parameters to the reported (identified) full vector.
        to_full = np.eye(self.n_params)[:, self.free]
        identify = np.eye(self.n_params)
        if self.reference is None:
            identify[:k, :k] -= 1.0 / k
            self.identification = "sum-zero"
        else:
            identify[:k, self.reference] -= 1.0
            self.identification = f"reference:{comparisons.items[self.reference]}"
        self._report = identify @ to_full
        self._design: np.ndarray | None = None

    # -- objective -------------------------------------------------------------

    def objective(self, counts: np.ndarray, *, with_prior: bool = True) -> Objective:
        """The negative log-likelihood (+ prior) of free parameters for these counts.

        d = s[left] - s[right] (+ gamma); gradient and Hessian are scattered back onto
        the items with ``bincount`` (the design matrix X is never formed).
        """
        k, n_linear, free = self.n_items, self._n_linear, self.free
        left, right = self.comparisons.left, self.comparisons.right
        prior = self.prior if with_prior else 0.0
        position, hess_index = self.position, self._hess_index
        full = np.zeros(self.n_params)

        def scatter(values: np.ndarray) -> np.ndarray:
            return np.bincount(left, values, k) - np.bincount(right, values, k)

        def evaluate(phi: np.ndarray, hessian: bool) -> tuple[float, np.ndarray, np.ndarray | None]:
            full[free] = phi
            s, extra = full[:k], full[n_linear:]
            d = s[left] - s[right]
            if position:
                d = d + full[k]
            t = self.link(d, counts, extra)
            g = np.empty(self.n_params)
            g[:k] = scatter(t.g_d)
            if position:
                g[k] = t.g_d.sum()
            g[n_linear:] = t.g_e
            f = t.nll
            if prior > 0:
                f += 0.5 * prior * float(s @ s)
                g[:k] += prior * s
            if not hessian:
                return f, g[free], None
            h = np.empty((self.n_params, self.n_params))
            h_d = t.h_d
            h[:k, :k] = np.bincount(
                hess_index, np.concatenate([h_d, h_d, -h_d, -h_d]), k * k
            ).reshape(k, k)
            if prior > 0:
                h[:k, :k] += prior * np.eye(k)
            if position:
                h[:k, k] = h[k, :k] = scatter(h_d)
                h[k, k] = h_d.sum()
            if len(extra):
                for e in range(len(extra)):
                    column = t.h_de[:, e]
                    h[:k, n_linear + e] = h[n_linear + e, :k] = scatter(column)
                    if position:
                        h[k, n_linear + e] = h[n_linear + e, k] = column.sum()
                h[n_linear:, n_linear:] = t.h_ee
            return f, g[free], h[np.ix_(free, free)]

        return evaluate

    def initial(self, counts: np.ndarray) -> np.ndarray:
        n_free_linear = int(self.free[: self._n_linear].sum())
        return np.concatenate([np.zeros(n_free_linear), self.link.initial_extra(counts)])

    def free_from_params(self, params: np.ndarray) -> np.ndarray:
        """Free coordinates of an identified full vector (for warm starts)."""
        full = np.asarray(params, float).copy()
        k = self.n_items
        pinned = np.flatnonzero(~self.free)
        if len(pinned):
            full[:k] -= full[pinned[0]]
        else:
            full[:k] -= full[:k].mean()
        return full[self.free]

    # -- fitting ---------------------------------------------------------------

    def free_design(self) -> np.ndarray:
        """(U, free parameters) rows x_u of d_u = x_u . phi (dense: U is unique pairs)."""
        if self._design is None:
            rows = np.arange(len(self.comparisons.left))
            full = np.zeros((len(rows), self.n_params))
            full[rows, self.comparisons.left] += 1.0
            full[rows, self.comparisons.right] -= 1.0
            if self.position:
                full[:, self.n_items] = 1.0
            self._design = full[:, self.free]
        return self._design

    def _fit_firth(self, counts: np.ndarray, start: np.ndarray) -> Optimum:
        """Fisher scoring on Firth's modified score (module docstring)."""
        x = self.free_design()
        n_left, n_right = self.link.decided(counts)
        n = n_left + n_right
        k = self.n_items
        scores_free = np.flatnonzero(self.free[:k])
        penalty = np.zeros(len(start))
        penalty[: len(scores_free)] = self.prior

        def terms(phi):
            p = expit(x @ phi)
            w = n * p * (1.0 - p)
            info = x.T @ (w[:, None] * x) + np.diag(penalty)
            with _single_threaded_blas():
                info_inv = np.linalg.inv(info)
            leverage = w * np.einsum("ij,jk,ik->i", x, info_inv, x)
            score = x.T @ (n_left - n * p + leverage * (0.5 - p)) - penalty * phi
            return score, info, info_inv

        phi = np.asarray(start, float).copy()
        converged = False
        for iterations in range(1, 201):  # noqa: B007 (the count is reported)
            score, info, info_inv = terms(phi)
            step = info_inv @ score
            size = np.max(np.abs(step)) if len(step) else 0.0
            if size > 5.0:  # far from the root: keep Fisher scoring from overshooting
                step *= 5.0 / size
            phi = phi + step
            if size < 1e-10:
                converged = True
                break
        _, info, _ = terms(phi)
        nll = self.objective(counts, with_prior=False)(phi, False)[0]
        return Optimum(phi, nll, info, converged, iterations)

    def _optimum(self, counts: np.ndarray, init: np.ndarray | None) -> Optimum:
        start = self.initial(counts) if init is None else self.free_from_params(init)
        if self.bias_reduction:
            return self._fit_firth(counts, start)
        return fit_ml(self.objective(counts), start, newton_first=init is not None)

    def fit_params(
        self, counts: np.ndarray, init: np.ndarray | None = None
    ) -> tuple[np.ndarray, bool]:
        """Identified parameters only (no covariance): the bootstrap's inner loop."""
        optimum = self._optimum(counts, init)
        return self._report @ optimum.x, optimum.converged

    def fit(self, counts: np.ndarray | None = None) -> PairedFit:
        counts = self.comparisons.counts if counts is None else np.asarray(counts, float)
        optimum = self._optimum(counts, None)
        try:
            with _single_threaded_blas():
                cov_free = sla.inv(optimum.hessian)
        except sla.LinAlgError:
            cov_free = np.full_like(optimum.hessian, np.nan)
        params = self._report @ optimum.x
        cov = self._report @ cov_free @ self._report.T
        nll_no_prior = optimum.nll
        if self.prior > 0 and not self.bias_reduction:  # all scores are free under a prior
            s = optimum.x[: self.n_items]
            nll_no_prior -= 0.5 * self.prior * float(s @ s)
        return PairedFit(
            model=self.link.name,
            items=self.comparisons.items,
            param_names=self.param_names,
            params=params,
            cov=cov,
            loglik=-nll_no_prior,
            n_comparisons=float(counts.sum()),
            identification=self.identification,
            prior=self.prior,
            converged=optimum.converged,
            iterations=optimum.iterations,
            scale=self.scale,
        )

    def cluster_covariance(self, params: np.ndarray, cluster_counts: np.ndarray) -> np.ndarray:
        """Cluster-robust (sandwich) covariance of identified ``params``.

        ``cluster_counts`` is (clusters, U, 3): each participant's counts. The covariance
        is H^-1 (sum_c g_c g_c^T) H^-1 * C / (C - 1), g_c the gradient of cluster c's
        log-likelihood at the estimate (Liang & Zeger 1986): unlike the Hessian alone it
        stays honest when one person's answers are correlated.
        """
        phi = self.free_from_params(params)
        total = cluster_counts.sum(axis=0)
        _, _, h = self.objective(total)(phi, True)
        grads = np.array(
            [self.objective(c, with_prior=False)(phi, False)[1] for c in cluster_counts]
        )
        n = len(cluster_counts)
        meat = grads.T @ grads * (n / max(n - 1, 1))
        try:
            h_inv = np.linalg.inv(h)
        except np.linalg.LinAlgError:  # a flat direction: no honest sandwich either
            return np.full((self.n_params, self.n_params), np.nan)
        return self._report @ (h_inv @ meat @ h_inv) @ self._report.T

    def loglik(self, params: np.ndarray, counts: np.ndarray) -> float:
        """Log-likelihood of ``counts`` under identified ``params`` (no prior term)."""
        k = self.n_items
        full = np.asarray(params, float)
        d = full[:k][self.comparisons.left] - full[:k][self.comparisons.right]
        if self.position:
            d = d + full[k]
        return -self.link(d, counts, full[self._n_linear :]).nll
