"""Mixed-effects logistic model of pairwise choices (statsmodels BinomialBayesMixedGLM).

    logit P(left wins) = gamma + sum_k beta_k x_k + u_participant + v_prompt,
    x_k = [left is k] - [right is k]  (k != reference),

i.e. ``win ~ score difference + left + (1|participant) + (1|prompt)``: beta are the
variant scores on the Bradley-Terry logit scale relative to the reference, gamma the
population position bias ("left"), and the random intercepts each participant's and each
prompt's own deviation from it. Their standard deviations say how much the left/right
habit varies between people (a large one flags careless responders) and between prompts.

Fitted by variational Bayes (``fit_vb``, L-BFGS-B), which statsmodels provides for
crossed random effects; ties carry no binary outcome and are left out (and counted).
With no random-effect variance the fixed effects coincide with the Bradley-Terry fit
with a position effect, which the tests check.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm
from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

from hprune.errors import UserError


@dataclass(frozen=True)
class MixedLogitResult:
    fixed: pd.DataFrame  # term, variant, estimate, sd (posterior), ci_low, ci_high
    random: pd.DataFrame  # component, sd (exp of the posterior mean log-SD), log_sd, log_sd_sd
    n_trials: int
    n_ties_dropped: int


def mixed_logit(
    pairs: pd.DataFrame, reference: str, *, level: float = 0.95, position: bool = True
) -> MixedLogitResult:
    """Fit the mixed logit to answered pair trials (responses-export rows).

    ``position=False`` leaves out the "left" term (when the design cannot identify it, or
    the data record no sides). statsmodels' refusals (e.g. every decided answer the same
    side, so the outcome never varies) become a UserError.
    """
    variants = sorted(
        set(pairs["left_variant"].astype(str)) | set(pairs["right_variant"].astype(str))
    )
    if reference not in variants:
        raise UserError(f"reference variant {reference!r} does not occur in the pair trials")
    if len(variants) < 2:
        raise UserError("the mixed logit needs at least two variants")
    decided = pairs[pairs["choice"].isin(["left", "right"])]
    if decided.empty:
        raise UserError("every pair trial is a tie: the mixed logit has no outcome to model")
    others = [v for v in variants if v != reference]
    data = pd.DataFrame(
        {
            "win": (decided["choice"] == "left").to_numpy(float),
            "left": 1.0,
            "participant": decided["participant"].astype(str).to_numpy(),
            "prompt": decided["prompt_id"].astype(str).to_numpy(),
        }
    )
    left = decided["left_variant"].astype(str).to_numpy()
    right = decided["right_variant"].astype(str).to_numpy()
    for k, name in enumerate(others):
        data[f"x{k}"] = (left == name).astype(float) - (right == name).astype(float)
    vc = {}
    if data["participant"].nunique() > 1:
        vc["participant"] = "0 + C(participant)"
    if data["prompt"].nunique() > 1:
        vc["prompt"] = "0 + C(prompt)"
    if not vc:
        raise UserError("the mixed logit needs more than one participant or prompt")
    if data["win"].nunique() < 2:
        raise UserError(
            "every decided answer chose the same side, so the outcome never varies; the mixed "
            "logit has nothing to model"
        )
    lead = ["left"] if position else []
    terms = " + ".join(lead + [f"x{k}" for k in range(len(others))])
    try:
        model = BinomialBayesMixedGLM.from_formula(f"win ~ 0 + {terms}", vc, data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = model.fit_vb(fit_method="L-BFGS-B")
    except (ValueError, np.linalg.LinAlgError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"statsmodels could not fit the mixed logit ({first})") from exc
    z = float(norm.ppf(0.5 + level / 2))
    fixed = pd.DataFrame(
        {
            "term": lead + ["score"] * len(others),
            "variant": [""] * len(lead) + others,
            "estimate": result.fe_mean,
            "sd": result.fe_sd,
        }
    )
    fixed["ci_low"] = fixed["estimate"] - z * fixed["sd"]
    fixed["ci_high"] = fixed["estimate"] + z * fixed["sd"]
    random = pd.DataFrame(
        {
            "component": model.vcp_names,
            "sd": np.exp(result.vcp_mean),
            "log_sd": result.vcp_mean,
            "log_sd_sd": result.vcp_sd,
        }
    )
    return MixedLogitResult(fixed, random, len(decided), int((pairs["choice"] == "tie").sum()))
