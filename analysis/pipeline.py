"""The whole analysis of one study, from checked responses to the tables of the report.

``run_analysis`` does, in order:
1. quality control of every participant and the exclusion filter (``analysis.qc``);
2. for the responses after exclusions (primary) and, when anybody was excluded, for all
   responses: per criterion, Bradley-Terry (position effect, Davidson ties) with Hessian
   and cluster-bootstrap intervals, Thurstone JOD, rank intervals, the pairwise
   significance matrix, win-rate and count matrices, the mixed logit, per-category fits;
   and, for rating trials, MOS tables, the paper's perceived degradation and the MixedLM;
3. humans against metrics when metrics.csv files are given.

Problems that make a number meaningless stop the run with a UserError; problems that only
limit it (one participant, a criterion without a finite MLE while others have one,
metrics for other variants) become labelled warnings that the report shows first.
Everything random comes from one seed, so the tables are the same on every run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.bootstrap import (
    BootstrapDraws,
    BootstrapPlan,
    bootstrap_paired,
    make_plan,
    trial_cells,
)
from analysis.bradley_terry import (
    bradley_terry_model,
    resolve_ties,
    tie_probability_at_equal_scores,
)
from analysis.comparisons import LEFT, TIE, check_estimable, from_pairs
from analysis.design import resolve_position
from analysis.estimation import PairedFit
from analysis.intervals import (
    MIN_COMPARISONS,
    MIN_EACH_OUTCOME,
    comparison_counts,
    reliability,
    reported_interval,
    sum_zero_inflation,
)
from analysis.metrics_agreement import degradation_by_metric, item_agreement, system_agreement
from analysis.mixed_logit import MixedLogitResult, mixed_logit
from analysis.mos import (
    add_bootstrap_intervals,
    degradation_table,
    mos_mixed_model,
    mos_table,
    rating_trials,
)
from analysis.progress import Progress
from analysis.pwcmp import GaussianPriorJODModel
from analysis.qc import QCOptions, QCResult, apply_exclusions, run_qc
from analysis.significance import pairwise_tests, significance_matrix
from analysis.thurstone import thurstone_model
from hprune.contracts.manifest import read_manifest
from hprune.errors import UserError

#: --scenes value -> the responses column that names a scene.
SCENE_COLUMNS = {"prompt": "prompt_id", "category": "category"}

# Fewer finite rounds than this give no percentile interval worth reporting.
MIN_BOOTSTRAP_ROUNDS = 2


@dataclass(frozen=True)
class AnalysisOptions:
    """Everything that changes a number in the report (printed in it, for reproduction)."""

    reference: str | None = None  # scores relative to it; MOS/metric degradation need it
    ties: str = "auto"  # auto (Davidson when there are ties), davidson, half, drop
    position: bool | None = None  # the left/right covariate (None: when the design allows)
    prior: float = 0.0  # explicit L2 prior on BT scores (0: maximum likelihood)
    bias_reduction: bool = False  # Firth's bias-reduced BT (R BradleyTerry2 br = TRUE)
    jod_prior: str = "none"  # Thurstone JOD: none (maximum likelihood) or gaussian (pwcmp)
    scenes: str | None = None  # per-scene JOD and outlier analysis: prompt or category
    rounds: int = 1000  # cluster-bootstrap rounds (0: Hessian intervals only)
    bootstrap_prompts: bool = False  # two-way bootstrap (participants x prompts)
    seed: int = 0
    workers: int | None = None  # bootstrap processes (None: all available cores)
    level: float = 0.95
    correction: str = "holm"  # holm, bh, bonferroni, none
    mixed_models: bool = True
    exclusions: bool = True
    qc: QCOptions = field(default_factory=QCOptions)
    known_variants: tuple[str, ...] | None = None
    progress: bool = False


@dataclass
class CriterionResult:
    criterion: str
    scores: pd.DataFrame
    bt: PairedFit
    thurstone: PairedFit
    draws: BootstrapDraws | None
    tests: pd.DataFrame
    significance: pd.DataFrame
    win_rate: pd.DataFrame
    counts: pd.DataFrame
    parameters: pd.DataFrame
    position: bool = False  # whether the fits include the position effect
    position_note: str = ""  # why not, when it was left out
    ties: str = "drop"  # the tie handling used (auto resolved)
    prior_effect: pd.DataFrame | None = None  # scores with and without --prior
    prior_note: str = ""
    mixed: MixedLogitResult | None = None
    categories: pd.DataFrame | None = None
    scenes: pd.DataFrame | None = None


@dataclass
class DatasetResult:
    label: str
    n_participants: int
    n_trials: int
    pairs: dict[str, CriterionResult] = field(default_factory=dict)
    mos: pd.DataFrame | None = None
    degradation: pd.DataFrame | None = None
    mos_mixed: dict[str, pd.DataFrame] = field(default_factory=dict)
    mos_components: dict[str, dict] = field(default_factory=dict)
    plan: BootstrapPlan | None = None


@dataclass
class AnalysisResult:
    options: AnalysisOptions
    summary: pd.DataFrame
    qc: QCResult
    primary: DatasetResult
    all_data: DatasetResult | None
    metrics_system: dict[str, pd.DataFrame] = field(default_factory=dict)
    metrics_items: pd.DataFrame | None = None
    metrics_degradation: pd.DataFrame | None = None
    metrics: pd.DataFrame | None = None
    warnings: list[str] = field(default_factory=list)
    provenance: pd.DataFrame | None = None
    sides: bool = True  # whether the data record screen sides


def safe_name(text: str) -> str:
    """A file-name-safe form of a criterion or category name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "unnamed"


# ------------------------------------------------------------------- checks


def check_variants(responses: pd.DataFrame, known: tuple[str, ...] | None) -> list[str]:
    """The variants the responses compare or rate; UserError for unknown or too few."""
    answered = responses[responses["kind"].isin(["pair", "rating"])]
    names = set(answered["left_variant"].dropna().astype(str).unique())
    right = answered.loc[answered["kind"] == "pair", "right_variant"]
    names |= set(right.dropna().astype(str).unique())
    if known is not None:
        unknown = sorted(names - set(known))
        if unknown:
            raise UserError(
                f"the responses refer to unknown variant(s) {', '.join(unknown)} "
                f"(known: {', '.join(known)})"
            )
    if not names:
        raise UserError("the responses contain no answered pair or rating trials")
    if len(names) < 2:
        raise UserError(
            f"the responses name only one variant ({next(iter(names))}): nothing to compare"
        )
    return sorted(names)


# ------------------------------------------------------------ pairwise parts


def _matrices(fit_items, comparisons) -> tuple[pd.DataFrame, pd.DataFrame]:
    wins = comparisons.wins_matrix()
    counts = comparisons.count_matrix()
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(counts > 0, wins / counts, np.nan)
    items = list(fit_items)
    return pd.DataFrame(rate, index=items, columns=items), pd.DataFrame(
        counts, index=items, columns=items
    )


def _parameters(bt: PairedFit, comparisons) -> pd.DataFrame:
    rows = [("comparisons", comparisons.n_comparisons, np.nan)]
    c = comparisons.counts
    rows.append(("tie share", c[:, TIE].sum() / c.sum(), np.nan))
    rows.append(("left chosen (of decided)", c[:, LEFT].sum() / max(c[:, :2].sum(), 1), np.nan))
    if bt.has_param("position"):
        est, se = bt.param("position")
        rows.append(("position effect gamma (logit, + = left preferred)", est, se))
    if bt.has_param("tie_log_nu"):
        est, se = bt.param("tie_log_nu")
        rows.append(("Davidson log nu", est, se))
        rows.append(("P(tie) for equal variants", tie_probability_at_equal_scores(bt), np.nan))
    rows.append(("log-likelihood", bt.loglik, np.nan))
    rows.append(("L2 prior", bt.prior, np.nan))
    return pd.DataFrame(rows, columns=["parameter", "estimate", "se"])


def _score_table(
    bt: PairedFit,
    jod: PairedFit,
    draws: BootstrapDraws | None,
    jod_draws: BootstrapDraws | None,
    comparisons,
    level: float,
    robust_se: np.ndarray | None = None,
) -> pd.DataFrame:
    """Every number of every variant, best first: the full table (the report's download)."""
    k = bt.n_items
    table = bt.to_frame(level).rename(
        columns={"score": "bt_score", "se": "bt_se", "ci_low": "wald_low", "ci_high": "wald_high"}
    )
    # Cluster-robust (sandwich) SE by participant: honest without the bootstrap too.
    table.insert(3, "robust_se", np.nan if robust_se is None else robust_se[:k])
    counts = comparison_counts(comparisons)
    table["n_comparisons"] = counts["n"].round(1).to_numpy()
    table["win_rate"] = (counts["wins"] / np.maximum(counts["n"], 1)).to_numpy()
    boot = (None, None)
    if draws is not None:
        scores = draws.columns(k)
        boot = scores.percentile(level)
        table["boot_low"], table["boot_high"] = boot
        table["simul_low"], table["simul_high"] = scores.simultaneous(level)
        table["rank_low"], table["rank_high"], table["p_best"] = scores.ranks(level)
    else:  # no bootstrap plan (e.g. one participant): same columns, honestly empty
        for column in ("boot_low", "boot_high", "simul_low", "simul_high"):
            table[column] = np.nan
        table["rank_low"], table["rank_high"], table["p_best"] = np.nan, np.nan, np.nan
    low, high, basis = reported_interval(
        table["wald_low"].to_numpy(), table["wald_high"].to_numpy(), *boot
    )
    table["ci_low"], table["ci_high"], table["interval"] = low, high, basis
    table["unreliable"] = reliability(counts).to_numpy()
    order = np.argsort(-bt.scores, kind="stable")
    ranks = np.empty(k, int)
    ranks[order] = np.arange(1, k + 1)
    table["rank"] = ranks
    table["jod"] = jod.scores
    table["jod_se"] = jod.se[:k]
    if jod_draws is not None:
        table["jod_low"], table["jod_high"] = jod_draws.columns(k).percentile(level)
    else:
        table["jod_low"], table["jod_high"] = (a[:k] for a in jod.wald_interval(level))
    table["identification"] = bt.identification
    return table.sort_values("rank").reset_index(drop=True)


def _jod_model(comparisons, options: AnalysisOptions, *, position: bool, reference):
    """Thurstone JOD: maximum likelihood, or with pwcmp's Gaussian prior (no position)."""
    if options.jod_prior == "gaussian":
        check_estimable(comparisons, prior=1.0, ties_link=True)
        return GaussianPriorJODModel(comparisons, reference=reference)
    jod_ties = "drop" if options.ties == "drop" else "half"
    return thurstone_model(
        comparisons,
        ties=jod_ties,
        position=position,
        reference=reference,  # type: ignore[arg-type]
    )


def _prior_effect(comparisons, bt: PairedFit, options: AnalysisOptions, *, position, reference,
                  ties) -> tuple[pd.DataFrame | None, str]:  # fmt: skip
    """The same fit without the prior, and one line on how much the prior moved the scores."""
    try:
        ml = bradley_terry_model(
            comparisons, ties=ties, position=position, reference=reference,
            bias_reduction=options.bias_reduction,
        ).fit()  # fmt: skip
    except UserError as exc:
        return None, (
            f"an L2 prior (precision {options.prior:g}) keeps the scores finite, but without it "
            f"they do not exist ({exc.message.split(':')[0]}): the prior alone sets how far apart "
            "the variants that won or lost everything are; read their scores as a lower bound "
            "on the gap, not an estimate"
        )
    shift = bt.scores - ml.scores
    worst = int(np.argmax(np.abs(shift)))
    table = pd.DataFrame(
        {"variant": list(bt.items), "with_prior": bt.scores, "without_prior": ml.scores,
         "shift": shift, "se_with_prior": bt.se[: bt.n_items], "se_without_prior": ml.se[: ml.n_items]}
    )  # fmt: skip
    return table, (
        f"an L2 prior (precision {options.prior:g}) drives the scores: they move by up to "
        f"{abs(shift[worst]):.2f} logits against maximum likelihood ({bt.items[worst]}: "
        f"{ml.scores[worst]:+.2f} without the prior, {bt.scores[worst]:+.2f} with it)"
    )


def analyse_pairs(
    pairs: pd.DataFrame,
    criterion: str,
    options: AnalysisOptions,
    plan: BootstrapPlan | None,
    categories: dict[str, str] | None,
    warnings: list[str],
    *,
    label: str,
    mixed: bool,
    sides: bool = True,
) -> CriterionResult:
    """Every pairwise statistic of one criterion."""
    tag = f"[{label}/{criterion}]"
    progress = Progress(options.progress)
    with progress.stage(f"{tag} pairwise analysis of {len(pairs):,} pair trials"):
        return _analyse_pairs(pairs, criterion, options, plan, categories, warnings, tag=tag,
                              label=label, mixed=mixed, sides=sides, progress=progress)  # fmt: skip


def _analyse_pairs(pairs, criterion, options, plan, categories, warnings, *, tag, label, mixed,
                   sides, progress) -> CriterionResult:  # fmt: skip
    comparisons, row, outcome = from_pairs(pairs)
    reference = options.reference if options.reference in comparisons.items else None
    if options.reference is not None and reference is None:
        warnings.append(
            f"{tag} reference {options.reference!r} is not compared in this criterion: scores "
            "are sum-zero"
        )
    ties = resolve_ties(comparisons, options.ties)  # type: ignore[arg-type]
    position, why = resolve_position(
        comparisons, options.position, sides=sides, ties_count=ties != "drop"
    )
    if why:
        warnings.append(f"{tag} position effect left out of the fits: {why}")
    bt_model = bradley_terry_model(
        comparisons, ties=ties, position=position, prior=options.prior, reference=reference,
        bias_reduction=options.bias_reduction,
    )  # fmt: skip
    bt = bt_model.fit()
    prior_table, prior_note = None, ""
    if options.prior > 0:
        prior_table, prior_note = _prior_effect(
            comparisons, bt, options, position=position, reference=reference, ties=ties
        )
        warnings.append(f"{tag} {prior_note}")
    try:
        jod_model = _jod_model(comparisons, options, position=position, reference=reference)
    except UserError:
        if options.jod_prior != "none":
            raise
        warnings.append(
            f"{tag} Thurstone JOD: the maximum-likelihood scale does not exist (a variant won or "
            "lost everything), so it is scaled with pwcmp's Gaussian prior instead"
        )
        jod_model = _jod_model(
            comparisons, replace(options, jod_prior="gaussian"), position=False,
            reference=reference,
        )  # fmt: skip
    jod = jod_model.fit()
    draws = jod_draws = None
    people = sorted(pairs["participant"].astype(str).unique())
    robust_se = None
    if len(people) >= 2:
        codes = pairs["participant"].astype(str).map({p: i for i, p in enumerate(people)})
        per_person = trial_cells(row, outcome, len(comparisons.left), codes.to_numpy())
        counts = per_person.participant_matrix(len(people)).toarray().reshape(len(people), -1, 3)
        robust_se = np.sqrt(
            np.clip(np.diag(bt_model.cluster_covariance(bt.params, counts)), 0, None)
        )
    if plan is not None:
        cells = trial_cells(
            row,
            outcome,
            len(comparisons.left),
            plan.participant_codes(pairs["participant"].astype(str)),
            plan.prompt_codes(pairs["prompt_id"].astype(str)),
        )
        with progress.stage(f"{tag} cluster bootstrap, {plan.rounds} rounds of two models"):
            draws = bootstrap_paired(
                bt_model, cells, plan, bt.params, workers=options.workers,
                progress=options.progress,
            )  # fmt: skip
            jod_draws = bootstrap_paired(
                jod_model, cells, plan, jod.params, workers=options.workers
            )
        failed = draws.n_failed
        if draws.rounds - failed < MIN_BOOTSTRAP_ROUNDS:
            warnings.append(
                f"{tag} no bootstrap intervals: only {draws.rounds - failed} of {draws.rounds} "
                "bootstrap rounds gave finite scores, so the intervals are model-based (Wald)"
            )
            draws = None
        elif failed:
            warnings.append(
                f"{tag} {failed} of {draws.rounds} bootstrap rounds resampled a design without "
                "finite scores and were left out: intervals may be too narrow"
            )
        if jod_draws.rounds - jod_draws.n_failed < MIN_BOOTSTRAP_ROUNDS:
            jod_draws = None
    k = bt.n_items
    if draws is not None and draws.rounds - draws.n_failed >= 20:
        # z-tests with the bootstrap covariance: a percentile p-value cannot fall below
        # 2 / (rounds + 1), which Holm over K(K-1)/2 pairs would push above any alpha.
        tests = pairwise_tests(
            bt.items, bt.scores, cov=draws.columns(k).cov(), correction=options.correction,
            alpha=1 - options.level,
        ).assign(test="bootstrap covariance")  # fmt: skip
    else:
        tests = pairwise_tests(
            bt.items, bt.scores, cov=bt.score_cov, correction=options.correction,
            alpha=1 - options.level,
        )  # fmt: skip
    scores = _score_table(bt, jod, draws, jod_draws, comparisons, options.level, robust_se)
    _interval_warnings(scores, bt, tag, warnings)
    order = list(scores["variant"])
    win_rate, count_matrix = _matrices(bt.items, comparisons)
    rank = {v: i for i, v in enumerate(order)}
    tests = tests.assign(_a=tests["a"].map(rank), _b=tests["b"].map(rank))
    swap = tests["_a"] > tests["_b"]
    tests.loc[swap, ["a", "b"]] = tests.loc[swap, ["b", "a"]].to_numpy()
    tests.loc[swap, "difference"] = -tests.loc[swap, "difference"]
    tests = tests.assign(_a=tests["a"].map(rank), _b=tests["b"].map(rank))
    tests = tests.sort_values(["_a", "_b"]).drop(columns=["_a", "_b"]).reset_index(drop=True)
    result = CriterionResult(
        criterion=criterion,
        scores=scores,
        bt=bt,
        thurstone=jod,
        draws=draws,
        tests=tests,
        significance=significance_matrix(tests, order),
        win_rate=win_rate.loc[order, order],
        counts=count_matrix.loc[order, order],
        parameters=_parameters(bt, comparisons),
        position=position,
        position_note=why if why else ("" if sides else "no screen sides in the data"),
        ties=ties,
        prior_effect=prior_table,
        prior_note=prior_note,
    )
    if mixed and pairs["participant"].nunique() > 1:
        ref = reference or bt.items[int(np.argmax(bt.scores))]
        try:
            with progress.stage(f"{tag} mixed logit"):
                result.mixed = mixed_logit(pairs, ref, level=options.level, position=position)
        except UserError as exc:
            warnings.append(f"{tag} mixed logit not fitted: {exc}")
    if categories:
        progress.note(f"{tag} per-category fits")
        result.categories = _category_fits(pairs, categories, options, warnings, label, criterion,
                                           sides)  # fmt: skip
    if options.scenes:
        progress.note(f"{tag} per-scene fits")
        result.scenes = _scene_fits(pairs, options, warnings, tag, sides)
    return result


def _interval_warnings(scores: pd.DataFrame, bt: PairedFit, tag: str, warnings: list[str]) -> None:
    """Few comparisons, intervals set by the Wald bound, and sum-zero spreading."""
    weak = scores[scores["unreliable"] != ""]
    if not weak.empty:
        listed = "; ".join(f"{r.variant} ({r.unreliable})" for r in weak.itertuples(index=False))
        warnings.append(
            f"{tag} unreliable intervals (fewer than {MIN_COMPARISONS} comparisons or fewer than "
            f"{MIN_EACH_OUTCOME} wins or losses): {listed}"
        )
    boot_width = scores["boot_high"] - scores["boot_low"]
    wald_width = scores["wald_high"] - scores["wald_low"]
    widened = scores[boot_width < 0.8 * wald_width]  # beyond Monte Carlo noise
    if not widened.empty:
        warnings.append(
            f"{tag} the bootstrap interval of {', '.join(widened['variant'])} is under 0.8x the "
            "width of the model-based (Wald) one: resampling few answers, or answers a prior "
            "pulls together, varies too little; the reported interval is widened to Wald there"
        )
    if bt.identification == "sum-zero" and not weak.empty:
        index = {v: i for i, v in enumerate(bt.items)}
        is_weak = np.zeros(bt.n_items, bool)
        is_weak[[index[v] for v in weak["variant"]]] = True
        ratio = sum_zero_inflation(bt.score_cov, is_weak)
        if ratio > 1.25:
            warnings.append(
                f"{tag} sum-zero scores share their mean, so the uncertainty of "
                f"{', '.join(weak['variant'])} enters every score: the other variants' standard "
                f"errors are {ratio:.1f}x what centring on the well-compared variants gives. "
                "Pass --reference to measure against one well-compared variant"
            )


def _category_fits(pairs, categories, options, warnings, label, criterion, sides=True):
    """Bradley-Terry per prompt category (Wald intervals), each with its identification."""
    category = pairs["prompt_id"].astype(str).map(categories).fillna("")
    frames = []
    for name in sorted(c for c in category.unique() if c):
        subset = pairs[category == name]
        try:
            comparisons, _, _ = from_pairs(subset)
            ties = resolve_ties(comparisons, options.ties)
            position, _ = resolve_position(
                comparisons, options.position, sides=sides, ties_count=ties != "drop"
            )
            fit = bradley_terry_model(
                comparisons, ties=ties, position=position, prior=options.prior,
                reference=options.reference if options.reference in comparisons.items else None,
                bias_reduction=options.bias_reduction,
            ).fit()  # fmt: skip
        except UserError as exc:
            warnings.append(f"[{label}/{criterion}] category {name!r} not fitted: {exc}")
            continue
        frames.append(
            fit.to_frame(options.level).assign(
                category=name,
                n=len(subset),
                position=position,
                identification=fit.identification,
            )
        )
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    return table[
        ["category", "variant", "score", "se", "ci_low", "ci_high", "n", "position",
         "identification"]
    ]  # fmt: skip


def _scene_fits(pairs, options, warnings, tag, sides=True) -> pd.DataFrame:
    """Thurstone JOD per scene (prompt or category), as pwcmp scales each scene."""
    column = SCENE_COLUMNS[options.scenes]
    frames = []
    for name, subset in pairs.groupby(pairs[column].astype(str), sort=True):
        try:
            comparisons, _, _ = from_pairs(subset)
            position, _ = resolve_position(comparisons, options.position, sides=sides)
            reference = options.reference if options.reference in comparisons.items else None
            fit = _jod_model(comparisons, options, position=position, reference=reference).fit()
        except UserError as exc:
            warnings.append(f"{tag} scene {name!r}: no JOD scale ({exc})")
            continue
        frames.append(
            fit.to_frame(options.level).assign(
                scene=name, n=len(subset), identification=fit.identification
            )
        )
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True).rename(columns={"score": "jod", "se": "jod_se"})
    return table[["scene", "variant", "jod", "jod_se", "ci_low", "ci_high", "n", "identification"]]


# --------------------------------------------------------------- datasets


def analyse_dataset(
    responses: pd.DataFrame,
    options: AnalysisOptions,
    categories: dict[str, str] | None,
    warnings: list[str],
    *,
    label: str,
    full: bool,
    sides: bool = True,
) -> DatasetResult:
    """Pairwise and MOS statistics of one version of the data (all, or after exclusions)."""
    answered = responses[responses["kind"].isin(["pair", "rating"])]
    people = sorted(answered["participant"].astype(str).unique())
    result = DatasetResult(label, len(people), len(answered))
    plan = None
    if options.rounds > 0 and len(people) >= 2:
        prompts = answered["prompt_id"].astype(str) if options.bootstrap_prompts else None
        plan = make_plan(people, rounds=options.rounds, seed=options.seed, prompts=prompts)
        result.plan = plan
    elif options.rounds > 0:
        warnings.append(
            f"[{label}] one participant: the cluster bootstrap cannot resample participants; "
            "intervals are Hessian (Wald) intervals that treat every trial as independent"
        )
    pairs = answered[answered["kind"] == "pair"]
    errors = []
    for criterion in sorted(pairs["criterion"].astype(str).unique()):
        subset = pairs[pairs["criterion"].astype(str) == criterion]
        try:
            result.pairs[criterion] = analyse_pairs(
                subset, criterion, options, plan, categories, warnings,
                label=label, mixed=full and options.mixed_models, sides=sides,
            )  # fmt: skip
        except UserError as exc:
            errors.append(f"criterion {criterion!r}: {exc.message}")
    if errors and not result.pairs:
        raise UserError("; ".join(errors))
    warnings.extend(f"[{label}] pairwise scores not fitted for {e}" for e in errors)

    ratings_rows = answered[answered["kind"] == "rating"]
    if not ratings_rows.empty:
        ratings = rating_trials(ratings_rows)
        table = mos_table(ratings, level=options.level)
        if plan is not None:
            table = add_bootstrap_intervals(table, ratings, plan, level=options.level)
        result.mos = table
        if options.reference is not None and options.reference in set(ratings["variant"]):
            result.degradation = degradation_table(
                ratings, options.reference, plan=plan, level=options.level
            )
        elif full:
            warnings.append(
                f"[{label}] no reference variant among the rated ones: perceived degradation "
                "not computed (pass --reference)"
            )
        if full and options.mixed_models:
            for criterion in sorted(ratings["criterion"].unique()):
                subset = ratings[ratings["criterion"] == criterion]
                ref = options.reference
                if ref not in set(subset["variant"]):
                    ref = subset.groupby("variant")["rating"].mean().idxmax()
                try:
                    with Progress(options.progress).stage(
                        f"[{label}/{criterion}] MOS mixed model of {len(subset):,} ratings"
                    ):
                        effects, components = mos_mixed_model(subset, ref, level=options.level)
                except UserError as exc:
                    warnings.append(f"[{label}/{criterion}] MOS mixed model not fitted: {exc}")
                    continue
                result.mos_mixed[criterion] = effects
                result.mos_components[criterion] = components
    return result


def _summary(responses: pd.DataFrame, qc: QCResult, variants: list[str]) -> pd.DataFrame:
    kinds = responses["kind"].value_counts()
    rows = [
        ("participants", responses["participant"].nunique()),
        ("participants excluded", len(qc.excluded)),
        ("variants", len(variants)),
        ("pair trials", int(kinds.get("pair", 0))),
        ("rating trials", int(kinds.get("rating", 0))),
        ("attention trials", int(kinds.get("attention", 0))),
        ("practice trials (not analysed)", int(kinds.get("practice", 0))),
        (
            "prompts",
            responses.loc[responses["kind"].isin(["pair", "rating"]), "prompt_id"].nunique(),
        ),
        (
            "criteria",
            ", ".join(
                sorted(
                    responses.loc[responses["kind"].isin(["pair", "rating"]), "criterion"]
                    .astype(str)
                    .unique()
                )
            ),
        ),
    ]
    if "participant_outcome" in responses:
        outcomes = responses.drop_duplicates("participant")["participant_outcome"].fillna(
            "unfinished"
        )
        for outcome, n in sorted(outcomes.astype(str).value_counts().items()):
            rows.append((f"participants {outcome}", int(n)))
    return pd.DataFrame(rows, columns=["item", "value"]).astype({"value": str})


def run_analysis(
    responses: pd.DataFrame,
    options: AnalysisOptions,
    *,
    metrics: pd.DataFrame | None = None,
    categories: dict[str, str] | None = None,
    provenance: pd.DataFrame | None = None,
) -> AnalysisResult:
    """Quality control, the statistics with and without exclusions, and humans vs metrics."""
    warnings: list[str] = []
    variants = check_variants(responses, options.known_variants)
    if options.reference is not None and options.reference not in variants:
        raise UserError(
            f"reference variant {options.reference!r} does not occur in the responses "
            f"(variants: {', '.join(variants)})"
        )
    sides = bool(responses.attrs.get("sides", True))
    if options.scenes == "category":
        if not categories:
            raise UserError("--scenes category needs prompt categories: pass --stimuli")
        responses = responses.assign(
            category=responses["prompt_id"].astype(str).map(categories).fillna("")
        )
    elif options.scenes not in (None, "prompt"):
        raise UserError(f"unknown --scenes {options.scenes!r} (prompt, category)")
    qc_options = options.qc
    if options.scenes:
        qc_options = replace(qc_options, scenes=SCENE_COLUMNS[options.scenes])
    progress = Progress(options.progress)
    with progress.stage(f"quality control of {responses['participant'].nunique():,} participants"):
        qc = run_qc(responses, qc_options, progress=progress.note if options.progress else None)
    warnings.extend(f"[quality control] {note}" for note in qc.notes)
    kept = apply_exclusions(responses, qc) if options.exclusions else responses
    if kept[kept["kind"].isin(["pair", "rating"])].empty:
        warnings.append("every participant was excluded: the results below use all responses")
        kept = responses
    excluded_any = len(kept) != len(responses)
    primary = analyse_dataset(
        kept, options, categories, warnings,
        label="after exclusions" if excluded_any else "all responses", full=True, sides=sides,
    )  # fmt: skip
    all_data = None
    if excluded_any:
        all_data = analyse_dataset(
            responses, options, None, warnings, label="all responses", full=False, sides=sides
        )
    result = AnalysisResult(options, _summary(responses, qc, variants), qc, primary, all_data)
    result.provenance = provenance
    result.sides = sides
    if metrics is not None and not metrics.empty:
        _metrics_part(result, kept, metrics, variants, warnings)
    result.warnings = warnings
    return result


def _metrics_part(result, kept, metrics, variants, warnings) -> None:
    result.metrics = metrics
    metric_variants = set(metrics["variant"].astype(str))
    missing = sorted(set(variants) - metric_variants)
    extra = sorted(metric_variants - set(variants))
    if missing:
        warnings.append(f"[metrics] no metric values for variant(s) {', '.join(missing)}")
    if extra:
        warnings.append(
            f"[metrics] metric values for variant(s) the responses never show: {', '.join(extra)} "
            "(left out of the correlations)"
        )
    for criterion, part in result.primary.pairs.items():
        human = part.scores.set_index("variant")["bt_score"]
        plan = result.primary.plan
        draws = None
        if part.draws is not None:
            order = [list(part.bt.items).index(v) for v in human.index]
            draws = part.draws.draws[:, order]
        result.metrics_system[criterion] = system_agreement(
            human, metrics[metrics["variant"].isin(human.index)], human_draws=draws, plan=plan,
            level=result.options.level,
        )  # fmt: skip
    pairs = kept[kept["kind"] == "pair"]
    if not pairs.empty:
        items = item_agreement(pairs, metrics)
        if items.empty or (items["items"] == 0).all():
            warnings.append(
                "[metrics] no compared image pair has metric values for both images "
                "(image ids in the responses and metrics.csv do not match)"
            )
        result.metrics_items = items
    if result.options.reference is not None and result.options.reference in metric_variants:
        result.metrics_degradation = degradation_by_metric(metrics, result.options.reference)


def read_categories(stimuli_dir: str | Path) -> dict[str, str]:
    """prompt_id -> category from a stimulus folder's manifest.csv."""
    return {row.prompt_id: row.category for row in read_manifest(stimuli_dir) if row.category}
