"""The simulated participant's answers, by one of two observers:

- :class:`Observer` (``--observer names``, the default): a Bradley-Terry model over the
  variants, given by name: the analysis should recover exactly what was typed in;
- :class:`ImageAwareObserver` (``--observer image-aware``): judges the pixels of the images it
  is shown (and the prompt, when the trial shows it) through an injected :class:`ImageJudge`,
  and never learns a variant's name: what the analysis recovers is then what the images are.

Both have the imperfections real participants have. The name-based observer:

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

import hashlib
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np


class Seen(NamedTuple):
    """One image as an observer meets it. The driver fills ``variant`` only for the name-based
    observer, and ``image`` (the bytes the server sent) only for the image-aware one."""

    variant: str | None = None
    image: bytes | None = None
    prompt: str | None = None  # the prompt the trial shows (None when it shows none)


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

    judges_pixels = False

    def check(self, variants: Sequence[str]) -> None:
        """ValueError when a variant of the study has no true score."""
        missing = sorted(set(variants) - set(self.scores))
        if missing:
            raise ValueError(f"no true score for variants {', '.join(missing)}")

    def observer(self, rng: np.random.Generator) -> Observer:
        return Observer(self, rng)

    def to_dict(self) -> dict:
        """JSON-ready, for a truth file the analysis can be checked against."""
        return {
            "observer": "names",
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

    def choose(self, left: str | Seen, right: str | Seen, *, tie: bool = False) -> str:
        """``left``, ``right`` or ``tie`` for a comparison of two variants."""
        left, right = _name(left), _name(right)
        gap = self.scores[left] + self.preferences.position_bias - self.scores[right]
        return _davidson(gap, self.preferences, self.rng, tie)

    def rate(self, variant: str | Seen, low: int = 1, high: int = 5) -> int:
        latent = self.preferences.latent_quality(_name(variant)) + self.rating_offset
        value = latent + self.rng.normal(0.0, self.preferences.rating_sd)
        return int(np.clip(round(value), low, high))

    def fails_attention(self) -> bool:
        return bool(self.rng.random() < self.preferences.attention_failure_rate)


def _name(seen: str | Seen) -> str:
    if isinstance(seen, Seen):
        if seen.variant is None:
            raise ValueError("the name-based observer needs the variant of each image")
        return seen.variant
    return seen


def _davidson(gap: float, prefs, rng: np.random.Generator, tie: bool) -> str:
    """A lapse (a coin flip over the options) or Davidson's model at log-odds ``gap`` for the
    left image: P(left) : P(right) : P(tie) = e^{gap/2} : e^{-gap/2} : nu."""
    options = ["left", "right", "tie"] if tie else ["left", "right"]
    if rng.random() < prefs.lapse_rate:
        return options[int(rng.integers(len(options)))]
    weights = [math.exp(gap / 2), math.exp(-gap / 2)]
    if tie:
        weights.append(prefs.tie_strength)
    weights_arr = np.array(weights)
    return options[int(rng.choice(len(options), p=weights_arr / weights_arr.sum()))]


# ---------------------------------------------------------------------------- image-aware


class ImageJudge(Protocol):
    """What an image is worth to a viewer, from its bytes and the prompt shown with it (None when
    the trial shows none): named features in [0, 1], higher is better, deterministic. The
    command line injects one (``generation.shapes_world.judge.ShapesJudge`` for the mini world),
    so that this package needs no image model. Raises ValueError for what it cannot judge."""

    def __call__(self, image: bytes, prompt: str | None) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class ImagePreferences:
    """How image-aware simulated participants turn a judge's features into answers.

    A participant's utility for an image is ``sharpness`` times the weighted mean of the judge's
    features, each feature's weight drawn once per participant as ``weights[f] *
    exp(N(0, participant_sd^2))`` (observers disagree on what matters; missing names weigh
    1). Pairs: Davidson/Bradley-Terry on the utility gap, plus ``position_bias`` log-odds for
    the left image, and lapses (a coin flip) with probability ``lapse_rate``. MOS ratings: the
    weighted mean mapped linearly onto the scale (0 -> low, 1 -> high), plus the participant's
    offset ``N(0, rating_offset_sd^2)`` and ``N(0, rating_sd^2)``, rounded and clipped.
    Attention trials: answered correctly except with probability ``attention_failure_rate``.
    """

    judge: ImageJudge
    sharpness: float = 4.0
    weights: Mapping[str, float] | None = None
    participant_sd: float = 0.2
    position_bias: float = 0.2
    lapse_rate: float = 0.03
    tie_strength: float = 0.0
    attention_failure_rate: float = 0.02
    rating_sd: float = 0.7
    rating_offset_sd: float = 0.3

    judges_pixels = True

    def __post_init__(self) -> None:
        for name in ("sharpness", "participant_sd", "tie_strength", "rating_sd"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.rating_offset_sd < 0:
            raise ValueError("rating_offset_sd must be >= 0")
        for name in ("lapse_rate", "attention_failure_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if any(w < 0 for w in (self.weights or {}).values()):
            raise ValueError("feature weights must be >= 0")

    def check(self, variants: Sequence[str]) -> None:
        """Nothing to check: image-aware observers need no score per variant."""

    def observer(self, rng: np.random.Generator) -> ImageAwareObserver:
        return ImageAwareObserver(self, rng)

    def to_dict(self) -> dict:
        return {
            "observer": "image-aware",
            "judge": type(self.judge).__name__,
            "sharpness": self.sharpness,
            "weights": dict(self.weights or {}),
            "participant_sd": self.participant_sd,
            "position_bias": self.position_bias,
            "lapse_rate": self.lapse_rate,
            "tie_strength": self.tie_strength,
            "attention_failure_rate": self.attention_failure_rate,
            "rating_sd": self.rating_sd,
            "rating_offset_sd": self.rating_offset_sd,
        }


@dataclass
class ImageAwareObserver:
    """One image-aware participant: their own feature weights, drawn once, and their answers.
    It reads only :attr:`Seen.image` and :attr:`Seen.prompt`, never a variant."""

    preferences: ImagePreferences
    rng: np.random.Generator
    rating_offset: float = field(init=False)
    _taste: int = field(init=False)
    _weights: dict[str, float] = field(init=False, default_factory=dict)
    _judged: dict[tuple[bytes, str | None], Mapping[str, float]] = field(
        init=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self.rating_offset = float(self.rng.normal(0.0, self.preferences.rating_offset_sd))
        self._taste = int(self.rng.integers(2**63))

    def _weight(self, feature: str) -> float:
        """This participant's weight of a feature: a draw of its own per (participant, feature
        name), so it does not depend on the order in which trials bring features up."""
        if feature not in self._weights:
            base = (self.preferences.weights or {}).get(feature, 1.0)
            rng = np.random.default_rng([self._taste, zlib.crc32(feature.encode())])
            noise = rng.normal(0.0, self.preferences.participant_sd)
            self._weights[feature] = float(base * math.exp(noise))
        return self._weights[feature]

    def worth(self, seen: Seen) -> float:
        """The weighted mean of the judge's features of ``seen``, in [0, 1]."""
        if seen.image is None:
            raise ValueError("the image-aware observer needs the image's bytes")
        key = (hashlib.sha256(seen.image).digest(), seen.prompt)
        if key not in self._judged:  # the judge is deterministic: the same bytes, once
            self._judged[key] = self.preferences.judge(seen.image, seen.prompt)
        features = self._judged[key]
        weights = {name: self._weight(name) for name in sorted(features)}
        total = sum(weights.values())
        if total == 0:
            return 0.0
        return sum(weights[name] * float(features[name]) for name in weights) / total

    def choose(self, left: Seen, right: Seen, *, tie: bool = False) -> str:
        prefs = self.preferences
        gap = prefs.sharpness * (self.worth(left) - self.worth(right)) + prefs.position_bias
        return _davidson(gap, prefs, self.rng, tie)

    def rate(self, seen: Seen, low: int = 1, high: int = 5) -> int:
        latent = low + (high - low) * self.worth(seen) + self.rating_offset
        value = latent + self.rng.normal(0.0, self.preferences.rating_sd)
        return int(np.clip(round(value), low, high))

    def fails_attention(self) -> bool:
        return bool(self.rng.random() < self.preferences.attention_failure_rate)
