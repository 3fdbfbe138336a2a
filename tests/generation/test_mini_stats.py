"""The mini paper's statistics helpers on synthetic verdicts with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import permutation_test

from generation.mini.stats import (
    holm,
    median_spread,
    overall_interval,
    paired_sign_flip,
    task_weights,
)


def synthetic(rate_by_task: dict[str, float], prompts=20, seeds=4, seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        (task, f"{task}-{p}", s, float(rng.random() < rate))
        for task, rate in rate_by_task.items()
        for p in range(prompts)
        for s in range(seeds)
    ]
    tasks, prompt_ids, _, correct = map(np.array, zip(*rows, strict=True))
    return correct, tasks, prompt_ids


def test_weights_make_the_overall_the_mean_of_task_means() -> None:
    tasks = ["a"] * 2 + ["b"] * 6
    correct = np.array([1, 1, 0, 0, 0, 0, 0, 1.0])
    assert task_weights(tasks).sum() == pytest.approx(1.0)
    assert np.sum(task_weights(tasks) * correct) == pytest.approx((1.0 + 1 / 6) / 2)


def test_the_bootstrap_interval_covers_the_truth_at_about_its_level() -> None:
    truth = {"a": 0.2, "b": 0.5, "c": 0.8}
    covered, widths = 0, []
    for trial in range(60):
        correct, tasks, prompts = synthetic(truth, seed=trial)
        interval = overall_interval(correct, tasks, prompts, rounds=600, seed=trial)
        assert interval.low <= interval.estimate <= interval.high
        covered += interval.low <= 0.5 <= interval.high
        widths.append(interval.high - interval.low)
    assert 0.85 <= covered / 60 <= 1.0
    # more prompts, a narrower interval (about 1/sqrt(4) as wide)
    wide = overall_interval(*synthetic(truth, prompts=10), rounds=600)
    narrow = overall_interval(*synthetic(truth, prompts=160), rounds=600)
    assert narrow.high - narrow.low < 0.5 * (wide.high - wide.low)


def test_the_paired_test_finds_real_gaps_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    n = 400
    base = (rng.random(n) < 0.5).astype(float)
    better = np.where(rng.random(n) < 0.15, 1.0, base)  # flips ~7% of the images to correct
    same = np.where(rng.random(n) < 0.5, base, (rng.random(n) < 0.5).astype(float))
    found = paired_sign_flip(better, base, rounds=5000)
    assert found.difference > 0 and found.p_value < 0.001 and found.discordant > 0
    # under the null, p-values are roughly uniform: rejections at 5% stay rare
    rejections = 0
    for k in range(40):
        x = (rng.random(n) < 0.4).astype(float)
        y = (rng.random(n) < 0.4).astype(float)
        rejections += paired_sign_flip(x, y, rounds=1000, seed=k).p_value < 0.05
    assert rejections <= 6
    # unweighted, it agrees with scipy's paired ("samples") permutation test
    reference = permutation_test(
        (same, base),
        lambda x, y: np.mean(x - y),
        permutation_type="samples",
        n_resamples=20_000,
        random_state=0,
    )
    assert paired_sign_flip(same, base, rounds=20_000).p_value == pytest.approx(
        reference.pvalue, abs=0.02
    )
    with pytest.raises(ValueError, match="paired"):
        paired_sign_flip([1, 0], [1, 0, 1])


def test_holm_and_median_spread() -> None:
    # Holm: sorted p times (m, m-1, ...), monotone, capped at 1
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([]) == []
    assert median_spread([4.0, 1.0, 3.0, 2.0, 100.0]) == (3.0, 2.0, 4.0)
