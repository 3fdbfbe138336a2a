"""Mixed-effects logistic model of pairwise choices, fitted by variational Bayes on codes.

    logit P(left wins) = gamma + sum_k beta_k x_k + u_participant + v_prompt,
    x_k = [left is k] - [right is k]  (k != reference),

i.e. ``win ~ score difference + left + (1|participant) + (1|prompt)``: beta are the
variant scores on the Bradley-Terry logit scale relative to the reference, gamma the
population position bias ("left"), and the random intercepts each participant's and each
prompt's own deviation from it. Their standard deviations say how much the left/right
habit varies between people (a large one flags careless responders) and between prompts.

The estimator is statsmodels' ``BinomialBayesMixedGLM.fit_vb`` (mean-field variational
Bayes: Gaussian posteriors of the fixed effects, the log-SDs and the random effects; priors
N(0, 2^2) on the fixed effects and N(0, 1) on the log-SDs; the expectation over each linear
predictor by statsmodels' 10-point Gauss-Legendre rule on [-5, 5]; L-BFGS-B), with the same
evidence lower bound computed from integer codes instead of a design matrix: a row's linear
predictor is gamma + beta[left] - beta[right] + u[participant] + v[prompt], and trials with
the same (participant, prompt, left, right) are one row with a count and a win count. Cost
and memory are linear in the trials; statsmodels' formula interface built a dense
trials x participants matrix first (4 GB at 100k trials). Ties carry no binary outcome and
are left out (and counted). With no random-effect variance the fixed effects coincide with
the Bradley-Terry fit with a position effect, which the tests check, as they check the
equality with statsmodels' own fit on small data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import norm

from hprune.errors import UserError

#: statsmodels' quadrature of E h(m + s Z): Gauss-Legendre nodes on [-RANGE, RANGE].
RANGE = 5.0
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(10)
_Z = RANGE * _NODES
_A = RANGE * _WEIGHTS * np.exp(-(_Z**2) / 2) / np.sqrt(2 * np.pi)
#: statsmodels' default prior SDs: fixed effects N(0, FE_P^2), log-SDs N(0, VCP_P^2).
FE_P, VCP_P = 2.0, 1.0


@dataclass(frozen=True)
class MixedLogitResult:
    fixed: pd.DataFrame  # term, variant, estimate, sd (posterior), ci_low, ci_high
    random: pd.DataFrame  # component, sd (exp of the posterior mean log-SD), log_sd, log_sd_sd
    n_trials: int
    n_ties_dropped: int


@dataclass(frozen=True)
class _Rows:
    """Decided trials collapsed to unique (participant, prompt, left, right) rows."""

    left: np.ndarray  # fixed-effect column of the left variant (-1: the reference)
    right: np.ndarray
    groups: list[np.ndarray]  # per random-effect component: the row's level
    n: np.ndarray  # trials of the row
    wins: np.ndarray  # of them, left chosen


def _collapse(left, right, groups, win, sizes) -> _Rows:
    n_items = int(max(left.max(), right.max())) + 1
    key = left * n_items + right
    for level, size in zip(groups, sizes, strict=True):
        key = key * size + level  # one integer per (left, right, participant, prompt)
    unique, inverse = np.unique(key, return_inverse=True)
    n = np.bincount(inverse, minlength=len(unique)).astype(float)
    wins = np.bincount(inverse, win, minlength=len(unique))
    levels = []
    for size in reversed(sizes):
        levels.append(unique % size)
        unique = unique // size
    return _Rows(unique // n_items, unique % n_items, levels[::-1], n, wins)


def _log_expit_and_expit(t: np.ndarray, log_sig: np.ndarray, sig: np.ndarray) -> None:
    """log sigma(t) and sigma(t) into the given arrays, from one exp(-|t|) (stable; in
    place, about five times faster than scipy's log_expit and expit one after the other)."""
    np.abs(t, out=sig)
    np.negative(sig, out=sig)
    np.exp(sig, out=sig)  # e = exp(-|t|)
    np.log1p(sig, out=log_sig)
    np.subtract(np.minimum(t, 0.0), log_sig, out=log_sig)  # log sigma(t) = min(t, 0) - log(1 + e)
    np.add(sig, 1.0, out=sig)
    np.reciprocal(sig, out=sig)  # 1 / (1 + e): sigma(|t|)
    np.subtract(sig, 0.5, out=sig)
    np.copysign(sig, t, out=sig)
    np.add(sig, 0.5, out=sig)  # sigma(t) = 1/2 + sign(t) (sigma(|t|) - 1/2)


class _VBObjective:
    """Minus statsmodels' ELBO of the binomial mixed GLM and its gradient, on code rows.

    Parameters are packed as statsmodels packs them: means (fixed effects, log-SDs of the
    components, random effects), then log posterior SDs in the same order.
    """

    def __init__(self, rows: _Rows, n_fixed: int, position: bool, sizes: list[int]) -> None:
        self.rows, self.n_fixed, self.position, self.sizes = rows, n_fixed, position, sizes
        self.k_fe = n_fixed + int(position)
        self.k_vcp = len(sizes)
        self.ident = np.repeat(np.arange(len(sizes)), sizes)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])[:-1]
        self.size = self.k_fe + self.k_vcp + int(sum(sizes))

    def precision_guess(self) -> np.ndarray:
        """Rough posterior precision of each mean: a quarter per trial plus the prior's."""
        r = self.rows
        k = self.n_fixed + 1
        per_column = np.bincount(r.left, r.n, k) + np.bincount(r.right, r.n, k)
        fixed = 0.25 * per_column[:-1]
        if self.position:
            fixed = np.append(r.n.sum() * 0.25, fixed)
        levels = [
            0.25 * np.bincount(level, r.n, size) + 1.0
            for level, size in zip(r.groups, self.sizes, strict=True)
        ]
        return np.concatenate([fixed + 1 / FE_P**2, 2.0 * np.asarray(self.sizes) + 1, *levels])

    def _scores(self, fe: np.ndarray) -> np.ndarray:
        """Fixed-effect values per variant column, with a trailing 0 for the reference."""
        return np.append(fe[int(self.position) :], 0.0)

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        r = self.rows
        n = self.size
        mean, log_sd = x[:n], x[n:]
        sd = np.exp(log_sd)
        k_fe, k_vcp = self.k_fe, self.k_vcp
        fe_m, vcp_m, vc_m = mean[:k_fe], mean[k_fe : k_fe + k_vcp], mean[k_fe + k_vcp :]
        fe_s, vcp_s, vc_s = sd[:k_fe], sd[k_fe : k_fe + k_vcp], sd[k_fe + k_vcp :]
        beta_m, beta_v = self._scores(fe_m), self._scores(fe_s) ** 2
        tm = beta_m[r.left] - beta_m[r.right]
        tv = beta_v[r.left] + beta_v[r.right]
        if self.position:
            tm = tm + fe_m[0]
            tv = tv + fe_s[0] ** 2
        for c, level in enumerate(r.groups):
            at = self.offsets[c] + level
            tm = tm + vc_m[at]
            tv = tv + vc_s[at] ** 2
        root = np.sqrt(tv)
        # Per node, with t = -(tm + root z): log_expit(t) = -softplus(tm + root z) and
        # expit(t) = 1 - sigma(tm + root z); sums of the weights are constants.
        softplus = np.zeros_like(tm)
        rest = np.zeros_like(tm)  # sum a (1 - sigma)
        rest_z = np.zeros_like(tm)  # sum a z (1 - sigma)
        t, log_sig, sig = np.empty_like(tm), np.empty_like(tm), np.empty_like(tm)
        for z, a in zip(_Z, _A, strict=True):
            np.multiply(root, -z, out=t)
            np.subtract(t, tm, out=t)
            _log_expit_and_expit(t, log_sig, sig)
            softplus -= a * log_sig
            rest += a * sig
            rest_z += (a * z) * sig
        slope = _A.sum() - rest  # E sigma(tm + root Z) under the rule
        slope_z = (_A * _Z).sum() - rest_z  # E Z sigma(tm + root Z)
        elbo = float(r.wins @ tm - r.n @ softplus)
        g_tm = r.wins - r.n * slope  # d ELBO / d tm per row
        g_root = -r.n * slope_z / root  # d ELBO / d sqrt(tv) per row, over sqrt(tv)
        # Chain rule to the parameters: d tv / d sd_j = 2 sd_j for the row's terms.
        k = self.n_fixed + 1
        score_m = np.bincount(r.left, g_tm, k) - np.bincount(r.right, g_tm, k)
        score_s = np.bincount(r.left, g_root, k) + np.bincount(r.right, g_root, k)
        fe_gm = np.empty(k_fe)
        fe_gs = np.empty(k_fe)
        fe_gm[int(self.position) :] = score_m[:-1]
        fe_gs[int(self.position) :] = score_s[:-1] * fe_s[int(self.position) :]
        if self.position:
            fe_gm[0] = g_tm.sum()
            fe_gs[0] = g_root.sum() * fe_s[0]
        vc_gm = np.concatenate(
            [
                np.bincount(level, g_tm, size)
                for level, size in zip(r.groups, self.sizes, strict=True)
            ]
        )
        vc_gs = (
            np.concatenate(
                [
                    np.bincount(level, g_root, size)
                    for level, size in zip(r.groups, self.sizes, strict=True)
                ]
            )
            * vc_s
        )
        # The priors (statsmodels' _elbo_common and _elbo_grad_common) and the entropy.
        m, s = vcp_m[self.ident], vcp_s[self.ident]
        u = vc_m**2 + vc_s**2
        ve = np.exp(2 * (s**2 - m))
        elbo -= float(np.sum(u * ve)) / 2 + float(np.sum(m))
        elbo -= 0.5 * float(np.sum(vcp_m**2 + vcp_s**2)) / VCP_P**2
        elbo -= 0.5 * float(np.sum(fe_m**2 + fe_s**2)) / FE_P**2
        elbo += float(np.sum(log_sd))
        vcp_gm = np.bincount(self.ident, u * ve - 1, k_vcp) - vcp_m / VCP_P**2
        vcp_gs = np.bincount(self.ident, -2 * u * ve * s, k_vcp) - vcp_s / VCP_P**2
        vc_gm -= vc_m * ve
        vc_gs -= vc_s * ve
        fe_gm -= fe_m / FE_P**2
        fe_gs -= fe_s / FE_P**2
        grad_mean = np.concatenate([fe_gm, vcp_gm, vc_gm])
        grad_sd = np.concatenate([fe_gs, vcp_gs, vc_gs]) + 1 / sd
        return -elbo, -np.concatenate([grad_mean, grad_sd * sd])


def _codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Integer codes of the sorted distinct values (patsy's level order for C(...))."""
    codes, levels = pd.factorize(values.astype(str), sort=True)
    return codes.astype(np.int64), len(levels)


def mixed_logit(
    pairs: pd.DataFrame, reference: str, *, level: float = 0.95, position: bool = True
) -> MixedLogitResult:
    """Fit the mixed logit to answered pair trials (responses-export rows).

    ``position=False`` leaves out the "left" term (when the design cannot identify it, or
    the data record no sides). Data without a varying outcome or without more than one
    participant or prompt are a UserError.
    """
    left_names = pairs["left_variant"].astype(str)
    right_names = pairs["right_variant"].astype(str)
    variants = sorted(set(left_names.unique()) | set(right_names.unique()))
    if reference not in variants:
        raise UserError(f"reference variant {reference!r} does not occur in the pair trials")
    if len(variants) < 2:
        raise UserError("the mixed logit needs at least two variants")
    choice = pairs["choice"].astype(str)
    decided = choice.isin(["left", "right"]).to_numpy()
    if not decided.any():
        raise UserError("every pair trial is a tie: the mixed logit has no outcome to model")
    others = [v for v in variants if v != reference]
    column = {name: i for i, name in enumerate(others)} | {reference: len(others)}
    win = (choice[decided] == "left").to_numpy(float)
    groups, sizes, names = [], [], []
    for name, source in (("participant", "participant"), ("prompt", "prompt_id")):
        codes, size = _codes(pairs.loc[decided, source])
        if size > 1:
            groups.append(codes)
            sizes.append(size)
            names.append(name)
    if not groups:
        raise UserError("the mixed logit needs more than one participant or prompt")
    if win.min() == win.max():
        raise UserError(
            "every decided answer chose the same side, so the outcome never varies; the mixed "
            "logit has nothing to model"
        )
    rows = _collapse(
        left_names[decided].map(column).to_numpy(np.int64),
        right_names[decided].map(column).to_numpy(np.int64),
        groups,
        win,
        sizes,
    )
    objective = _VBObjective(rows, len(others), position, sizes)
    precision = objective.precision_guess()
    # Preconditioned: the optimiser sees each mean in units of its rough posterior SD, and
    # starts each posterior SD there; the optimum is statsmodels' (the tests check it).
    scale = np.concatenate([1 / np.sqrt(precision), np.ones(objective.size)])
    start = np.concatenate([np.zeros(objective.size), -0.5 * np.log(precision)])
    start[
        objective.size + objective.k_fe : objective.size + objective.k_fe + objective.k_vcp
    ] = -0.5

    def scaled(y):
        value, grad = objective(y * scale)
        return value, grad * scale

    with np.errstate(over="ignore"):  # a line search may try a huge step; it is rejected
        fit = minimize(scaled, start / scale, jac=True, method="L-BFGS-B")
    fit.x = fit.x * scale
    mean, sd = fit.x[: objective.size], np.exp(fit.x[objective.size :])
    k_fe = objective.k_fe
    lead = ["left"] if position else []
    z = float(norm.ppf(0.5 + level / 2))
    fixed = pd.DataFrame(
        {
            "term": lead + ["score"] * len(others),
            "variant": [""] * len(lead) + others,
            "estimate": mean[:k_fe],
            "sd": sd[:k_fe],
        }
    )
    fixed["ci_low"] = fixed["estimate"] - z * fixed["sd"]
    fixed["ci_high"] = fixed["estimate"] + z * fixed["sd"]
    vcp = slice(k_fe, k_fe + objective.k_vcp)
    random = pd.DataFrame(
        {"component": names, "sd": np.exp(mean[vcp]), "log_sd": mean[vcp], "log_sd_sd": sd[vcp]}
    )
    return MixedLogitResult(fixed, random, int(decided.sum()), int((choice == "tie").sum()))
