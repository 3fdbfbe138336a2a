"""How many participants a planned pairwise study needs: power by simulation.

For each candidate number of participants, ``simulations`` studies are drawn from the
planned design with known true scores (``analysis.simulate``: participant heterogeneity,
lapses, position bias and ties as planned), each is fitted (Bradley-Terry, or Thurstone
for JOD scores) and the target differences are tested with cluster-robust (sandwich)
standard errors, corrected together (Holm or BH). Power is the share of studies in which
a difference is detected *with the right sign*; "all" is the share in which every target
difference is. The table also reports the mean standard error and the empirical coverage
of the 95% cluster-robust (sandwich) intervals of the target differences, with the
t quantile of G - 1 degrees of freedom for G participants (Cameron & Miller 2015, "A
practitioner's guide to cluster-robust inference"), and the mean ratio of estimated to
true difference. Lapses and heterogeneous participants shrink what a pooled Bradley-Terry
fit estimates (the population-average preference is flatter than each person's), so
``coverage_95`` is measured against that population-average difference (the fit to the
design's expected answers, ``population_target``), which is what the interval is for;
``coverage_95_true`` against the true per-person differences falls as studies grow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations, pairwise

import numpy as np
import pandas as pd
from scipy.stats import norm
from scipy.stats import t as student_t
from tqdm.auto import tqdm

from analysis.bootstrap import trial_cells
from analysis.bradley_terry import bradley_terry_model
from analysis.comparisons import collapse, is_estimable
from analysis.significance import adjust_pvalues
from analysis.simulate import PairDesign, simulate_pair_arrays
from analysis.thurstone import Z75, thurstone_model


@dataclass(frozen=True)
class PowerPlan:
    """A planned study: true scores, design, participant behaviour, and what to detect."""

    variants: tuple[str, ...]
    scores: tuple[float, ...]  # true scores (logit, or JOD with scale="jod"); first = reference
    trials_per_participant: int
    n_prompts: int = 20
    pairs: str = "all"  # which pairs are shown: all, or reference (each vs the first)
    targets: str = "reference"  # which differences must be detected: reference, all, adjacent
    scale: str = "logit"  # logit (Bradley-Terry) or jod (Thurstone)
    participant_sd: float = 0.0
    lapse: float = 0.0
    position: float = 0.0
    tie_log_nu: float | None = None
    alpha: float = 0.05
    correction: str = "holm"

    def target_pairs(self) -> list[tuple[int, int]]:
        k = len(self.variants)
        if self.targets == "reference":
            return [(0, j) for j in range(1, k)]
        if self.targets == "all":
            return list(combinations(range(k), 2))
        if self.targets == "adjacent":
            order = np.argsort(-np.asarray(self.scores), kind="stable")
            return [(int(a), int(b)) for a, b in pairwise(order)]
        raise ValueError(f"unknown targets {self.targets!r} (reference, all, adjacent)")


#: What the power table's coverage columns refer to (printed by ``hprune power``).
COVERAGE_NOTE = (
    "coverage_95: share of the 95% cluster-robust (sandwich, t with participants - 1 df) "
    "intervals of the target differences that contain the population-average difference the "
    "pooled fit estimates; coverage_95_true: the same against the true per-person differences, "
    "which lapses and participant heterogeneity shrink"
)


def population_target(plan: PowerPlan, *, draws: int = 20_000, seed: int = 1) -> np.ndarray:
    """The scores a pooled fit converges to: the model fitted to the expected answers of every
    (pair, side) of the design, averaged over participant offsets and lapses."""
    rng = np.random.default_rng(seed)
    k = len(plan.variants)
    pairs = PairDesign(plan.variants, 1, 1, 1, plan.pairs).pair_list()
    left = np.concatenate([pairs[:, 0], pairs[:, 1]])
    right = np.concatenate([pairs[:, 1], pairs[:, 0]])
    scores = np.asarray(plan.scores, float)
    offsets = (
        rng.normal(0, plan.participant_sd, (draws, k)) if plan.participant_sd else np.zeros((1, k))
    )
    d = (scores + offsets)[:, left] - (scores + offsets)[:, right] + plan.position
    p = norm.cdf(Z75 * d) if plan.scale == "jod" else 1 / (1 + np.exp(-d))
    p_left = plan.lapse / 2 + (1 - plan.lapse) * p.mean(axis=0)
    counts = np.column_stack([p_left, 1 - p_left, np.zeros(len(left))]) * 1000.0
    comparisons, _ = collapse(plan.variants, left, right, np.zeros(len(left), int))
    comparisons = comparisons.with_counts(counts[np.argsort(left * k + right)])
    position = plan.position != 0
    if plan.scale == "jod":
        return thurstone_model(comparisons, position=position).fit().scores
    return bradley_terry_model(comparisons, ties="drop", position=position).fit().scores


def simulate_once(
    plan: PowerPlan, n_participants: int, rng: np.random.Generator, target: np.ndarray | None = None
):
    """One simulated study's estimates, robust SEs of the target differences, and detections."""
    design = PairDesign(
        plan.variants, n_participants, plan.trials_per_participant, plan.n_prompts, plan.pairs
    )
    sim = simulate_pair_arrays(
        design,
        plan.scores,
        rng,
        link="thurstone" if plan.scale == "jod" else "logit",
        position=plan.position,
        tie_log_nu=None if plan.scale == "jod" else plan.tie_log_nu,
        participant_sd=plan.participant_sd,
        lapse=plan.lapse,
    )
    comparisons, row = collapse(
        plan.variants, sim.left.ravel(), sim.right.ravel(), sim.outcome.ravel()
    )
    position = plan.position != 0
    if not is_estimable(comparisons, comparisons.counts, prior=0.0, ties_link=True):
        return None
    if plan.scale == "jod":
        model = thurstone_model(comparisons, position=position)
    else:
        model = bradley_terry_model(comparisons, position=position)
    fit = model.fit()
    participant = np.repeat(np.arange(n_participants), plan.trials_per_participant)
    cells = trial_cells(row, sim.outcome.ravel(), len(comparisons.left), participant)
    per_person = cells.participant_matrix(n_participants).toarray().reshape(n_participants, -1, 3)
    cov = model.cluster_covariance(fit.params, per_person)
    targets = plan.target_pairs()
    i = np.array([a for a, _ in targets])
    j = np.array([b for _, b in targets])
    diff = fit.params[i] - fit.params[j]
    se = np.sqrt(np.clip(cov[i, i] + cov[j, j] - 2 * cov[i, j], 1e-300, None))
    p = 2 * norm.sf(np.abs(diff / se))
    truth = np.asarray(plan.scores)[i] - np.asarray(plan.scores)[j]
    detected = (adjust_pvalues(p, plan.correction) < plan.alpha) & (np.sign(diff) == np.sign(truth))
    half = student_t.ppf(0.975, max(n_participants - 1, 1)) * se
    pooled = truth if target is None else target[i] - target[j]
    covered = (np.abs(diff - pooled) <= half, np.abs(diff - truth) <= half)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(truth != 0, diff / truth, np.nan)
    return detected, se, covered, ratio


def power_curve(
    plan: PowerPlan,
    participants: Sequence[int],
    *,
    simulations: int = 200,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Power per number of participants (one row each), seeded and reproducible."""
    targets = plan.target_pairs()
    names = [f"{plan.variants[a]} vs {plan.variants[b]}" for a, b in targets]
    target = population_target(plan)
    rows = []
    bar = tqdm(total=len(participants) * simulations, desc="power", disable=not progress)
    for n in participants:
        rng = np.random.default_rng([seed, n])
        detected, ses, covered, ratio, failed = [], [], [], [], 0
        for _ in range(simulations):
            out = simulate_once(plan, n, rng, target)
            bar.update()
            if out is None:
                failed += 1
                continue
            detected.append(out[0])
            ses.append(out[1])
            covered.append(out[2])
            ratio.append(out[3])
        row = {"participants": n, "simulations": simulations, "no_finite_fit": failed}
        if detected:
            d = np.array(detected)
            row["power_all"] = d.all(axis=1).sum() / simulations
            for name, column in zip(names, d.T, strict=True):
                row[f"power: {name}"] = column.sum() / simulations
            row["mean_se"] = float(np.mean(ses))
            row["coverage_95"] = float(np.mean([c[0] for c in covered]))
            row["coverage_95_true"] = float(np.mean([c[1] for c in covered]))
            ratios = np.array(ratio)
            if np.isfinite(ratios).any():
                row["estimate_over_truth"] = float(np.nanmean(ratios))
        rows.append(row)
    bar.close()
    return pd.DataFrame(rows)


def participants_needed(curve: pd.DataFrame, target: float = 0.8) -> int | None:
    """The smallest number of participants whose ``power_all`` reaches ``target``."""
    reached = curve[curve.get("power_all", pd.Series(dtype=float)) >= target]
    return int(reached["participants"].min()) if not reached.empty else None
