"""The uncertainty of the mini paper's table: small pure helpers over per-image verdicts.

mini-GenEval's overall score is the mean of the six task means (GenEval's summary), so every
helper here weighs an image by ``1 / (images of its task x tasks)``: the weighted mean of the
verdicts *is* the overall score, and a weighted mean difference is a difference of overall
scores.

- :func:`overall_interval`: the overall score with a 95% percentile bootstrap interval over
  prompts, resampled within each task (a prompt keeps all its seeds: images of one prompt
  are not independent);
- :func:`paired_sign_flip`: two variants' images of the same (prompt, seed) compared by a
  paired permutation test (each pair's difference keeps or flips its sign under the null
  that the two variants are exchangeable), two-sided, on the weighted mean difference;
- :func:`holm`: Holm's step-down correction of a family of p-values (statsmodels);
- :func:`median_spread`: the median of repeated timings with their interquartile range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def task_weights(tasks: Sequence[str]) -> np.ndarray:
    """Per image: ``1 / (images of its task x number of tasks)``; they sum to 1."""
    tasks = np.asarray(tasks)
    names, index, counts = np.unique(tasks, return_inverse=True, return_counts=True)
    return 1.0 / (counts[index] * len(names))


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def overall_interval(
    correct: Sequence[float],
    tasks: Sequence[str],
    prompts: Sequence[str],
    *,
    rounds: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """The overall score of per-image verdicts and its bootstrap interval over prompts."""
    correct = np.asarray(correct, dtype=float)
    tasks, prompts = np.asarray(tasks), np.asarray(prompts)
    estimate = float(np.sum(task_weights(tasks) * correct))
    rng = np.random.default_rng(seed)
    # per task: each prompt's sum of verdicts and image count; a resample draws prompts
    per_task = []
    for task in np.unique(tasks):
        mine = tasks == task
        names, index = np.unique(prompts[mine], return_inverse=True)
        sums = np.bincount(index, weights=correct[mine], minlength=len(names))
        counts = np.bincount(index, minlength=len(names)).astype(float)
        per_task.append((sums, counts))
    means = np.empty((rounds, len(per_task)))
    for k, (sums, counts) in enumerate(per_task):
        draw = rng.integers(len(sums), size=(rounds, len(sums)))
        means[:, k] = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    overall = means.mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(overall, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high))


@dataclass(frozen=True)
class PairedTest:
    difference: float  # weighted mean of a - b: the difference of the overall scores
    p_value: float
    pairs: int
    discordant: int  # pairs where the two verdicts differ (the only ones that carry signal)


def paired_sign_flip(
    a: Sequence[float],
    b: Sequence[float],
    weights: Sequence[float] | None = None,
    *,
    rounds: int = 20_000,
    seed: int = 0,
) -> PairedTest:
    """Two-sided paired permutation test of ``sum(w (a - b))`` (``a[i]``, ``b[i]``: the two
    variants' verdicts on the same prompt and seed). p = (1 + #{|T*| >= |T|}) / (1 + rounds)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("a and b must be paired: the same length, one value per image")
    w = np.full(len(a), 1.0 / len(a)) if weights is None else np.asarray(weights, dtype=float)
    d = w * (a - b)
    observed = float(d.sum())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(rounds, len(d)))
    null = signs @ d
    extreme = int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    return PairedTest(observed, (1 + extreme) / (1 + rounds), len(d), int(np.sum(a != b)))


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[float]:
    """Holm-adjusted p-values, in the order given."""
    from statsmodels.stats.multitest import multipletests

    if len(p_values) == 0:
        return []
    return [float(p) for p in multipletests(list(p_values), alpha=alpha, method="holm")[1]]


def median_spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile)."""
    q1, median, q3 = np.quantile(np.asarray(values, dtype=float), [0.25, 0.5, 0.75])
    return float(median), float(q1), float(q3)
