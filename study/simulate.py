"""Simulated participants with known preferences, for demos, load tests and checking the analysis.

The observer model (:class:`Preferences`, :class:`Observer`) is a Bradley-Terry model with the
imperfections real participants have:

- each participant's own scores are the true scores plus ``N(0, participant_sd^2)`` (observers
  disagree);
- ``position_bias`` log-odds are added to whichever image is on the left;
- with probability ``lapse_rate`` the answer is a coin flip between the offered options;
- ties (when the trial offers one) follow Davidson's model with strength ``tie_strength``;
- attention trials are answered correctly except with probability ``attention_failure_rate``;
- MOS ratings are a latent quality per variant plus the participant's offset plus
  ``N(0, rating_sd^2)``, rounded and clipped to the scale.

The HTTP driver (:func:`run_simulation`) plays participants through the real participant API of
a running study server (docs/study-api.md), one ``requests.Session`` each, in threads.
Participants cannot tell which variant an image shows (blinding), so the simulator looks that up
in the study database through :mod:`study.models` (:class:`StimulusOracle`): the study's image
tokens -> variant and role (a ``broken`` image marks an attention trial). Nothing a participant
receives is used to learn a variant; the simulator needs read access to the database for this.
"""

from __future__ import annotations

import math
import secrets
import time
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


# --- who is behind each image: read from the database, never from what participants get -------


@dataclass(frozen=True)
class StimulusOracle:
    """The study's image tokens -> (variant, role), read through :mod:`study.models`.

    ``role`` is ``stimulus`` or ``broken`` (the deliberately broken image of an attention
    trial). The simulator needs this because participants are blind to variants.
    """

    study_key: str
    images: Mapping[str, tuple[str, str]]
    database_url: str | None = None

    @classmethod
    def from_database(cls, database_url: str, study: str | None = None) -> StimulusOracle:
        """The oracle of the study named ``study`` (or the database's only study)."""
        from sqlalchemy import select

        from hprune.errors import UserError
        from study.db import open_database
        from study.models import Stimulus, Study

        db = open_database(database_url)
        try:
            with db.read() as session:
                studies = session.scalars(select(Study).order_by(Study.id)).all()
                if study is not None:
                    studies = [s for s in studies if s.name == study]
                    if not studies:
                        raise UserError(f"no study named {study!r} in the database")
                elif len(studies) != 1:
                    names = ", ".join(s.name for s in studies) or "none"
                    raise UserError(f"name the study with --study (the database has: {names})")
                chosen = studies[0]
                rows = session.execute(
                    select(Stimulus.token, Stimulus.variant, Stimulus.role).where(
                        Stimulus.study_id == chosen.id
                    )
                ).all()
                images = {t: (v, r) for t, v, r in rows}
                return cls(chosen.public_key, images, database_url)
        finally:
            db.dispose()

    def outcomes(self, external_ids: list[str]) -> dict[str, str | None]:
        """How each participant's session ended (None: still going), from the database."""
        from sqlalchemy import select

        from study.db import Database
        from study.models import Participant, Study

        if self.database_url is None:
            return {}
        db = Database(self.database_url)
        try:
            with db.read() as session:
                rows = session.execute(
                    select(Participant.external_id, Participant.outcome)
                    .join(Study, Study.id == Participant.study_id)
                    .where(Study.public_key == self.study_key)
                    .where(Participant.external_id.in_(external_ids))
                ).all()
            return dict(rows)
        finally:
            db.dispose()

    @property
    def variants(self) -> list[str]:
        return sorted({v for v, role in self.images.values() if role != "broken"})

    def lookup(self, image_url: str) -> tuple[str, str]:
        """(variant, role) of an image URL ``/i/<token>`` as a trial gives it."""
        return self.images[image_url.rstrip("/").rsplit("/", 1)[-1]]


# --- one participant over HTTP -----------------------------------------------------------------


class SimulationError(RuntimeError):
    """The server answered something a participant could not go on from."""


@dataclass
class ParticipantResult:
    participant: str
    outcome: str = "unfinished"  # completed | failed_attention | timed_out | refused | error | ...
    answers: int = 0  # acknowledged by the server ("recorded")
    retried: int = 0  # answers re-sent after a lost response ("already_recorded")
    answer_seconds: list[float] = field(default_factory=list)
    answer_window: tuple[float, float] | None = None  # perf_counter at first send, last reply
    choices: dict[str, int] = field(default_factory=dict)  # left/right/tie counts, main trials
    error: str | None = None


@dataclass(frozen=True)
class SimulationSettings:
    base_url: str
    study_key: str
    think_ms: float = 0.0
    fetch_images: bool = False
    timeout_s: float = 60.0
    retries: int = 3
    viewport: tuple[int, int] = (1440, 900)


def _answer_for(trial: dict, observer: Observer, oracle: StimulusOracle, memory: dict) -> dict:
    """The answer fields for one trial, from the observer's preferences and the oracle."""
    images = trial["images"]
    if trial["kind"] == "rating":
        variant, role = oracle.lookup(images["image"])
        scale = trial.get("scale") or {"min": 1, "max": 5}
        low, high = int(scale["min"]), int(scale["max"])
        if role == "broken":
            return {"rating": high if observer.fails_attention() else low}
        return {"rating": observer.rate(variant, low, high)}
    (left, left_role), (right, right_role) = (
        oracle.lookup(images["left"]),
        oracle.lookup(images["right"]),
    )
    tokens = (images["left"], images["right"])
    if "broken" in (left_role, right_role):
        good = "right" if left_role == "broken" else "left"
        bad = "left" if good == "right" else "right"
        return {"choice": bad if observer.fails_attention() else good}
    seen = memory.get(frozenset(tokens))
    if seen is not None:  # the same two images again: a consistency check
        same = "left" if seen == images["left"] else "right" if seen == images["right"] else "tie"
        if observer.fails_attention():
            same = {"left": "right", "right": "left", "tie": "left"}[same]
        return {"choice": same}
    choice = observer.choose(left, right, tie=bool(trial.get("tie")))
    memory[frozenset(tokens)] = {"left": images["left"], "right": images["right"]}.get(
        choice, "tie"
    )
    return {"choice": choice}


def run_participant(
    index: int,
    preferences: Preferences,
    oracle: StimulusOracle,
    settings: SimulationSettings,
    seed: int,
    run_tag: str,
) -> ParticipantResult:
    """One simulated participant from the Prolific entry URL to the end page."""
    import requests

    rng = np.random.default_rng([seed, index])
    observer = Observer(preferences, rng)
    pid = f"sim-{run_tag}-{index:05d}"
    result = ParticipantResult(pid)
    base, key = settings.base_url.rstrip("/"), settings.study_key
    memory: dict = {}
    with requests.Session() as http:

        def call(method: str, path: str, ok=(200,), **kwargs):
            response = http.request(method, base + path, timeout=settings.timeout_s, **kwargs)
            if response.status_code not in ok:
                raise SimulationError(f"{method} {path}: HTTP {response.status_code}")
            return response

        try:
            call(
                "GET",
                f"/s/{key}",
                params={"PROLIFIC_PID": pid, "STUDY_ID": f"sim-{run_tag}", "SESSION_ID": pid},
            )
            csrf = call("GET", f"/api/s/{key}/session").json()["csrf_token"]
            headers = {"X-CSRFToken": csrf}
            call("POST", f"/s/{key}/consent", data={"decision": "agree"}, headers=headers)
            call("POST", f"/s/{key}/instructions", headers=headers)
            width, height = settings.viewport
            check = call(
                "POST",
                f"/s/{key}/check",
                ok=(200, 403),
                data={"width": width, "height": height, "touch": 0},
                headers=headers,
            )
            if check.status_code == 403:
                result.outcome = "refused"
                return result
            body = call("GET", f"/api/s/{key}/trial").json()
            while body.get("phase") == "trials":
                trial = body["trial"]
                if settings.fetch_images:
                    for url in trial["images"].values():
                        call("GET", url)
                fields = _answer_for(trial, observer, oracle, memory)
                if settings.think_ms:
                    time.sleep(settings.think_ms / 1000 * float(rng.uniform(0.5, 1.5)))
                payload = {"trial": trial["id"], "rt_ms": float(rng.lognormal(7.0, 0.4)), **fields}
                body = _post_answer(http, base, key, payload, headers, settings, result)
                if "choice" in fields and not trial.get("practice"):
                    result.choices[fields["choice"]] = result.choices.get(fields["choice"], 0) + 1
            if body.get("phase") == "end":
                call("GET", f"/s/{key}/end")
                result.outcome = "ended"  # how exactly: from the database afterwards
            else:
                result.outcome = body.get("phase", "unknown")
        except (SimulationError, requests.RequestException, KeyError, ValueError) as exc:
            result.outcome, result.error = "error", f"{type(exc).__name__}: {exc}"
    return result


def _post_answer(http, base, key, payload, headers, settings, result) -> dict:
    """POST one answer; re-send after a lost response (the API makes that idempotent)."""
    import requests

    for attempt in range(settings.retries + 1):
        start = time.perf_counter()
        try:
            response = http.post(
                f"{base}/api/s/{key}/answer",
                json=payload,
                headers=headers,
                timeout=settings.timeout_s,
            )
        except requests.ConnectionError:
            if attempt == settings.retries:
                raise
            time.sleep(0.2 * (attempt + 1))
            continue
        if response.status_code >= 500 and attempt < settings.retries:
            time.sleep(0.2 * (attempt + 1))
            continue
        if response.status_code == 410:  # time limit: the body says where to go
            return response.json()
        if response.status_code != 200:
            raise SimulationError(f"answer: HTTP {response.status_code} {response.text[:200]}")
        end = time.perf_counter()
        result.answer_seconds.append(end - start)
        first = result.answer_window[0] if result.answer_window else start
        result.answer_window = (first, end)
        body = response.json()
        if body.get("status") == "recorded":
            result.answers += 1
        else:
            result.retried += 1
        return body
    raise SimulationError("answer: no response after retries")


# --- many participants -------------------------------------------------------------------------


@dataclass
class SimulationReport:
    results: list[ParticipantResult]
    wall_seconds: float
    preferences: Preferences

    @property
    def answers(self) -> int:
        return sum(r.answers for r in self.results)

    @property
    def answers_per_second(self) -> float:
        return self.answers / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def answering_seconds(self) -> float:
        """From the first answer sent to the last one acknowledged, over all participants."""
        windows = [r.answer_window for r in self.results if r.answer_window]
        if not windows:
            return 0.0
        return max(end for _, end in windows) - min(start for start, _ in windows)

    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        return counts

    def latency_ms(self, quantile: float) -> float:
        times = [t for r in self.results for t in r.answer_seconds]
        return float(np.quantile(times, quantile) * 1e3) if times else float("nan")

    def errors(self) -> list[str]:
        return [f"{r.participant}: {r.error}" for r in self.results if r.error]


def run_simulation(
    oracle: StimulusOracle,
    preferences: Preferences,
    *,
    base_url: str,
    participants: int,
    concurrency: int = 20,
    seed: int = 0,
    think_ms: float = 0.0,
    fetch_images: bool = False,
    run_tag: str | None = None,
    progress: bool = True,
) -> SimulationReport:
    """Play ``participants`` simulated participants through the server at ``base_url``.

    Each participant runs in its own thread with its own HTTP session; at most ``concurrency``
    are in the study at once. Participant ``k`` answers from ``np.random.default_rng([seed, k])``,
    so a run is reproducible up to the order in which the server assigns tasks.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    missing = sorted(set(oracle.variants) - set(preferences.scores))
    if missing:
        raise ValueError(f"no true score for variants {', '.join(missing)}")
    tag = run_tag or secrets.token_hex(4)
    settings = SimulationSettings(base_url, oracle.study_key, think_ms, fetch_images)
    start = time.perf_counter()
    results = []
    with (
        ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool,
        tqdm(total=participants, desc="participants", unit="p", disable=not progress) as bar,
    ):
        futures = [
            pool.submit(run_participant, k, preferences, oracle, settings, seed, tag)
            for k in range(participants)
        ]
        for future in as_completed(futures):
            results.append(future.result())
            bar.update()
    results.sort(key=lambda r: r.participant)
    ended = oracle.outcomes([r.participant for r in results if r.outcome == "ended"])
    for r in results:
        if r.outcome == "ended":
            r.outcome = ended.get(r.participant) or "ended"
    return SimulationReport(results, time.perf_counter() - start, preferences)
