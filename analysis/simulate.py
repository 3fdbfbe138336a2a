"""Synthetic participants with known true scores, writing the responses-export format.

Used to check the estimators (recovery of the true scores, the actual coverage of
nominal 95% intervals) and to plan studies (``hprune power``). A simulated participant:

- sees ``trials_per_participant`` pair trials, pairs drawn evenly from the design
  (all pairs, or every variant against the reference), prompts uniformly, left/right
  at random;
- prefers with Bradley-Terry (or Thurstone) probabilities from the true scores plus her
  own random offsets (``participant_sd``) and the prompt's (``prompt_sd``), plus a
  position effect and, optionally, Davidson ties;
- lapses (answers at random) with probability ``lapse``; a ``spammers`` fraction answers
  at random, fast, and fails attention checks.

Ratings (MOS) follow the same participants: ``round(mos + participant + prompt + noise)``
clipped to the 1..5 scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import norm

from hprune.contracts.responses import CONTRACT_COLUMNS

#: z of 75% preference: a Thurstone score difference of 1 JOD has P = Phi(Z75 * 1) = 0.75.
Z75 = float(norm.ppf(0.75))


@dataclass(frozen=True)
class PairDesign:
    """What a planned pairwise study looks like."""

    variants: tuple[str, ...]
    n_participants: int
    trials_per_participant: int
    n_prompts: int = 20
    pairs: str = "all"  # "all" pairs, or "reference": every variant against variants[0]
    criterion: str = "quality"

    def pair_list(self) -> np.ndarray:
        k = len(self.variants)
        if self.pairs == "all":
            return np.array(list(combinations(range(k), 2)))
        if self.pairs == "reference":
            return np.array([(0, j) for j in range(1, k)])
        raise ValueError(f"unknown pair design {self.pairs!r} (all, reference)")


def image_id(variant: str, prompt_id: str) -> str:
    return f"img-{variant}-{prompt_id}"


def _participant_ids(n: int) -> list[str]:
    return [f"p{i:04d}" for i in range(n)]


@dataclass(frozen=True)
class SimulatedPairs:
    """A simulated pairwise study as (participants x trials) code arrays."""

    left: np.ndarray  # variant index shown left
    right: np.ndarray
    outcome: np.ndarray  # 0 left, 1 right, 2 tie (analysis.comparisons codes)
    prompt: np.ndarray
    rt_ms: np.ndarray
    is_spammer: np.ndarray  # (participants,)


def simulate_pair_arrays(
    design: PairDesign,
    true_scores: Sequence[float],
    rng: np.random.Generator,
    *,
    link: str = "logit",
    position: float = 0.0,
    tie_log_nu: float | None = None,
    participant_sd: float = 0.0,
    prompt_sd: float = 0.0,
    lapse: float = 0.0,
    spammers: float = 0.0,
) -> SimulatedPairs:
    """The trials and answers of simulated participants (see the module docstring)."""
    scores = np.asarray(true_scores, float)
    k = len(design.variants)
    if len(scores) != k:
        raise ValueError("one true score per variant")
    p_n, t_n = design.n_participants, design.trials_per_participant
    pairs = design.pair_list()
    # Even pair coverage: each participant walks a shuffled cycle of the design's pairs.
    reps = -(-t_n // len(pairs))
    order = np.concatenate(
        [rng.permuted(np.tile(np.arange(len(pairs)), (p_n, 1)), axis=1) for _ in range(reps)],
        axis=1,
    )[:, :t_n]
    a, b = pairs[order, 0], pairs[order, 1]
    swap = rng.random((p_n, t_n)) < 0.5
    left, right = np.where(swap, b, a), np.where(swap, a, b)
    prompt = rng.integers(design.n_prompts, size=(p_n, t_n))
    offsets = rng.normal(0, participant_sd, (p_n, k)) if participant_sd > 0 else np.zeros((p_n, k))
    prompt_offsets = rng.normal(0, prompt_sd, (design.n_prompts, k)) if prompt_sd > 0 else None
    s = scores[None, :] + offsets
    rows = np.arange(p_n)[:, None]
    d = s[rows, left] - s[rows, right] + position
    if prompt_offsets is not None:
        d += prompt_offsets[prompt, left] - prompt_offsets[prompt, right]
    if link == "logit" and tie_log_nu is not None:
        nu = np.exp(tie_log_nu)
        denom = np.exp(d / 2) + np.exp(-d / 2) + nu
        p_left, p_tie = np.exp(d / 2) / denom, nu / denom
    elif link == "logit":
        p_left, p_tie = expit(d), np.zeros_like(d)
    elif link == "thurstone":
        p_left, p_tie = norm.cdf(Z75 * d), np.zeros_like(d)
    else:
        raise ValueError(f"unknown link {link!r} (logit, thurstone)")
    is_spammer = rng.random(p_n) < spammers
    random_answer = (rng.random((p_n, t_n)) < lapse) | is_spammer[:, None]
    p_left = np.where(random_answer, 0.5, p_left)
    p_tie = np.where(random_answer, 0.0, p_tie)
    u = rng.random((p_n, t_n))
    outcome = np.where(u < p_left, 0, np.where(u < p_left + p_tie, 2, 1))
    rt = np.exp(rng.normal(np.log(2500), 0.4, (p_n, t_n)))
    rt = np.where(is_spammer[:, None], np.exp(rng.normal(np.log(350), 0.2, (p_n, t_n))), rt)
    return SimulatedPairs(left, right, outcome, prompt, rt, is_spammer)


def simulate_pairs(
    design: PairDesign,
    true_scores: Sequence[float],
    *,
    seed: int | np.random.Generator = 0,
    attention_trials: int = 0,
    study: str = "sim",
    **behaviour,
) -> pd.DataFrame:
    """Responses-export rows of a simulated pairwise study (pair and attention trials).

    ``behaviour``: link, position, tie_log_nu, participant_sd, prompt_sd, lapse, spammers
    (see ``simulate_pair_arrays``).
    """
    rng = np.random.default_rng(seed)
    sim = simulate_pair_arrays(design, true_scores, rng, **behaviour)
    p_n, t_n = design.n_participants, design.trials_per_participant
    names = np.array(design.variants, dtype=object)
    prompt_ids = np.array([f"prompt{i:03d}" for i in range(design.n_prompts)], dtype=object)
    participants = np.array(_participant_ids(p_n), dtype=object)
    frame = pd.DataFrame(
        {
            "study": study,
            "participant": np.repeat(participants, t_n),
            "trial_index": np.tile(np.arange(t_n), p_n),
            "kind": "pair",
            "criterion": design.criterion,
            "prompt_id": prompt_ids[sim.prompt.ravel()],
            "left_variant": names[sim.left.ravel()],
            "right_variant": names[sim.right.ravel()],
            "choice": np.array(["left", "right", "tie"], dtype=object)[sim.outcome.ravel()],
            "rating": np.nan,
            "rt_ms": np.round(sim.rt_ms.ravel()),
            "passed_checks": True,
        }
    )
    frame["left_image"] = [
        image_id(v, p) for v, p in zip(frame.left_variant, frame.prompt_id, strict=True)
    ]
    frame["right_image"] = [
        image_id(v, p) for v, p in zip(frame.right_variant, frame.prompt_id, strict=True)
    ]
    if attention_trials:
        frame = pd.concat(
            [
                frame,
                _attention_rows(participants, sim.is_spammer, attention_trials, t_n, rng, study),
            ],
            ignore_index=True,
        )
    return _finish(frame)


def _attention_rows(participants, is_spammer, n, start, rng, study) -> pd.DataFrame:
    p_n = len(participants)
    passed = np.where(is_spammer[:, None], rng.random((p_n, n)) < 0.3, rng.random((p_n, n)) < 0.98)
    return pd.DataFrame(
        {
            "study": study,
            "participant": np.repeat(participants, n),
            "trial_index": np.tile(np.arange(start, start + n), p_n),
            "kind": "attention",
            "criterion": "attention",
            "choice": np.where(passed.ravel(), "left", "right"),
            "rating": np.nan,
            "rt_ms": np.round(np.exp(rng.normal(np.log(2000), 0.3, p_n * n))),
            "passed_checks": passed.ravel(),
        }
    )


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    start = pd.Timestamp("2025-01-01T00:00:00Z")
    frame = frame.sort_values(["participant", "trial_index"], kind="stable").reset_index(drop=True)
    elapsed = frame.groupby("participant")["rt_ms"].cumsum() + 1000 * frame["trial_index"]
    frame["answered_at"] = start + pd.to_timedelta(elapsed, unit="ms")
    frame["shown_at"] = frame["answered_at"] - pd.to_timedelta(frame["rt_ms"], unit="ms")
    frame["server_ms"] = frame["rt_ms"] + 40
    for column in CONTRACT_COLUMNS:
        if column not in frame:
            frame[column] = pd.NA
    return frame[CONTRACT_COLUMNS]


def simulate_ratings(
    variants: Sequence[str],
    true_mos: Sequence[float] | dict[str, Sequence[float]],
    *,
    n_participants: int,
    ratings_per_participant: int,
    n_prompts: int = 20,
    participant_sd: float = 0.3,
    prompt_sd: float = 0.2,
    noise_sd: float = 0.6,
    seed: int | np.random.Generator = 0,
    study: str = "sim",
) -> pd.DataFrame:
    """Responses-export rows of a simulated MOS study on the 1..5 scale.

    ``true_mos`` is one mean per variant, or ``{criterion: means}`` for several criteria
    (each participant rates every criterion of each image she sees, as in the paper).
    """
    rng = np.random.default_rng(seed)
    criteria = true_mos if isinstance(true_mos, dict) else {"quality": true_mos}
    k = len(variants)
    p_n, t_n = n_participants, ratings_per_participant
    variant = np.tile(np.arange(k), (p_n, -(-t_n // k)))[:, :t_n]
    variant = rng.permuted(variant, axis=1)
    prompt = rng.integers(n_prompts, size=(p_n, t_n))
    participant_offset = rng.normal(0, participant_sd, p_n)
    prompt_offset = rng.normal(0, prompt_sd, n_prompts)
    names = np.array(variants, dtype=object)
    prompt_ids = np.array([f"prompt{i:03d}" for i in range(n_prompts)], dtype=object)
    participants = np.array(_participant_ids(p_n), dtype=object)
    frames = []
    for c_index, (criterion, means) in enumerate(criteria.items()):
        means = np.asarray(means, float)
        latent = (
            means[variant]
            + participant_offset[:, None]
            + prompt_offset[prompt]
            + rng.normal(0, noise_sd, (p_n, t_n))
        )
        rating = np.clip(np.round(latent), 1, 5)
        frame = pd.DataFrame(
            {
                "study": study,
                "participant": np.repeat(participants, t_n),
                "trial_index": np.tile(np.arange(t_n) * len(criteria) + c_index, p_n),
                "kind": "rating",
                "criterion": criterion,
                "prompt_id": prompt_ids[prompt.ravel()],
                "left_variant": names[variant.ravel()],
                "rating": rating.ravel(),
                "rt_ms": np.round(np.exp(rng.normal(np.log(3000), 0.4, p_n * t_n))),
                "passed_checks": True,
            }
        )
        frame["left_image"] = [
            image_id(v, p) for v, p in zip(frame.left_variant, frame.prompt_id, strict=True)
        ]
        frames.append(frame)
    return _finish(pd.concat(frames, ignore_index=True))


def simulate_metrics(
    responses: pd.DataFrame,
    metric_means: dict[str, Sequence[float]],
    variants: Sequence[str],
    *,
    noise_sd: float = 0.05,
    higher_is_better: bool | dict[str, bool] = True,
    seed: int = 0,
) -> pd.DataFrame:
    """A tidy metrics.csv table for every image the responses show."""
    rng = np.random.default_rng(seed)
    shown = pd.concat(
        [
            responses[["left_image", "left_variant", "prompt_id"]].set_axis(
                ["image_id", "variant", "prompt_id"], axis=1
            ),
            responses[["right_image", "right_variant", "prompt_id"]].set_axis(
                ["image_id", "variant", "prompt_id"], axis=1
            ),
        ]
    ).dropna()
    shown = shown.drop_duplicates("image_id").sort_values("image_id").reset_index(drop=True)
    index = {v: i for i, v in enumerate(variants)}
    frames = []
    for metric, means in metric_means.items():
        means = np.asarray(means, float)
        hib = higher_is_better[metric] if isinstance(higher_is_better, dict) else higher_is_better
        frames.append(
            shown.assign(
                metric=metric,
                value=means[shown["variant"].map(index).to_numpy()]
                + rng.normal(0, noise_sd, len(shown)),
                higher_is_better=hib,
            )
        )
    return pd.concat(frames, ignore_index=True)
