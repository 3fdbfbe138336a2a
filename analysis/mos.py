"""Mean opinion scores (MOS) of rating trials, and the paper's "perceived degradation".

The HierarchicalPrune user study (85 participants, 5-point scale, Image Quality and Text
Alignment) reports per-system means with 95% CIs and a perceived degradation

    degradation = (MOS_original - MOS_method) / MOS_method,

e.g. 4.38 vs 4.16 -> 5.3% and 4.33 vs 4.13 -> 4.8% (note the method's MOS, not the
original's, is the denominator; ``perceived_degradation`` keeps the paper's arithmetic).

Three views of the same ratings:
- ``mos_table``: mean, SD and the t-interval per variant and criterion (what the paper
  prints), plus a participant-cluster bootstrap interval that respects that one person's
  ratings are correlated;
- ``mos_mixed_model``: rating ~ variant + (1 | participant) + (1 | prompt), crossed random
  intercepts, REML (statsmodels MixedLM with sparse variance-component designs); the
  variant effects are differences from the reference with model-based SEs;
- ``degradation_table``: the paper's degradation with a bootstrap CI from the same
  resampled studies as every other statistic of the report.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from analysis.bootstrap import BootstrapPlan, percentile_interval, percentile_interval_by_column
from analysis.intervals import mean_halfwidth
from hprune.errors import UserError


def rating_trials(responses: pd.DataFrame) -> pd.DataFrame:
    """Rating trials with a ``variant`` column (the rated image's variant)."""
    ratings = responses[responses["kind"] == "rating"].copy()
    ratings["variant"] = ratings["left_variant"].astype(str)
    ratings["participant"] = ratings["participant"].astype(str)
    ratings["prompt_id"] = ratings["prompt_id"].astype(str)
    ratings["criterion"] = ratings["criterion"].astype(str)
    ratings["rating"] = ratings["rating"].astype(float)
    if not np.isfinite(ratings["rating"]).all():
        raise UserError("some rating trials have no numeric rating")
    return ratings.reset_index(drop=True)


def perceived_degradation(mos_original: float | np.ndarray, mos_method: float | np.ndarray):
    """(MOS_orig - MOS_method) / MOS_method, the paper's perceived degradation."""
    return (np.asarray(mos_original) - np.asarray(mos_method)) / np.asarray(mos_method)


def mos_table(ratings: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """Per criterion and variant: n, mean, SD, t-interval of the mean."""
    g = ratings.groupby(["criterion", "variant"], sort=True)["rating"]
    table = g.agg(n="count", mean="mean", sd="std").reset_index()
    table["participants"] = (
        ratings.groupby(["criterion", "variant"], sort=True)["participant"].nunique().to_numpy()
    )
    halfwidth = mean_halfwidth(table["sd"], table["n"], level)
    table["ci_low"] = table["mean"] - halfwidth
    table["ci_high"] = table["mean"] + halfwidth
    return table


def _cells(ratings: pd.DataFrame, plan: BootstrapPlan):
    """Sums and counts of ratings per (participant, prompt, criterion x variant) cell."""
    keys = ratings["criterion"] + "\x1f" + ratings["variant"]
    columns = sorted(keys.unique())
    column = keys.map({k: i for i, k in enumerate(columns)}).to_numpy()
    p = plan.participant_codes(ratings["participant"])
    q = plan.prompt_codes(ratings["prompt_id"])
    return columns, column, p, q


def bootstrap_means(ratings: pd.DataFrame, plan: BootstrapPlan) -> tuple[list[str], np.ndarray]:
    """Weighted means per criterion x variant in every bootstrap round: (rounds, columns).

    With participant weights only this is one matrix product; with prompt weights each
    rating is weighted by w_participant * w_prompt.
    """
    columns, column, p, q = _cells(ratings, plan)
    y = ratings["rating"].to_numpy(float)
    n_cols, n_people = len(columns), len(plan.participants)
    if q is None:
        sums = np.zeros((n_people, n_cols))
        counts = np.zeros((n_people, n_cols))
        np.add.at(sums, (p, column), y)
        np.add.at(counts, (p, column), 1.0)
        w = plan.participant_weights
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (w @ sums) / (w @ counts)
    else:
        means = np.empty((plan.rounds, n_cols))
        for b in range(plan.rounds):
            w = plan.participant_weights[b, p] * plan.prompt_weights[b, q]
            with np.errstate(invalid="ignore", divide="ignore"):
                means[b] = np.bincount(column, w * y, n_cols) / np.bincount(column, w, n_cols)
    return columns, means


def add_bootstrap_intervals(
    table: pd.DataFrame, ratings: pd.DataFrame, plan: BootstrapPlan, *, level: float = 0.95
) -> pd.DataFrame:
    """``boot_low``/``boot_high``: participant-cluster percentile intervals of each mean."""
    columns, means = bootstrap_means(ratings, plan)
    low, high = percentile_interval_by_column(means, level)
    index = {c: i for i, c in enumerate(columns)}
    keys = (table["criterion"] + "\x1f" + table["variant"]).map(index).to_numpy()
    return table.assign(boot_low=low[keys], boot_high=high[keys])


def degradation_table(
    ratings: pd.DataFrame,
    reference: str,
    *,
    plan: BootstrapPlan | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """Perceived degradation of every variant against ``reference``, per criterion."""
    if reference not in set(ratings["variant"]):
        raise UserError(
            f"reference variant {reference!r} has no rating trials "
            f"(rated: {', '.join(sorted(set(ratings['variant'])))})"
        )
    means = ratings.groupby(["criterion", "variant"])["rating"].mean()
    rows = []
    draws = None
    if plan is not None:
        columns, draws = bootstrap_means(ratings, plan)
        index = {c: i for i, c in enumerate(columns)}
    for criterion in sorted(ratings["criterion"].unique()):
        if (criterion, reference) not in means.index:
            continue
        ref_mos = means[(criterion, reference)]
        for variant in sorted(ratings.loc[ratings.criterion == criterion, "variant"].unique()):
            if variant == reference:
                continue
            row = {
                "criterion": criterion,
                "variant": variant,
                "mos_reference": ref_mos,
                "mos_variant": means[(criterion, variant)],
                "degradation": float(perceived_degradation(ref_mos, means[(criterion, variant)])),
                "ci_low": np.nan,
                "ci_high": np.nan,
            }
            if draws is not None:
                ref_d = draws[:, index[f"{criterion}\x1f{reference}"]]
                var_d = draws[:, index[f"{criterion}\x1f{variant}"]]
                d = perceived_degradation(ref_d, var_d)[:, None]
                low, high = percentile_interval(d, level)
                row["ci_low"], row["ci_high"] = float(low[0]), float(high[0])
            rows.append(row)
    return pd.DataFrame(rows)


def mos_mixed_model(
    ratings: pd.DataFrame, reference: str, *, criterion: str | None = None, level: float = 0.95
) -> tuple[pd.DataFrame, dict[str, float]]:
    """rating ~ variant + (1|participant) + (1|prompt), crossed, REML.

    Returns the variant effects (difference from ``reference``, SE, CI, p; the reference's
    row holds the intercept, i.e. its model-based MOS) and the variance components
    (participant, prompt, residual). Needs at least two participants and two variants.
    """
    data = ratings if criterion is None else ratings[ratings["criterion"] == criterion]
    variants = sorted(data["variant"].unique())
    if reference not in variants:
        raise UserError(f"reference variant {reference!r} has no ratings here")
    if len(variants) < 2:
        raise UserError("a mixed model of ratings needs at least two rated variants")
    if data["participant"].nunique() < 2:
        raise UserError("a mixed model with participant effects needs at least two participants")
    frame = pd.DataFrame(
        {
            "rating": data["rating"].to_numpy(float),
            "v": pd.Categorical(data["variant"], categories=variants).codes,
            "participant": data["participant"].to_numpy(str),
            "prompt": data["prompt_id"].to_numpy(str),
            "group": 1,
        }
    )
    ref_code = variants.index(reference)
    vc = {"participant": "0 + C(participant)"}
    if frame["prompt"].nunique() > 1:
        vc["prompt"] = "0 + C(prompt)"
    model = smf.mixedlm(
        f"rating ~ C(v, Treatment(reference={ref_code}))",
        frame,
        groups="group",
        re_formula="0",
        vc_formula=vc,
        use_sparse=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            result = model.fit(reml=True)
        except (np.linalg.LinAlgError, RuntimeError, ValueError) as exc:
            # e.g. "Factor is exactly singular": too few ratings for the variance components
            raise UserError(f"the ratings cannot identify the variance components ({exc})") from exc
    ci = result.conf_int(alpha=1 - level)
    rows = []
    for name in result.fe_params.index:
        code = ref_code if name == "Intercept" else int(name.split("[T.")[1].rstrip("]"))
        rows.append(
            {
                "variant": variants[code],
                "term": "intercept (reference MOS)" if name == "Intercept" else "difference",
                "estimate": result.fe_params[name],
                "se": result.bse_fe[name],
                "ci_low": ci.loc[name, 0],
                "ci_high": ci.loc[name, 1],
                "p": result.pvalues[name],
            }
        )
    components = {"residual": float(result.scale)}
    for name, value in zip(model.exog_vc.names, result.vcomp, strict=True):
        components[name] = float(value)
    components["converged"] = bool(result.converged)
    return pd.DataFrame(rows), components
