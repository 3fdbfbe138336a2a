"""Two methods of Perez-Ortiz & Mantiuk's pwcmp toolbox, reproduced: the Gaussian distance
prior of its JOD scaling and its leave-one-out likelihood outlier analysis.

Perez-Ortiz & Mantiuk (2017), "A practical guide and software for analysing pairwise
comparison experiments", arXiv:1712.03686 (sections 5 and 9); the code is pwcmp's
``pw_scale.m`` and ``pw_outlier_analysis.m`` (github.com/mantiuk/pwcmp). Both work on the
matrix D of an experiment, D[i, j] = how often i was chosen over j (ties here count half to
each side), and on Thurstone Case V with P(i over j) = Phi((q_i - q_j) / 1.4826), 1.4826
being pwcmp's rounding of 1 / Phi^-1(0.75) (1 JOD = 75% preference).

**Gaussian prior** (``pw_scale``, ``prior = 'gaussian'``, pwcmp's default). For every
ordered pair a = (i, j) with D[i, j] + D[j, i] > 0 the model predicts p_a; the prior of that
predicted distance is the normalised probability that it produced the answers of each pair
b of the experiment,

    prior_a = sum_b A[a, b] / sum_c A[c, b],   A[a, b] = p_a^k_b (1 - p_a)^(n_b - k_b),

with n_b = D_b + D_b' and k_b = D_b shifted one answer towards the middle where a pair was
unanimous (0 -> 1, n -> n - 1). pwcmp minimises

    - sum_a [ D_a log p_a + D_a' log(1 - p_a) + log(prior_a + 0.1) ] + 0.01 mean(q)^2

over all ordered pairs a (so every unordered pair's likelihood counts twice against one
prior term per direction) and reports q with mean 0. The prior keeps unanimous pairs at a
finite distance, and pulls scores that rest on few answers towards the distances the rest of
the experiment shows.

**Outlier analysis** (``pw_outlier_analysis``): for each observer o and each group g
(scene), the others' data are scaled (Gaussian prior), and o's answers are scored by the
binomial likelihood of each pair she compared, L_o = sum over her pairs of
log10 Binom(D_o[i, j]; n_o[i, j], p_ij), divided by her number of compared pairs (summed over
the groups). With Q1 and IQR the 25th percentile and the interquartile range of L across
observers (MATLAB's quantile: Hazen's plotting positions), dist_L = (Q1 - L_o) / IQR when
L_o < Q1, else 0; pwcmp's README names dist_L > 1.5 the customary threshold (Tukey's fence).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.special import gammaln, log_ndtr, ndtr

from analysis.comparisons import LEFT, RIGHT, TIE, PairedComparisons, components, from_pairs
from analysis.estimation import PairedFit, _single_threaded_blas

#: pwcmp's sigma of the cumulative normal: 1 JOD = 75% (1 / Phi^-1(0.75) = 1.482602...).
SIGMA = 1.4826
#: pwcmp's constant added to the prior before its logarithm.
PRIOR_FLOOR = 0.1
#: pwcmp's weight of the mean-zero regularisation.
MEAN_WEIGHT = 0.01
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def preference_matrix(comparisons: PairedComparisons) -> np.ndarray:
    """D[i, j]: how often i was chosen over j, whatever the sides; ties half to each."""
    k = comparisons.n_items
    c = comparisons.counts
    d = np.zeros((k, k))
    half = 0.5 * c[:, TIE]
    np.add.at(d, (comparisons.left, comparisons.right), c[:, LEFT] + half)
    np.add.at(d, (comparisons.right, comparisons.left), c[:, RIGHT] + half)
    return d


def _log_cdf_and_hazards(x: np.ndarray):
    """log Phi(x), log Phi(-x), phi(x)/Phi(x) and phi(x)/Phi(-x), stable in both tails."""
    log_p, log_q = log_ndtr(x), log_ndtr(-x)
    log_phi = -0.5 * x * x - _LOG_SQRT_2PI
    return log_p, log_q, np.exp(log_phi - log_p), np.exp(log_phi - log_q)


@dataclass(frozen=True)
class _Pairs:
    """The ordered pairs a = (i, j) that were compared, with pwcmp's counts.

    The counts may carry leading batch axes (one experiment per leading index, e.g. every
    observer's leave-one-out data on the same compared pairs); ``i`` and ``j`` are shared.
    """

    i: np.ndarray
    j: np.ndarray
    wins: np.ndarray  # D[i, j]
    losses: np.ndarray  # D[j, i]
    k_shifted: np.ndarray  # D[i, j] moved one answer inwards where the pair was unanimous
    n: np.ndarray  # D[i, j] + D[j, i]


def _ordered_pairs(d: np.ndarray, compared: np.ndarray | None = None) -> _Pairs:
    """pwcmp's counts of ``d`` (k, k), or of a stack ``d`` (..., k, k) on the pairs
    ``compared`` (a (k, k) mask; by default those compared in ``d``)."""
    n = d + np.swapaxes(d, -1, -2)
    if compared is None:
        compared = n > 0
    i, j = np.nonzero(compared)
    wins, losses = d[..., i, j], d[..., j, i]
    unanimous = (wins > 0) != (losses > 0)
    k = wins.copy()
    k[unanimous & (wins == 0)] = 1.0
    k[unanimous & (wins != 0)] -= 1.0
    return _Pairs(i, j, wins, losses, k, n[..., i, j])


def gaussian_prior_objective(q: np.ndarray, pairs: _Pairs, *, mean_weight: float = MEAN_WEIGHT):
    """pwcmp's negative log posterior of scores q and its gradient (module docstring).

    ``q`` (k,) with ``pairs`` of one experiment, or (B, k) with counts (B, pairs): then the
    values (B,) and gradients (B, k) of B experiments at once.
    """
    x = (q[..., pairs.i] - q[..., pairs.j]) / SIGMA
    log_p, log_q, hazard_p, hazard_q = _log_cdf_and_hazards(x)
    nll = -(pairs.wins * log_p + pairs.losses * log_q).sum(axis=-1)
    g_x = -(pairs.wins * hazard_p - pairs.losses * hazard_q)
    # log A[a, b] = k_b log p_a + (n_b - k_b) log(1 - p_a); R = A normalised over a.
    k_b, m_b = pairs.k_shifted[..., None, :], (pairs.n - pairs.k_shifted)[..., None, :]
    log_a = log_p[..., :, None] * k_b + log_q[..., :, None] * m_b
    share = np.exp(log_a - log_a.max(axis=-2, keepdims=True))
    share /= share.sum(axis=-2, keepdims=True)
    prior = share.sum(axis=-1)
    nll = nll - np.log(prior + PRIOR_FLOOR).sum(axis=-1)
    # d A[a, b] / d x_a / A[a, b] = k_b phi/Phi - (n_b - k_b) phi/(1 - Phi), at x_a.
    slope = hazard_p[..., :, None] * k_b - hazard_q[..., :, None] * m_b
    weighted = share * slope
    # back[b] = sum_c R[c, b] / (prior_c + .1)
    back = (share / (prior + PRIOR_FLOOR)[..., :, None]).sum(axis=-2)
    g_x -= weighted.sum(axis=-1) / (prior + PRIOR_FLOOR) - (weighted @ back[..., None])[..., 0]
    g_d = g_x / SIGMA
    n_items = q.shape[-1]
    incidence = np.zeros((len(pairs.i), n_items))
    incidence[np.arange(len(pairs.i)), pairs.i] += 1.0
    incidence[np.arange(len(pairs.i)), pairs.j] -= 1.0
    grad = g_d @ incidence
    mean = q.mean(axis=-1)
    nll = nll + mean_weight * mean**2
    grad += (mean_weight * 2 * mean / n_items)[..., None]
    return (float(nll) if np.ndim(nll) == 0 else nll), grad


def scale_with_prior(d: np.ndarray, init: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """JOD scores of a preference matrix under pwcmp's Gaussian prior, mean 0."""
    pairs = _ordered_pairs(d)
    start = np.zeros(len(d)) if init is None else np.asarray(init, float) - np.mean(init)
    with _single_threaded_blas():
        result = minimize(
            gaussian_prior_objective,
            start,
            args=(pairs,),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15, "maxcor": 20},
        )
    q = result.x - result.x.mean()
    return q, bool(result.success or np.max(np.abs(result.jac)) < 1e-6)


class GaussianPriorJODModel:
    """Thurstone JOD scaling with pwcmp's Gaussian prior, on fixed unique rows.

    Offers what the bootstrap needs of a paired model (``fit_params`` on any counts of the
    same rows, ``param_names``, ``comparisons``); no position effect (pwcmp has none).
    Standard errors: the inverse of the numerical Hessian of the negative log posterior
    in the identified coordinates (one score pinned), mapped to the reported scores.
    """

    link_name = "thurstone-pwcmp-gaussian-prior"

    class _Link:
        ties_link = True
        name = "thurstone"

    def __init__(self, comparisons: PairedComparisons, *, reference: str | None = None) -> None:
        self.comparisons = comparisons
        self.link = self._Link()
        self.prior = 1.0  # for the bootstrap's estimability check: connectivity suffices
        self.n_items = self.n_params = comparisons.n_items
        self.param_names = tuple(comparisons.items)
        self.position = False
        self.reference = None if reference is None else comparisons.items.index(reference)
        self.identification = "sum-zero" if reference is None else f"reference:{reference}"

    def _identify(self, q: np.ndarray) -> np.ndarray:
        return q - (q.mean() if self.reference is None else q[self.reference])

    def fit_params(self, counts: np.ndarray, init: np.ndarray | None = None):
        d = preference_matrix(self.comparisons.with_counts(counts))
        q, converged = scale_with_prior(d, init)
        return self._identify(q), converged

    def fit(self) -> PairedFit:
        counts = self.comparisons.counts
        d = preference_matrix(self.comparisons)
        q, converged = scale_with_prior(d)
        pairs = _ordered_pairs(d)
        k = self.n_items
        pinned = 0 if self.reference is None else self.reference
        free = np.flatnonzero(np.arange(k) != pinned)

        def grad(phi):
            full = q.copy()
            full[free] = phi
            return gaussian_prior_objective(full, pairs, mean_weight=0.0)[1][free]

        h = np.empty((len(free), len(free)))
        step = 1e-5
        for c in range(len(free)):
            e = np.zeros(len(free))
            e[c] = step
            h[:, c] = (grad(q[free] + e) - grad(q[free] - e)) / (2 * step)
        h = 0.5 * (h + h.T)
        try:
            cov_free = np.linalg.inv(h)
        except np.linalg.LinAlgError:
            cov_free = np.full_like(h, np.nan)
        to_full = np.eye(k)[:, free]
        identify = np.eye(k)
        if self.reference is None:
            identify -= 1.0 / k
        else:
            identify[:, self.reference] -= 1.0
        report = identify @ to_full
        x = (q[pairs.i] - q[pairs.j]) / SIGMA
        loglik = float(pairs.wins @ log_ndtr(x)) / 2  # each unordered pair appears twice
        return PairedFit(
            model=self.link_name,
            items=self.comparisons.items,
            param_names=self.param_names,
            params=self._identify(q),
            cov=report @ cov_free @ report.T,
            loglik=loglik,
            n_comparisons=float(counts.sum()),
            identification=self.identification,
            prior=0.0,
            converged=converged,
            iterations=0,
            scale="JOD",
        )


# ------------------------------------------------------------------ outliers


def _log10_binomial(k: np.ndarray, n: np.ndarray, log_p: np.ndarray, log_q: np.ndarray):
    """log10 of the binomial probability of k of n, for real k (ties make halves)."""
    log_choose = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    return (log_choose + k * log_p + (n - k) * log_q) / np.log(10)


def outlier_likelihoods(
    pairs: pd.DataFrame,
    *,
    group: str | None = None,
    items: tuple[str, ...] | None = None,
    simulations: int = 1000,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """pwcmp's per-observer log10 likelihood under the others' scaling (module docstring).

    ``pairs``: answered pair trials (responses-export rows); ``group``: a column whose
    values are scaled separately (pwcmp's scenes; criteria always are), None for one scale.
    Returns participant, ``loo_log10_lik`` (per compared pair; NaN when none could be
    scored), ``loo_pairs`` (how many pair cells were scored) and ``loo_p``.

    ``loo_p`` calibrates the same statistic for each observer alone: the probability that
    answers drawn from the others' scaling on her own pairs (binomial per pair cell,
    ``simulations`` draws, seeded) have a likelihood as low as hers, with the +1 of a Monte
    Carlo test (Davison & Hinkley 1997). Unlike dist_L it does not depend on how the other
    observers happen to spread, so its false-alarm rate is known: alpha per observer whose
    answers follow the model. Ties (half counts) are drawn as whole trials.

    The others' scaling of every observer is found at once (``_leave_one_out_scales``);
    ``progress`` receives a line per tenth of the groups and per 5000 observers simulated.
    """
    people = sorted(pairs["participant"].astype(str).unique())
    index = {p: i for i, p in enumerate(people)}
    total = np.zeros(len(people))
    cells = np.zeros(len(people))
    scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (person, n, x) of cells
    names = items or tuple(
        sorted(
            set(pairs["left_variant"].astype(str).unique())
            | set(pairs["right_variant"].astype(str).unique())
        )
    )
    grouped = [(None, pairs)] if group is None else list(pairs.groupby(group, sort=True))
    every = max(1, len(grouped) // 10)
    for number, (_, part) in enumerate(grouped):
        comparisons, row, outcome = from_pairs(part, names)
        k = comparisons.n_items
        who = part["participant"].astype(str).map(index).to_numpy()
        tie = outcome == TIE
        winner = np.where(outcome == RIGHT, comparisons.right[row], comparisons.left[row])
        loser = np.where(outcome == RIGHT, comparisons.left[row], comparisons.right[row])
        # Each person's preference matrix, as sparse rows (person, winner * k + loser).
        own = sp.csr_matrix(
            (
                np.concatenate([np.where(tie, 0.5, 1.0), np.full(tie.sum(), 0.5)]),
                (
                    np.concatenate([who, who[tie]]),
                    np.concatenate([winner * k + loser, loser[tie] * k + winner[tie]]),
                ),
            ),
            shape=(len(people), k * k),
        )
        everybody = np.asarray(own.sum(axis=0)).reshape(k, k)
        full, _ = _scale_subset(everybody, None)
        members = np.unique(who)
        chunk = max(1, 2_000_000 // k**4)  # the prior term is (pairs x pairs) per person
        for start in range(0, len(members), chunk):
            persons = members[start : start + chunk]
            mine = own[persons].toarray().reshape(-1, k, k)
            q = _leave_one_out_scales(everybody, mine, full)
            n = mine + mine.transpose(0, 2, 1)
            scorable = np.isfinite(q)
            upper = np.triu(n > 0, 1) & scorable[:, :, None] & scorable[:, None, :]
            b, i, j = np.nonzero(upper)
            x = (q[b, i] - q[b, j]) / SIGMA
            ll = _log10_binomial(mine[b, i, j], n[b, i, j], log_ndtr(x), log_ndtr(-x))
            ll = np.maximum(ll, -200.0)  # pwcmp floors p at 1e-200
            total[persons] += np.bincount(b, ll, len(persons))
            cells[persons] += np.bincount(b, minlength=len(persons))
            scored.append((persons[b], n[b, i, j], x))
        if progress is not None and ((number + 1) % every == 0 or number + 1 == len(grouped)):
            progress(
                f"outlier analysis: leave-one-out scales of {number + 1} of {len(grouped)} "
                "groups found"
            )
    with np.errstate(invalid="ignore", divide="ignore"):
        likelihood = np.where(cells > 0, total / cells, np.nan)
    p_values = np.full(len(people), np.nan)
    person = np.concatenate([a for a, _, _ in scored]) if scored else np.zeros(0, dtype=int)
    if person.size:  # somebody has a pair the others' scores can judge
        order = np.argsort(person, kind="stable")
        person = person[order]
        n_all = np.concatenate([b for _, b, _ in scored])[order]
        x_all = np.concatenate([c for _, _, c in scored])[order]
        bounds = np.flatnonzero(np.diff(person)) + 1
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [len(person)]])
        for done, (a, b) in enumerate(zip(starts, stops, strict=True)):
            who_ = int(person[a])
            rng = np.random.default_rng([seed, who_])
            p_values[who_] = _monte_carlo_p(total[who_], n_all[a:b], x_all[a:b], rng, simulations)
            if progress is not None and (done + 1) % 5000 == 0:
                progress(f"outlier analysis: {done + 1} of {len(starts)} observers simulated")
    return pd.DataFrame(
        {
            "participant": people,
            "loo_log10_lik": likelihood,
            "loo_pairs": cells.astype(int),
            "loo_p": p_values,
        }
    )


#: The leave-one-out solver stops when no score moves by more than this (JOD).
LOO_TOLERANCE = 1e-10
LOO_MAX_STEPS = 100


def _leave_one_out_scales(everybody: np.ndarray, mine: np.ndarray, full: np.ndarray):
    """The Gaussian-prior scores of ``everybody - mine[b]`` for every observer b: (B, k),
    NaN for items the others never compared (or every item, when the others' design falls
    apart into groups).

    Without one of many observers the scores move little from ``full``, the optimum of all
    the data, so every observer's scores are found together by a chord Newton iteration
    from there: q <- q - H^-1 grad(q), with H the Hessian of all the data at ``full`` and
    the exact gradient of her leave-one-out posterior; it converges to the same optimum
    as L-BFGS, faster the smaller her share of the data. Observers whose removal leaves an
    item or a compared pair without answers, or for whom the iteration does not settle
    within LOO_MAX_STEPS, are scaled one by one with L-BFGS (``scale_with_prior``).
    """
    batch, k = mine.shape[0], mine.shape[1]
    rest = everybody[None] - mine
    q = np.full((batch, k), np.nan)
    compared = (everybody + everybody.T) > 0
    still = ((rest + rest.transpose(0, 2, 1)) > 0) == compared[None]
    together = np.all(still, axis=(1, 2)) if _connected(everybody) else np.zeros(batch, bool)
    settled = np.zeros(batch, bool)
    if together.any():
        pairs = _ordered_pairs(rest[together], compared)
        hessian = _objective_hessian(full, _ordered_pairs(everybody, compared))
        current = np.tile(full, (int(together.sum()), 1))
        active = np.ones(len(current), bool)
        last = np.full(len(current), np.nan)  # no rate before the second step
        for _ in range(LOO_MAX_STEPS):
            sub = _Pairs(*(pairs.i, pairs.j), *(f[active] for f in (pairs.wins, pairs.losses,
                                                                     pairs.k_shifted, pairs.n)))  # fmt: skip
            _, grad = gaussian_prior_objective(current[active], sub)
            step = np.linalg.solve(hessian, grad.T).T
            current[active] -= step
            size = np.abs(step).max(axis=1)
            # The iteration contracts by rate r = size / last: what is left after this
            # step is about size * r / (1 - r), so one further gradient usually suffices.
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = size / last[active]
                left = np.where(rate < 0.5, size * rate / (1 - rate), size)
            done = np.isfinite(size) & ((size <= LOO_TOLERANCE) | (left <= LOO_TOLERANCE))
            last[active] = size
            active[np.flatnonzero(active)[done]] = False
            if not active.any():
                break
        ok = ~active & np.all(np.isfinite(current), axis=1)
        rows = np.flatnonzero(together)[ok]
        q[rows] = current[ok] - current[ok].mean(axis=1, keepdims=True)
        settled[rows] = True
    for b in np.flatnonzero(~settled):
        present = (rest[b] + rest[b].T).sum(axis=1) > 0
        if present.sum() < 2 or not _connected(rest[b][np.ix_(present, present)]):
            continue
        q[b, present], _ = _scale_subset(rest[b][np.ix_(present, present)], full[present])
    return q


def _objective_hessian(q: np.ndarray, pairs: _Pairs, step: float = 1e-5) -> np.ndarray:
    """Central-difference Hessian of ``gaussian_prior_objective`` at ``q`` (k, k)."""
    k = len(q)
    shifted = np.concatenate([q + step * np.eye(k), q - step * np.eye(k)])
    many = _Pairs(pairs.i, pairs.j, *(np.tile(f, (2 * k, 1)) for f in (pairs.wins, pairs.losses,
                                                                      pairs.k_shifted, pairs.n)))  # fmt: skip
    _, grads = gaussian_prior_objective(shifted, many)
    h = (grads[:k] - grads[k:]) / (2 * step)
    return 0.5 * (h + h.T)


def _monte_carlo_p(
    observed: float, n: np.ndarray, x: np.ndarray, rng: np.random.Generator, draws: int
) -> float:
    """P(sum of log10 binomial likelihoods <= observed) for answers drawn from the model.

    A cell of n trials draws its count as how many of n uniforms fall below its
    probability (a binomial draw; cheaper than numpy's general sampler for the one to three
    trials a cell has), and reads its likelihood from a table of its n + 1 outcomes.
    """
    trials = np.maximum(np.round(n), 1).astype(np.int64)
    p = ndtr(x)
    cell = np.repeat(np.arange(len(n)), trials)
    below = rng.random((draws, len(cell))) < p[cell]
    first = np.concatenate([[0], np.cumsum(trials)[:-1]])
    k = np.add.reduceat(below, first, axis=1, dtype=np.int64)  # successes per cell and draw
    # Table of each cell's log10 likelihood of 0..n successes, flattened.
    offset = np.concatenate([[0], np.cumsum(trials + 1)[:-1]])
    owner = np.repeat(np.arange(len(n)), trials + 1)
    outcome = np.arange(len(owner)) - offset[owner]
    log_p, log_q = log_ndtr(x), log_ndtr(-x)
    table = _log10_binomial(
        outcome.astype(float), trials[owner].astype(float), log_p[owner], log_q[owner]
    )
    simulated = np.maximum(table, -200.0)[offset[None, :] + k].sum(axis=1)
    return float((1 + np.sum(simulated <= observed + 1e-9)) / (draws + 1))


def _scale_subset(d: np.ndarray, init: np.ndarray | None) -> tuple[np.ndarray, bool]:
    if len(d) < 2 or not _connected(d):
        return np.zeros(len(d)), False
    return scale_with_prior(d, init)


def _connected(d: np.ndarray) -> bool:
    k = len(d)
    i, j = np.nonzero(d + d.T)
    comparisons = PairedComparisons(
        tuple(map(str, range(k))), i, j, np.column_stack([np.ones(len(i)), np.zeros((len(i), 2))])
    )
    return len(components(comparisons)) == 1


def iqr_distance(likelihood: np.ndarray) -> np.ndarray:
    """pwcmp's dist_L: (Q1 - L) / IQR below the first quartile, else 0 (NaN stays NaN)."""
    values = np.asarray(likelihood, float)
    ok = np.isfinite(values)
    out = np.full(len(values), np.nan)
    if ok.sum() < 2:
        return out
    q1, q3 = np.quantile(values[ok], [0.25, 0.75], method="hazen")
    spread = q3 - q1
    below = values[ok] < q1
    out[ok] = np.where(below, (q1 - values[ok]) / spread if spread > 0 else np.inf, 0.0)
    return out
