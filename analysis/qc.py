"""Quality control of participants, and exclusions as a reported, reproducible filter.

Per participant:
- attention / gold trials failed (``kind == "attention"`` rows with ``passed_checks``
  false);
- too-fast answers: the share of trials answered faster than ``min_rt_ms``;
- repeated-pair consistency: the same pair on the same prompt shown again, how often the
  same answer came back;
- circular triads (Kendall & Babington Smith 1940): of the variant triples whose three
  pairs she decided, the share she ordered in a cycle (a > b > c > a); a random responder
  makes 25% of triads circular, a consistent one 0%;
- observer outliers by pwcmp's leave-one-out likelihood (``analysis.pwcmp``): the others'
  answers are scaled (Thurstone, pwcmp's Gaussian prior), and her answers' likelihood under
  that scaling is judged either against hers drawn from the model (``calibrated``, the
  default: a Monte Carlo p-value, so an observer who answers like the model is excluded
  with probability ``outlier_alpha``) or against the other observers' (``pwcmp``: dist_L,
  the distance below the first quartile in interquartile ranges, > 1.5). Participants with
  fewer than ``min_trials`` pair trials get no verdict ("not assessed"), never an exclusion;
- for ratings, ITU-R BT.500's observer screening and ratings without variance
  (``analysis.bt500``);
- position bias: a two-sided binomial test of her left-choice rate against 1/2,
  Benjamini-Hochberg corrected across participants.

Agreement: Krippendorff's alpha (Krippendorff 2004; 2011, "Computing Krippendorff's
alpha-reliability") for pairwise answers (nominal, units = prompt x pair) and ratings
(interval and ordinal, units = rated image x criterion).

Attention (gold) checks follow the study's own policy: a participant is excluded when she
failed more gold trials than the study tolerates (the spec's ``attention.max_failures``,
from the export's ``attention_max_failures`` column or ``hprune analyze --spec``), unless
``max_attention_failures`` overrides it.

Exclusion is always a whole participant, for the reasons listed in ``QCOptions``; the
report prints who was excluded and why (with the Prolific ID where the export has one) and
shows the results with and without them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import binom

from analysis.bt500 import bt500_screening, uniform_ratings
from analysis.comparisons import RIGHT, TIE, trial_codes
from analysis.pwcmp import iqr_distance, outlier_likelihoods
from analysis.significance import adjust_pvalues
from hprune.errors import UserError


@dataclass(frozen=True)
class QCOptions:
    """Thresholds of the quality checks and which of them exclude a participant."""

    min_rt_ms: float = 400.0  # answers faster than this count as too fast
    max_fast_fraction: float = 0.25  # exclude above this share of too-fast answers
    max_attention_failures: int | None = None  # None: the study's policy (else 0)
    outlier_rule: str = "calibrated"  # calibrated (p < outlier_alpha) or pwcmp (dist_L)
    outlier_alpha: float = 0.005  # per-participant false-alarm rate of the calibrated rule
    outlier_distance: float = 1.5  # pwcmp's customary dist_L threshold
    min_trials: int = 10  # fewer pair trials (or screened ratings): "not assessed"
    scenes: str | None = None  # column scaled separately in the outlier analysis
    bt500: bool = True  # exclude observers that ITU-R BT.500's screening rejects
    exclude_uniform_ratings: bool = True  # exclude one rating value for every image
    position_alpha: float = 0.01  # flag position bias at this BH-adjusted level
    exclude_position_bias: bool = False
    max_circular_fraction: float | None = None  # e.g. 0.2 to exclude near-random triads
    min_consistency: float | None = None  # e.g. 0.5 to exclude inconsistent repeaters

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class QCResult:
    participants: pd.DataFrame  # one row per participant: every check, `excluded`, `reasons`
    agreement: pd.DataFrame  # Krippendorff's alpha per data kind and level
    options: QCOptions
    notes: list[str] = field(default_factory=list)
    attention_policy: str = ""  # how many failed gold trials were tolerated, and whose rule

    @property
    def excluded(self) -> list[str]:
        return self.participants.loc[self.participants["excluded"], "participant"].tolist()


# -------------------------------------------------------------- individual checks


def _check_passed(checks: pd.DataFrame) -> pd.Series:
    """Whether each attention trial was passed: the export's per-trial ``check_passed``
    where present, else ``passed_checks``."""
    passed = checks["passed_checks"].astype("boolean")
    if "check_passed" in checks:
        passed = checks["check_passed"].astype("boolean").fillna(passed)
    return passed.fillna(True).astype(bool)


def attention_failures(responses: pd.DataFrame) -> pd.DataFrame:
    """Gold attention trials per participant and how many were failed.

    Repeat checks (``check == "repeat"``, the same trial again with sides swapped) are
    consistency, not attention: they count in ``repeated_pair_consistency`` instead.
    """
    checks = responses[responses["kind"] == "attention"]
    if "check" in checks:
        checks = checks[checks["check"].astype("string").fillna("broken") != "repeat"]
    table = (
        checks.assign(failed=~_check_passed(checks))
        .groupby("participant")
        .agg(attention_trials=("failed", "size"), attention_failed=("failed", "sum"))
    )
    return table.reset_index()


def response_speed(responses: pd.DataFrame, min_rt_ms: float) -> pd.DataFrame:
    """Median response time and the share of answers faster than ``min_rt_ms``."""
    answered = responses[responses["kind"].isin(["pair", "rating"])]
    rt = answered["rt_ms"]
    table = (
        answered.assign(fast=(rt < min_rt_ms) & rt.notna())
        .groupby("participant")
        .agg(trials=("kind", "size"), median_rt_ms=("rt_ms", "median"), fast=("fast", "sum"))
    )
    table["fast_fraction"] = table["fast"] / table["trials"]
    return table.reset_index()


def _unordered(pairs: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Each pair trial as (first, second) variant in sorted order and the answer in it."""
    left, right = pairs["left_variant"].astype(str), pairs["right_variant"].astype(str)
    first = left.where(left < right, right)
    second = right.where(left < right, left)
    chose = pairs["choice"].astype(str)
    answer = np.where(
        chose == "tie",
        "tie",
        np.where((chose == "left") == (left == first), "first", "second"),
    )
    return first, second, pd.Series(answer, index=pairs.index)


def repeated_pair_consistency(
    pairs: pd.DataFrame, attention: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Among repeated (prompt, pair) trials of a participant: share of agreeing answer pairs.

    Repeat checks among ``attention`` rows (``check == "repeat"`` with ``check_passed``)
    each add one answer pair, agreeing when passed.
    """
    repeat_checks = None
    if attention is not None and "check" in attention and not attention.empty:
        repeats = attention[attention["check"].astype("string") == "repeat"]
        if not repeats.empty:
            repeat_checks = (
                repeats.assign(pairs=1.0, agreeing=_check_passed(repeats).astype(float))
                .groupby("participant")[["pairs", "agreeing"]]
                .sum()
            )
    first, second, answer = _unordered(pairs)
    frame = pd.DataFrame(
        {
            "participant": pairs["participant"].astype(str),
            "key": pairs["criterion"].astype(str)
            + "|"
            + pairs["prompt_id"].astype(str)
            + "|"
            + first
            + "|"
            + second,
            "answer": answer,
        }
    )
    sizes = frame.groupby(["participant", "key"])["answer"].transform("size")
    repeated = frame[sizes >= 2]
    if repeated.empty and repeat_checks is None:
        return pd.DataFrame(columns=["participant", "repeat_pairs", "consistency"])
    counts = repeated.groupby(["participant", "key", "answer"]).size().rename("n").reset_index()
    counts["agreeing"] = counts["n"] * (counts["n"] - 1) / 2
    per_key = counts.groupby(["participant", "key"]).agg(
        n=("n", "sum"), agreeing=("agreeing", "sum")
    )
    per_key["pairs"] = per_key["n"] * (per_key["n"] - 1) / 2
    table = per_key.groupby("participant")[["pairs", "agreeing"]].sum()
    table = table.add(repeat_checks, fill_value=0) if repeat_checks is not None else table
    table["consistency"] = table["agreeing"] / table["pairs"]
    return table.rename(columns={"pairs": "repeat_pairs"})[
        ["repeat_pairs", "consistency"]
    ].reset_index()


def count_circular_triads(preference: np.ndarray) -> tuple[int, int]:
    """(circular, decided) triads of a tournament matrix ``preference[i, j]`` = i over j.

    Only triples whose three pairs are all decided count; a directed 3-cycle is circular.
    """
    a = (preference > 0).astype(np.int64)
    decided = ((a + a.T) > 0).astype(np.int64)
    circular = int(np.trace(a @ a @ a)) // 3
    complete = int(np.trace(decided @ decided @ decided)) // 6
    return circular, complete


def circular_triads(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per participant (summed over criteria): decided triads and the circular share.

    Each (participant, criterion) is one net preference matrix over the variants (ties half
    each way), all of them built at once from integer codes; a participant who saw fewer than
    three variants in a criterion has no triads there (and no row when that holds for all).
    """
    columns = ["participant", "triads", "circular_triads", "circular_fraction"]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    items, left, right, outcome = trial_codes(pairs)
    k = len(items)
    cell, people = pd.factorize(
        pd.MultiIndex.from_arrays(
            [pairs["participant"].astype(str), pairs["criterion"].astype(str)]
        ),
        sort=True,
    )
    n_cells = len(people)
    seen = np.zeros((n_cells, k), bool)
    seen[cell, left] = seen[cell, right] = True
    winner = np.where(outcome == RIGHT, right, left)
    loser = np.where(outcome == RIGHT, left, right)
    weight = np.where(outcome == TIE, 0.0, 1.0)  # a tie adds half each way: no net effect
    circular = np.zeros(n_cells, np.int64)
    complete = np.zeros(n_cells, np.int64)
    chunk = max(1, 2_000_000 // (k * k))
    for a in range(0, n_cells, chunk):
        b = min(n_cells, a + chunk)
        mine = (cell >= a) & (cell < b)
        flat = ((cell[mine] - a) * k + winner[mine]) * k + loser[mine]
        wins = np.bincount(flat, weight[mine], (b - a) * k * k).reshape(b - a, k, k)
        beats = (wins - wins.transpose(0, 2, 1) > 0).astype(np.int64)
        decided = beats + beats.transpose(0, 2, 1)
        circular[a:b] = np.trace(beats @ beats @ beats, axis1=1, axis2=2) // 3
        complete[a:b] = np.trace(decided @ decided @ decided, axis1=1, axis2=2) // 6
    enough = seen.sum(axis=1) >= 3
    if not enough.any():
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(
        {
            "participant": people.get_level_values(0)[enough],
            "circular_triads": circular[enough],
            "triads": complete[enough],
        }
    )
    table = table.groupby("participant")[["circular_triads", "triads"]].sum().reset_index()
    with np.errstate(invalid="ignore", divide="ignore"):
        table["circular_fraction"] = table["circular_triads"] / table["triads"]
    return table


def position_bias(pairs: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Left-choice rate per participant, exact binomial test vs 1/2, BH-adjusted."""
    decided = pairs[pairs["choice"].isin(["left", "right"])]
    if decided.empty:
        return pd.DataFrame(columns=["participant", "decided", "left_rate", "position_flag"])
    table = (
        decided.assign(left=(decided["choice"] == "left").to_numpy(int))
        .groupby("participant")
        .agg(decided=("choice", "size"), left=("left", "sum"))
    )
    n, k = table["decided"].to_numpy(int), table["left"].to_numpy(int)
    p = np.minimum(1.0, 2 * np.minimum(binom.cdf(k, n, 0.5), binom.sf(k - 1, n, 0.5)))
    table["left_rate"] = k / n
    table["position_p"] = p
    table["position_p_adjusted"] = adjust_pvalues(p, "bh")
    table["position_flag"] = table["position_p_adjusted"] < alpha
    return table.drop(columns=["left"]).reset_index()


def observer_outliers(
    pairs: pd.DataFrame, options: QCOptions, *, progress: Callable[[str], None] | None = None
) -> pd.DataFrame:
    """pwcmp's leave-one-out likelihood per participant, and the verdict of the chosen rule.

    Criteria are scaled separately, and so are the values of ``options.scenes`` (e.g.
    prompts, as pwcmp scales each scene on its own). ``outlier_verdict``: "outlier",
    "consistent", or "not assessed" (fewer than ``min_trials`` pair trials, or nothing of
    hers could be scored because without her some design falls apart).
    """
    columns = ["participant", "loo_log10_lik", "loo_pairs", "loo_p", "loo_dist", "outlier_verdict"]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    group = pairs["criterion"].astype(str)
    if options.scenes:
        group = group + "|" + pairs[options.scenes].astype(str)
    table = outlier_likelihoods(pairs.assign(_group=group), group="_group", progress=progress)
    trials = pairs.groupby(pairs["participant"].astype(str)).size()
    enough = table["participant"].map(trials).fillna(0).to_numpy() >= options.min_trials
    assessed = enough & np.isfinite(table["loo_log10_lik"].to_numpy(float))
    dist = np.full(len(table), np.nan)
    dist[assessed] = iqr_distance(table.loc[assessed, "loo_log10_lik"].to_numpy(float))
    table["loo_dist"] = dist
    if options.outlier_rule == "pwcmp":
        outlier = dist > options.outlier_distance
    elif options.outlier_rule == "calibrated":
        outlier = table["loo_p"].to_numpy(float) < options.outlier_alpha
    else:
        raise UserError(f"unknown outlier rule {options.outlier_rule!r} (calibrated, pwcmp)")
    table["outlier_verdict"] = np.where(
        ~assessed, "not assessed", np.where(outlier, "outlier", "consistent")
    )
    return table[columns]


def study_attention_policy(responses: pd.DataFrame) -> pd.Series | None:
    """Failed gold trials each participant's study version tolerated, from the export's
    ``attention_max_failures`` column (None when the export does not carry it)."""
    if "attention_max_failures" not in responses:
        return None
    policy = pd.to_numeric(responses["attention_max_failures"], errors="coerce")
    per_person = policy.groupby(responses["participant"].astype(str)).max()
    return None if per_person.isna().all() else per_person


# ------------------------------------------------------------------ agreement


def krippendorff_alpha(units: np.ndarray, values: np.ndarray, level: str = "nominal") -> float:
    """Krippendorff's alpha of (unit, value) observations, one per coder and unit.

    Built from the coincidence matrix o_ck (value pairs within units, each unit weighted
    1 / (m_u - 1)); alpha = 1 - D_o / D_e with the metric delta^2 of ``level``:
    nominal, ordinal, interval or ratio. Units with one value are not pairable and drop.
    """
    units = np.asarray(units)
    values = np.asarray(values, float)
    keep = np.isfinite(values)
    units, values = units[keep], values[keep]
    unit_code = pd.factorize(units)[0]  # hashing, not sorting: the order of units is moot
    levels, value_code = np.unique(values, return_inverse=True)
    counts = np.zeros((unit_code.max() + 1 if len(unit_code) else 0, len(levels)))
    np.add.at(counts, (unit_code, value_code), 1.0)
    m = counts.sum(axis=1)
    counts = counts[m >= 2]
    m = m[m >= 2]
    if len(m) == 0 or len(levels) < 2:
        return float("nan")
    scaled = counts / (m - 1)[:, None]
    coincidence = scaled.T @ counts - np.diag(scaled.sum(axis=0))
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    c, k = np.meshgrid(levels, levels, indexing="ij")
    if level == "nominal":
        delta = (c != k).astype(float)
    elif level == "interval":
        delta = (c - k) ** 2
    elif level == "ratio":
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = np.nan_to_num(((c - k) / (c + k)) ** 2)
    elif level == "ordinal":
        cum = np.cumsum(n_c)
        i, j = np.meshgrid(np.arange(len(levels)), np.arange(len(levels)), indexing="ij")
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        between = cum[hi] - np.where(lo > 0, cum[lo - 1], 0.0)
        delta = (between - (n_c[i] + n_c[j]) / 2) ** 2
    else:
        raise ValueError(f"unknown level {level!r} (nominal, ordinal, interval, ratio)")
    observed = (coincidence * delta).sum() / n
    expected = (np.outer(n_c, n_c) * delta).sum() / (n * (n - 1))
    return float(1 - observed / expected) if expected > 0 else float("nan")


def agreement_table(responses: pd.DataFrame) -> pd.DataFrame:
    """Krippendorff's alpha of pairwise answers (nominal) and ratings (interval, ordinal)."""
    rows = []
    pairs = responses[responses["kind"] == "pair"]
    if not pairs.empty:
        first, second, answer = _unordered(pairs)
        units = (
            pairs["criterion"].astype(str)
            + "|"
            + pairs["prompt_id"].astype(str)
            + "|"
            + first
            + "|"
            + second
        ).to_numpy()
        values = pd.Series(answer).map({"first": 1.0, "tie": 0.0, "second": -1.0}).to_numpy()
        rows.append(
            ("pair", "nominal", krippendorff_alpha(units, values, "nominal"), len(set(units)))
        )
    ratings = responses[responses["kind"] == "rating"]
    if not ratings.empty:
        image = (
            ratings["left_image"]
            .astype("string")
            .fillna(ratings["prompt_id"].astype(str) + "|" + ratings["left_variant"].astype(str))
        )
        units = (ratings["criterion"].astype(str) + "|" + image.astype(str)).to_numpy()
        for level in ("interval", "ordinal"):
            rows.append(
                (
                    "rating",
                    level,
                    krippendorff_alpha(units, ratings["rating"].to_numpy(float), level),
                    len(set(units)),
                )
            )
    return pd.DataFrame(rows, columns=["data", "level", "alpha", "units"])


# ------------------------------------------------------------------ the filter


def run_qc(
    responses: pd.DataFrame,
    options: QCOptions | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> QCResult:
    """Every check for every participant, and who is excluded for which reasons.

    ``progress`` receives a line per step of the leave-one-out outlier analysis."""
    options = options or QCOptions()
    notes: list[str] = []
    people = pd.DataFrame({"participant": sorted(responses["participant"].astype(str).unique())})
    pairs = responses[(responses["kind"] == "pair") & responses["choice"].notna()]
    ratings = responses[responses["kind"] == "rating"]
    tables = [
        attention_failures(responses),
        response_speed(responses, options.min_rt_ms),
        repeated_pair_consistency(pairs, responses[responses["kind"] == "attention"]),
        circular_triads(pairs),
        position_bias(pairs, options.position_alpha),
        bt500_screening(ratings, min_ratings=options.min_trials),
        uniform_ratings(ratings, min_ratings=options.min_trials),
    ]
    if pairs["participant"].nunique() >= 3:
        tables.append(observer_outliers(pairs, options, progress=progress))
    elif not pairs.empty:
        notes.append(
            "fewer than 3 participants answered pair trials: no leave-one-out outlier check"
        )
    table = people
    for t in tables:
        if len(t.columns) > 1:
            table = table.merge(t.astype({"participant": str}), on="participant", how="left")
    for column in ("attention_failed", "attention_trials"):
        if column not in table:
            table[column] = 0
        table[column] = table[column].fillna(0).astype(int)
    if "outlier_verdict" in table:
        table["outlier_verdict"] = table["outlier_verdict"].fillna("no pair trials")
    if responses["rt_ms"].isna().all():
        notes.append("no response times in the export: the too-fast check was skipped")
    prolific = participant_ids(responses)
    if prolific is not None:
        table.insert(1, "prolific_pid", table["participant"].map(prolific))

    tolerated, policy = _attention_policy(responses, table, options)
    reasons = [[] for _ in range(len(table))]

    def flag(mask: pd.Series, text) -> None:
        hits = np.flatnonzero(pd.Series(mask).fillna(False).to_numpy(bool))
        for i in hits:
            reasons[i].append(text(i) if callable(text) else text)

    flag(
        table["attention_failed"] > tolerated,
        lambda i: (
            f"failed {table['attention_failed'].iloc[i]} gold attention check(s), "
            f"more than the {int(tolerated.iloc[i])} tolerated"
        ),
    )
    if "fast_fraction" in table:
        flag(
            table["fast_fraction"] > options.max_fast_fraction,
            f"over {options.max_fast_fraction:.0%} of answers faster than {options.min_rt_ms:g} ms",
        )
    if "outlier_verdict" in table:
        flag(
            table["outlier_verdict"] == "outlier", lambda i: _outlier_reason(table.iloc[i], options)
        )
    if options.bt500 and "bt500_verdict" in table:
        flag(
            table["bt500_verdict"] == "reject",
            "ITU-R BT.500 screening: ratings far from the other raters', in both directions",
        )
    if options.exclude_uniform_ratings and "uniform_ratings" in table:
        flag(table["uniform_ratings"].astype("boolean"), "the same rating for every image")
    if options.exclude_position_bias and "position_flag" in table:
        flag(table["position_flag"].astype("boolean"), "position bias")
    if options.max_circular_fraction is not None and "circular_fraction" in table:
        flag(table["circular_fraction"] > options.max_circular_fraction, "circular triads")
    if options.min_consistency is not None and "consistency" in table:
        flag(table["consistency"] < options.min_consistency, "inconsistent on repeated pairs")
    table["reasons"] = ["; ".join(r) for r in reasons]
    table["excluded"] = [bool(r) for r in reasons]
    if table["excluded"].all() and len(table):
        notes.append("every participant failed a check: results after exclusions are not available")
    result = QCResult(table, agreement_table(responses), options, notes, policy)
    return result


def _attention_policy(
    responses: pd.DataFrame, table: pd.DataFrame, options: QCOptions
) -> tuple[pd.Series, str]:
    """Failed gold trials tolerated per participant (in ``table``'s order), and whose rule."""
    if options.max_attention_failures is not None:
        n = options.max_attention_failures
        return pd.Series(
            n, index=table.index
        ), f"more than {n} failed gold trials (set for this analysis)"
    study = study_attention_policy(responses)
    if study is not None:
        tolerated = table["participant"].map(study).fillna(0).astype(int)
        values = ", ".join(str(v) for v in sorted(set(study.dropna().astype(int))))
        return (
            tolerated,
            f"more than {values} failed gold trials (the study's attention.max_failures)",
        )
    return pd.Series(0, index=table.index), (
        "more than 0 failed gold trials (the export does not say what the study tolerated; "
        "pass --spec or --max-attention-failures)"
    )


def _outlier_reason(row: pd.Series, options: QCOptions) -> str:
    if options.outlier_rule == "pwcmp":
        return (
            f"answers unlike the others' (leave-one-out likelihood dist_L {row['loo_dist']:.2f} "
            f"> {options.outlier_distance:g})"
        )
    return (
        f"answers unlike the others' (leave-one-out likelihood p = {row['loo_p']:.4f} < "
        f"{options.outlier_alpha:g})"
    )


def participant_ids(responses: pd.DataFrame) -> pd.Series | None:
    """participant -> Prolific ID, where the export carries one (``prolific_pid``)."""
    for column in ("prolific_pid", "PROLIFIC_PID"):
        if column in responses:
            ids = responses[column].astype("string")
            table = ids.groupby(responses["participant"].astype(str)).first()
            return None if table.isna().all() else table
    return None


def apply_exclusions(responses: pd.DataFrame, qc: QCResult) -> pd.DataFrame:
    """The responses without the excluded participants (the reproducible filter)."""
    return responses[~responses["participant"].astype(str).isin(qc.excluded)].reset_index(drop=True)
