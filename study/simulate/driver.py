"""Simulated participants played through the real participant API of a running study server
(docs/study-api.md), one ``requests.Session`` each, in threads."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import requests
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from study.simulate.observer import ImagePreferences, Preferences, Seen
from study.simulate.oracle import StimulusOracle


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


def _answer_for(trial: dict, observer, oracle: StimulusOracle, memory: dict, fetch=None) -> dict:
    """The answer fields for one trial, from the observer and the oracle.

    The oracle says which images are an attention trial's broken ones (answered by the
    observer's attention) and which image is which across trials (for repeated pairs). The
    name-based observer gets each image's variant from it; the image-aware one gets instead the
    bytes ``fetch(url)`` returns (the server's response, as a browser receives it) and never
    a variant. The observer remembers which image it chose in each pair (by the image, not
    its URL: URLs are fresh for every trial), so a repeated pair gets the same answer unless
    it lapses."""
    images = trial["images"]

    def view(url: str, shown) -> Seen:
        if observer.preferences.judges_pixels:
            return Seen(image=fetch(url), prompt=trial.get("prompt"))
        return Seen(variant=shown.variant, prompt=trial.get("prompt"))

    if trial["kind"] == "rating":
        shown = oracle.lookup(images["image"])
        scale = trial.get("scale") or {"min": 1, "max": 5}
        low, high = int(scale["min"]), int(scale["max"])
        if shown.role == "broken":
            return {"rating": high if observer.fails_attention() else low}
        return {"rating": observer.rate(view(images["image"], shown), low, high)}
    left, right = oracle.lookup(images["left"]), oracle.lookup(images["right"])
    if "broken" in (left.role, right.role):
        good = "right" if left.role == "broken" else "left"
        bad = "left" if good == "right" else "right"
        return {"choice": bad if observer.fails_attention() else good}
    pair = frozenset((left.stimulus, right.stimulus))
    seen = memory.get(pair)
    if seen is not None:  # the same two images again: a consistency check
        same = {left.stimulus: "left", right.stimulus: "right"}.get(seen, "tie")
        if observer.fails_attention():
            same = {"left": "right", "right": "left", "tie": "left"}[same]
        return {"choice": same}
    choice = observer.choose(
        view(images["left"], left), view(images["right"], right), tie=bool(trial.get("tie"))
    )
    memory[pair] = {"left": left.stimulus, "right": right.stimulus}.get(choice, "tie")
    return {"choice": choice}


def run_participant(
    index: int,
    preferences: Preferences | ImagePreferences,
    oracle: StimulusOracle,
    settings: SimulationSettings,
    seed: int,
    run_tag: str,
) -> ParticipantResult:
    """One simulated participant from the Prolific entry URL to the end page, marked as
    simulated in the study database (through ``oracle``) once the server keeps it."""
    rng = np.random.default_rng([seed, index])
    observer = preferences.observer(rng)
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
            call("POST", f"/s/{key}/consent", data={"decision": "agree"}, headers=headers)
            oracle.mark_simulated(pid)  # the server keeps a participant from consent on
            call("POST", f"/s/{key}/instructions", headers=headers)
            body = call("GET", f"/api/s/{key}/trial").json()
            fetched: dict[str, bytes] = {}

            def fetch(url: str) -> bytes:
                if url not in fetched:
                    fetched[url] = call("GET", url).content
                return fetched[url]

            while body.get("phase") == "trials":
                trial = body["trial"]
                fetched.clear()
                if settings.fetch_images or preferences.judges_pixels:
                    for url in trial["images"].values():
                        fetch(url)
                fields = _answer_for(trial, observer, oracle, memory, fetch)
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
        except (
            SimulationError,
            requests.RequestException,
            SQLAlchemyError,
            KeyError,
            ValueError,
        ) as exc:
            result.outcome, result.error = "error", f"{type(exc).__name__}: {exc}"
    return result


def _post_answer(http, base, key, payload, headers, settings, result) -> dict:
    """POST one answer; re-send after a lost response (the API makes that idempotent)."""
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


@dataclass
class SimulationReport:
    results: list[ParticipantResult]
    wall_seconds: float
    preferences: Preferences | ImagePreferences

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
    preferences: Preferences | ImagePreferences,
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
    so a run is reproducible up to the order in which the server assigns tasks. The
    participants are name-based or image-aware observers as ``preferences`` is a
    :class:`Preferences` or an :class:`ImagePreferences` (``study.simulate.observer``).
    """
    preferences.check(oracle.variants)
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
