"""Bradley-Terry maximum likelihood, with Davidson ties and a left/right position effect.

Model (Bradley & Terry 1952): item i shown left against item j shown right wins with

    P(left wins) = sigma(d),   d = s_i - s_j + gamma,

sigma the logistic function and gamma the position effect (gamma > 0: the left image is
preferred regardless of content). One unit of score is one logit: a gap of 1.1 means
75% preference, ln 3 = 1.0986.

Ties (Davidson 1970, "On extending the Bradley-Terry model to accommodate ties"):

    P(left) = e^{d/2} / D,  P(right) = e^{-d/2} / D,  P(tie) = nu / D,
    D = e^{d/2} + e^{-d/2} + nu,

so two equal items tie with probability nu / (2 + nu); the fit estimates tau = log nu.
Without Davidson, ties can be split half and half ("half") or dropped ("drop").

Closed form, two items: k wins of n gives s_1 - s_0 = log(k / (n - k)) with standard
error sqrt(n / (k (n - k))). The estimates equal choix's ``ilsr_pairwise`` (the same
MLE by a spectral fixed point, Maystre & Grossglauser 2015) after centring.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.special import expit

from analysis.comparisons import LEFT, RIGHT, TIE, PairedComparisons, check_estimable
from analysis.estimation import BinaryLink, LinkTerms, PairedFit, PairedModel
from hprune.errors import UserError

TieHandling = Literal["auto", "davidson", "half", "drop"]


class LogitLink(BinaryLink):
    """Plain Bradley-Terry; ties count as half a win each ("half") or not at all ("drop")."""

    name = "bradley-terry"

    def __call__(self, d: np.ndarray, counts: np.ndarray, extra: np.ndarray) -> LinkTerms:
        n_left, n_right = self.decided(counts)
        n = n_left + n_right
        p = expit(d)
        nll = float(n_left @ np.logaddexp(0.0, -d) + n_right @ np.logaddexp(0.0, d))
        return LinkTerms(nll=nll, g_d=n * p - n_left, h_d=n * p * (1.0 - p))


class DavidsonLink:
    """Davidson's tie model; the extra parameter is tau = log nu."""

    name = "davidson"
    extra_names = ("tie_log_nu",)
    ties_link = True

    def __call__(self, d: np.ndarray, counts: np.ndarray, extra: np.ndarray) -> LinkTerms:
        tau = extra[0]
        n_left, n_right, n_tie = counts[:, LEFT], counts[:, RIGHT], counts[:, TIE]
        n = n_left + n_right + n_tie
        log_d = np.logaddexp(np.logaddexp(0.5 * d, -0.5 * d), tau)
        lp_left, lp_right, lp_tie = 0.5 * d - log_d, -0.5 * d - log_d, tau - log_d
        nll = -float(n_left @ lp_left + n_right @ lp_right + n_tie @ lp_tie)
        p_left, p_right, p_tie = np.exp(lp_left), np.exp(lp_right), np.exp(lp_tie)
        diff = p_left - p_right
        return LinkTerms(
            nll=nll,
            g_d=0.5 * (n * diff - (n_left - n_right)),
            h_d=n * 0.25 * ((p_left + p_right) - diff**2),
            g_e=np.array([float(n @ p_tie - n_tie.sum())]),
            h_de=(-0.5 * n * diff * p_tie)[:, None],
            h_ee=np.array([[float(n @ (p_tie * (1.0 - p_tie)))]]),
        )

    def initial_extra(self, counts: np.ndarray) -> np.ndarray:
        # nu matching the observed tie rate at equal scores: r = nu / (2 + nu).
        rate = counts[:, TIE].sum() / max(counts.sum(), 1e-12)
        rate = min(max(rate, 1e-6), 1 - 1e-6)
        return np.array([np.log(2 * rate / (1 - rate))])


def resolve_ties(comparisons: PairedComparisons, ties: TieHandling) -> str:
    """``auto``: Davidson when the data have ties, plain Bradley-Terry otherwise."""
    if ties not in ("auto", "davidson", "half", "drop"):
        raise ValueError(f"unknown tie handling {ties!r}")
    if ties == "auto":
        return "davidson" if comparisons.counts[:, TIE].sum() > 0 else "drop"
    if ties == "davidson" and comparisons.counts[:, TIE].sum() <= 0:
        return "drop"  # Davidson without ties is Bradley-Terry (nu -> 0)
    return ties


def bradley_terry_model(
    comparisons: PairedComparisons,
    *,
    ties: TieHandling = "auto",
    position: bool = False,
    prior: float = 0.0,
    reference: str | None = None,
    bias_reduction: bool = False,
) -> PairedModel:
    """The Bradley-Terry model of these rows, checked for an existing, finite MLE.

    ``bias_reduction``: Firth's penalised likelihood (R's BradleyTerry2 ``br = TRUE``), for
    two-outcome data (ties split half and half or dropped); its estimates are finite even
    where a variant won every comparison, so only a connected design is required.
    """
    ties = resolve_ties(comparisons, ties)
    if bias_reduction and ties == "davidson":
        raise UserError(
            "bias reduction (Firth) is defined here for two-outcome Bradley-Terry: with ties in "
            "the data pass --ties half or --ties drop"
        )
    check_estimable(comparisons, prior=1.0 if bias_reduction else prior, ties_link=ties != "drop")
    if reference is not None and reference not in comparisons.items:
        raise UserError(
            f"reference variant {reference!r} does not occur in the pair trials "
            f"(variants: {', '.join(comparisons.items)})"
        )
    link = DavidsonLink() if ties == "davidson" else LogitLink(ties)  # type: ignore[arg-type]
    return PairedModel(
        comparisons,
        link,
        position=position,
        prior=prior,
        reference=reference,
        bias_reduction=bias_reduction,
    )


def fit_bradley_terry(
    comparisons: PairedComparisons,
    *,
    ties: TieHandling = "auto",
    position: bool = False,
    prior: float = 0.0,
    reference: str | None = None,
    bias_reduction: bool = False,
) -> PairedFit:
    """Maximum-likelihood (or, with ``prior`` > 0, L2-penalised) Bradley-Terry scores.

    ``reference=None`` reports sum-zero scores; a variant name reports scores relative to
    it (the reference then has score 0 and standard error 0). ``position`` adds the
    left/right effect gamma; ties follow ``ties`` (see ``resolve_ties``). Raises a
    UserError for designs where the scores do not exist (see ``check_estimable``).
    """
    model = bradley_terry_model(
        comparisons,
        ties=ties,
        position=position,
        prior=prior,
        reference=reference,
        bias_reduction=bias_reduction,
    )
    return model.fit()


def tie_probability_at_equal_scores(fit: PairedFit) -> float:
    """Davidson's nu / (2 + nu): how often two equally good variants are called a tie."""
    nu = np.exp(fit.param("tie_log_nu")[0])
    return float(nu / (2 + nu))
