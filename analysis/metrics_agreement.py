"""Humans against automatic metrics.

- System level: over variants, Kendall's tau and Spearman's rho between the human scores
  (Bradley-Terry) and each metric's mean, with the metric oriented so that a positive
  correlation means agreement. The bootstrap CI pairs each round's human scores (resampled
  participants) with the metric means over resampled prompts (the same plan's prompt
  weights, or prompts drawn from the plan's seed).
- Item level: for each pair of images that people compared, does the metric prefer the
  image the majority preferred? Set against the human ceiling: how often one person agrees
  with the majority of the *other* people who judged the same pair (leave-one-out), so
  that "the metric agrees 70%" can be read against "people agree 78% with each other".
- The paper's automatic degradation, 1/2 (dGenEval / GenEval_0 + dHPSv2 / HPSv2_0), with
  d = reference - variant: SD3.5-LT 0.71 / 30.29 -> 0.69 / 28.15 gives 4.9%.

metrics.csv files are read with ``hprune.contracts.metrics.read_metrics`` (the same reader the
scorers' writer pairs with) and checked here for what only shows when several files meet:
an (image, metric) given twice, one metric in two versions (``hpsv2`` beside ``hpsv2.1``,
or one name with two different ``version`` entries in the metrics.json sidecars), and a
metric whose direction (higher_is_better) disagrees between rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr

from analysis.bootstrap import BootstrapPlan, percentile_interval
from hprune.contracts.metrics import METRIC_COLUMNS, read_metric_infos, read_metrics
from hprune.errors import UserError

_VERSION_SUFFIX = re.compile(r"[-_.]?v?\d+(\.\d+)*$")


def metric_family(name: str) -> str:
    """A metric name without its version suffix: ``hpsv2.1`` and ``hpsv2`` -> ``hps``."""
    return _VERSION_SUFFIX.sub("", name.strip().lower()) or name


def load_metrics(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Read and combine metrics.csv files; UserError for anything that would mislead."""
    tables, versions = [], {}
    for path in paths:
        table = read_metrics(path)
        table["source"] = str(path)
        tables.append(table)
        for name, info in read_metric_infos(path).items():
            if info.version and versions.setdefault(name, (info.version, path))[0] != info.version:
                raise UserError(
                    f"metric {name!r} comes in two versions: {versions[name][0]!r} "
                    f"({versions[name][1]}) and {info.version!r} ({path})"
                )
    if not tables:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    metrics = pd.concat(tables, ignore_index=True)
    check_metrics(metrics)
    return metrics


def check_metrics(metrics: pd.DataFrame) -> None:
    """Duplicate keys, mixed versions of one metric, contradictory directions."""
    duplicated = metrics.duplicated(subset=["image_id", "metric"], keep=False)
    if duplicated.any():
        first = metrics[duplicated].iloc[0]
        n = int(metrics[duplicated].groupby(["image_id", "metric"]).ngroups)
        raise UserError(
            f"the metrics give {n} (image, metric) key(s) more than once, e.g. metric "
            f"{first['metric']!r} for image {first['image_id']!r}"
        )
    names = sorted(metrics["metric"].unique())
    families: dict[str, list[str]] = {}
    for name in names:
        families.setdefault(metric_family(name), []).append(name)
    mixed = {f: n for f, n in families.items() if len(n) > 1}
    if mixed:
        members = next(iter(mixed.values()))
        raise UserError(
            f"the metrics mix versions of one metric: {', '.join(members)}; "
            "score every image with one version"
        )
    direction = metrics.groupby("metric")["higher_is_better"].nunique()
    if (direction > 1).any():
        raise UserError(
            f"metric {direction[direction > 1].index[0]!r} is both higher- and lower-is-better"
        )
    if not np.isfinite(metrics["value"].to_numpy(float)).all():
        raise UserError("some metric values are not finite numbers")


def variant_means(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean of every metric per variant (rows: variants, columns: metrics)."""
    return metrics.pivot_table(index="variant", columns="metric", values="value", aggfunc="mean")


def _orientation(metrics: pd.DataFrame) -> dict[str, float]:
    return {
        m: (1.0 if bool(h) else -1.0)
        for m, h in metrics.groupby("metric")["higher_is_better"].first().items()
    }


def _prompt_means(metrics: pd.DataFrame, metric: str, variants: Sequence[str], prompts):
    """(Q, V) per-prompt mean of one metric (NaN where a variant lacks that prompt)."""
    table = metrics[metrics["metric"] == metric].pivot_table(
        index="prompt_id", columns="variant", values="value", aggfunc="mean"
    )
    return table.reindex(index=list(prompts), columns=list(variants)).to_numpy(float)


def _weighted_column_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, V) means of (Q, V) values under (B, Q) weights, skipping NaN cells."""
    present = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(present, values, 0.0)) / (weights @ present)


def system_agreement(
    human: pd.Series,
    metrics: pd.DataFrame,
    *,
    human_draws: np.ndarray | None = None,
    plan: BootstrapPlan | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """Kendall tau and Spearman rho between human scores and each metric, over variants.

    ``human`` maps variant -> score; ``human_draws`` are the bootstrap rounds of those
    scores (columns in ``human.index`` order, rows = ``plan``'s rounds).
    """
    orientation = _orientation(metrics)
    means = variant_means(metrics)
    rows = []
    for metric in sorted(orientation):
        common = [v for v in human.index if v in means.index and np.isfinite(means.loc[v, metric])]
        row = {"metric": metric, "variants": len(common)}
        if len(common) < 3:
            rows.append(
                {**row, "note": "needs at least 3 variants with both human and metric scores"}
            )
            continue
        h = human[common].to_numpy(float)
        m = orientation[metric] * means.loc[common, metric].to_numpy(float)
        row["kendall_tau"] = kendalltau(h, m).statistic
        row["spearman_rho"] = spearmanr(h, m).statistic
        if human_draws is not None and plan is not None:
            columns = [list(human.index).index(v) for v in common]
            hb = human_draws[:, columns]
            prompts = sorted(metrics["prompt_id"].astype(str).unique())
            if plan.prompts is not None and set(prompts) <= set(plan.prompts):
                index = {p: i for i, p in enumerate(plan.prompts)}
                weights = plan.prompt_weights[:, [index[p] for p in prompts]].astype(float)
            else:
                rng = np.random.default_rng([plan.seed, 1])
                weights = rng.multinomial(
                    len(prompts), np.full(len(prompts), 1 / len(prompts)), plan.rounds
                )
            per_prompt = _prompt_means(metrics, metric, common, prompts)
            mb = orientation[metric] * _weighted_column_means(per_prompt, weights.astype(float))
            taus, rhos = [], []
            for b in range(plan.rounds):
                ok = np.isfinite(hb[b]).all() and np.isfinite(mb[b]).all()
                taus.append(kendalltau(hb[b], mb[b]).statistic if ok else np.nan)
                rhos.append(spearmanr(hb[b], mb[b]).statistic if ok else np.nan)
            stats = np.column_stack([taus, rhos])
            stats = stats[np.isfinite(stats).all(axis=1)]
            if len(stats):
                low, high = percentile_interval(stats, level)
                row.update(tau_low=low[0], tau_high=high[0], rho_low=low[1], rho_high=high[1])
        rows.append(row)
    columns = ["metric", "variants", "kendall_tau", "tau_low", "tau_high", "spearman_rho",
               "rho_low", "rho_high", "note"]  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=columns)


def item_agreement(pairs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Per criterion and metric: metric vs human majority per image pair, and the ceiling.

    Columns: ``items`` (image pairs with a human majority and a metric preference),
    ``metric_vs_majority``, ``metric_vs_votes`` (share of individual votes the metric
    agrees with) and ``human_vs_others`` (share of votes agreeing with the majority of
    the other votes on the same pair: the human-human ceiling).
    """
    decided = pairs[pairs["choice"].isin(["left", "right"])].dropna(
        subset=["left_image", "right_image"]
    )
    columns = ["criterion", "metric", "items", "metric_vs_majority", "metric_vs_votes",
               "human_vs_others", "votes"]  # fmt: skip
    if decided.empty or metrics.empty:
        return pd.DataFrame(columns=columns)
    left, right = decided["left_image"].astype(str), decided["right_image"].astype(str)
    first = left.where(left < right, right)
    second = right.where(left < right, left)
    chose_first = (decided["choice"] == "left") == (left == first)
    votes = (
        pd.DataFrame(
            {
                "criterion": decided["criterion"].astype(str),
                "a": first,
                "b": second,
                "for_a": chose_first,
            }
        )
        .groupby(["criterion", "a", "b"])["for_a"]
        .agg(n="size", a_votes="sum")
        .reset_index()
    )
    votes["b_votes"] = votes["n"] - votes["a_votes"]
    a, b = votes["a_votes"].to_numpy(float), votes["b_votes"].to_numpy(float)
    # Leave-one-out: a vote for A agrees with the others' majority when a - 1 > b.
    loo_agree = a * (a - 1 > b) + b * (b - 1 > a)
    loo_defined = a * (a - 1 != b) + b * (b - 1 != a)
    majority = np.sign(a - b)
    orientation = _orientation(metrics)
    rows = []
    for metric, sign in sorted(orientation.items()):
        value = metrics[metrics["metric"] == metric].set_index("image_id")["value"]
        va = votes["a"].map(value).to_numpy(float)
        vb = votes["b"].map(value).to_numpy(float)
        pick = np.sign(sign * (va - vb))  # +1: metric prefers A
        usable = np.isfinite(pick) & (pick != 0)
        for criterion in sorted(votes["criterion"].unique()):
            c = (votes["criterion"] == criterion).to_numpy() & usable
            with_majority = c & (majority != 0)
            agree_votes = np.where(pick > 0, a, b)
            rows.append(
                {
                    "criterion": criterion,
                    "metric": metric,
                    "items": int(with_majority.sum()),
                    "metric_vs_majority": (pick[with_majority] == majority[with_majority]).mean()
                    if with_majority.any()
                    else np.nan,
                    "metric_vs_votes": agree_votes[c].sum() / (a[c] + b[c]).sum()
                    if c.any()
                    else np.nan,
                    "human_vs_others": loo_agree[c].sum() / loo_defined[c].sum()
                    if loo_defined[c].sum() > 0
                    else np.nan,
                    "votes": int((a[c] + b[c]).sum()),
                }
            )
    return pd.DataFrame(rows, columns=columns)


def automatic_degradation(geneval_0: float, geneval: float, hps_0: float, hps: float) -> float:
    """The paper's 1/2 (dGenEval / GenEval_0 + dHPSv2 / HPSv2_0), d = original - variant."""
    return 0.5 * ((geneval_0 - geneval) / geneval_0 + (hps_0 - hps) / hps_0)


def degradation_by_metric(metrics: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Each metric's relative drop from ``reference`` per variant, and the paper's combination.

    The combination needs one GenEval-family metric (``geneval`` or ``mini-geneval``) and
    one HPS-family metric; the column is absent otherwise.
    """
    means = variant_means(metrics)
    if reference not in means.index:
        raise UserError(
            f"reference variant {reference!r} has no metric values (variants: "
            f"{', '.join(map(str, means.index))})"
        )
    orientation = _orientation(metrics)
    table = pd.DataFrame(index=means.index.drop(reference))
    for metric in means.columns:
        ref = means.loc[reference, metric]
        table[f"{metric}"] = means.loc[table.index, metric]
        table[f"{metric}_drop"] = orientation[metric] * (ref - means.loc[table.index, metric]) / ref
    geneval = [m for m in means.columns if metric_family(m) in {"geneval", "mini-geneval"}]
    hps = [m for m in means.columns if metric_family(m) in {"hps", "hpsv"}]
    if len(geneval) == 1 and len(hps) == 1:
        g, h = geneval[0], hps[0]
        table["automatic_degradation"] = [
            automatic_degradation(
                means.loc[reference, g], means.loc[v, g], means.loc[reference, h], means.loc[v, h]
            )
            for v in table.index
        ]
    return table.reset_index(names="variant")
