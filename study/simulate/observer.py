"""The simulated participant's answers: a Bradley-Terry model with the imperfections real
participants have:

- each participant's own scores are the true scores plus ``N(0, participant_sd^2)`` (observers
  disagree);
- ``position_bias`` log-odds are added to whichever image is on the left;
- with probability ``lapse_rate`` the answer is a coin flip between the offered options;
- ties (when the trial offers one) follow Davidson's model with strength ``tie_strength``;
- attention trials are answered correctly except with probability ``attention_failure_rate``;
- MOS ratings are a latent quality per variant plus the participant's offset plus
  ``N(0, rating_sd^2)``, rounded and clipped to the scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Preferences:
    """The known truth the simulated participants answer from (see the module docstring).

    ``scores``: Bradley-Terry log-strengths per variant (P(i beats j) = sigmoid(s_i - s_j)).
    ``quality``: latent MOS per variant; default ``3.5 + (s - mean s)`` clipped to [1.5, 4.8].
    """

    scores: Mapping[str, float]
    participant_sd: float = 0.2
    position_bias: float = 0.2
    lapse_rate: float = 0.03
    tie_strength: float = 0.0
    attention_failure_rate: float = 0.02
    quality: Mapping[str, float] | None = None
    rating_sd: float = 0.7
    rating_offset_sd: float = 0.3

    def __post_init__(self) -> None:
        for name in ("participant_sd", "tie_strength", "rating_sd", "rating_offset_sd"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("lapse_rate", "attention_failure_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")

    def latent_quality(self, variant: str) -> float:
        if self.quality is not None:
            return float(self.quality[variant])
        mean = float(np.mean(list(self.scores.values())))
        return float(np.clip(3.5 + self.scores[variant] - mean, 1.5, 4.8))

    @classmethod
    def evenly_spaced(cls, variants: list[str], spacing: float = 0.5, **options) -> Preferences:
        """Scores 0, -spacing, -2 spacing, ... in the order given (first = best)."""
        return cls({v: -spacing * k for k, v in enumerate(variants)}, **options)

    def to_dict(self) -> dict:
        """JSON-ready, for a truth file the analysis can be checked against."""
        return {
            "scores": dict(self.scores),
            "quality": {v: self.latent_quality(v) for v in self.scores},
            "participant_sd": self.participant_sd,
            "position_bias": self.position_bias,
            "lapse_rate": self.lapse_rate,
            "tie_strength": self.tie_strength,
            "attention_failure_rate": self.attention_failure_rate,
            "rating_sd": self.rating_sd,
            "rating_offset_sd": self.rating_offset_sd,
        }


@dataclass
class Observer:
    """One simulated participant: their own scores, drawn once, and their answers."""

    preferences: Preferences
    rng: np.random.Generator
    scores: dict[str, float] = field(init=False)
    rating_offset: float = field(init=False)

    def __post_init__(self) -> None:
        prefs = self.preferences
        self.scores = {
            v: float(s + self.rng.normal(0.0, prefs.participant_sd)) if prefs.participant_sd else s
            for v, s in prefs.scores.items()
        }
        self.rating_offset = float(self.rng.normal(0.0, prefs.rating_offset_sd))

    def choose(self, left: str, right: str, *, tie: bool = False) -> str:
        """``left``, ``right`` or ``tie`` for a comparison of two variants."""
        prefs = self.preferences
        options = ["left", "right", "tie"] if tie else ["left", "right"]
        if self.rng.random() < prefs.lapse_rate:
            return options[int(self.rng.integers(len(options)))]
        gap = self.scores[left] + prefs.position_bias - self.scores[right]
        # Davidson: P(left) : P(right) : P(tie) = e^{gap/2} : e^{-gap/2} : nu
        weights = [math.exp(gap / 2), math.exp(-gap / 2)]
        if tie:
            weights.append(prefs.tie_strength)
        weights_arr = np.array(weights)
        return options[int(self.rng.choice(len(options), p=weights_arr / weights_arr.sum()))]

    def rate(self, variant: str, low: int = 1, high: int = 5) -> int:
        latent = self.preferences.latent_quality(variant) + self.rating_offset
        value = latent + self.rng.normal(0.0, self.preferences.rating_sd)
        return int(np.clip(round(value), low, high))

    def fails_attention(self) -> bool:
        return bool(self.rng.random() < self.preferences.attention_failure_rate)
