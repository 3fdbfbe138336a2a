"""The study spec (``study.yaml``): what is compared, how, and what participants are told.

A spec is parsed into a frozen :class:`StudySpec` and stored, as canonical JSON, with every
study version, so a participant's trials can always be explained by the spec they were given.
Every mistake in a spec is a :class:`~hprune.errors.UserError` naming the field.

Example (every field but ``name`` has a default; complete pair and MOS specs, each imported by
the tests, are in ``docs/study-specs.md``)::

    name: sd35-compression          # unique in the database; never shown to participants
    title: Image comparison         # shown to participants
    kind: pair                      # pair (2AFC) | rating (MOS 1-5)
    tie: true                       # pair only: offer "no preference"
    criteria:
      - name: quality
        question: Which image looks better?
      - name: alignment
        question: Which image matches the text better?
        show_prompt: true
    compare: all-pairs              # all-pairs | reference (each variant against `reference`)
    reference: original
    variants: [original, hpp-20]    # optional subset of the manifest's variants
    trials_per_criterion: 20        # main trials per criterion and participant
    criterion_order: counterbalanced  # counterbalanced (blocks in balanced orders) | fixed
    scheduler: balanced             # balanced | active
    practice_trials: 2
    attention: {broken: 2, repeat: 2, max_failures: 0}
    min_viewport: {width: 1000, height: 650}
    refuse_mobile: true
    min_display_ms: 300             # answers are taken only after the images showed this long
    time_limit_minutes: 45
    consent: {version: "1", text: "..."}
    instructions: {version: "1", text: "..."}
    completion_codes: {completed: C1, failed_attention: C2, timed_out: C3}
    completion_url: "https://app.prolific.com/submissions/complete?cc={code}"

Completion codes: a Prolific participant gets the spec's code for their outcome as it is,
because Prolific checks it against the codes set up for the study there (so set the same
codes on Prolific); who really finished is the participants export, not the code, so a
shared code gains nobody anything (``docs/study-specs.md``). Everyone else (lab, anonymous,
simulated) gets the code with a random suffix of their own, ``C1-7F3A9B2E``, which the
participants export lists beside them: a code someone shows proves who finished.

:func:`spec_warnings` names what is valid but risky (a completion URL without ``{code}``,
missing outcome codes, sessions too long to stay attentive); ``hprune study import`` prints them.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hprune.errors import UserError

KINDS = ("pair", "rating")
SCHEDULERS = ("balanced", "active")
CRITERION_ORDERS = ("counterbalanced", "fixed")
#: Why 300 ms: no answer given sooner can be about the images (a simple visual reaction
#: takes 200-250 ms, a comparison longer), a key pressed twice or meant for the previous
#: trial lands within one tapping interval (150-350 ms) of the first press, and it stays
#: below analysis.qc's too-fast threshold (400 ms), which still sees hurried answers.
DEFAULT_MIN_DISPLAY_MS = 300
#: What a spec stored before these keys existed meant: the spec's order, no minimum.
LEGACY_DEFAULTS = {"criterion_order": "fixed", "min_display_ms": 0}
DEFAULT_SCALE = {1: "Bad", 2: "Poor", 3: "Fair", 4: "Good", 5: "Excellent"}
DEFAULT_QUESTIONS = {
    "pair": "Which image looks better?",
    "rating": "How good is this image?",
}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # fullmatch: "$" lets "name\n" through
OUTCOME_CODES = ("completed", "failed_attention", "timed_out")
#: More trials than this per session: attention and data quality fall off over long sessions
#: (200 trials at a few seconds each is already 15-20 minutes of looking).
MAX_ADVISED_TRIALS = 200
#: Seconds per trial assumed for the session-length warning (pairs are quicker than ratings).
SECONDS_PER_TRIAL = {"pair": 4.0, "rating": 6.0}


@dataclass(frozen=True)
class Criterion:
    name: str
    question: str
    show_prompt: bool = False


@dataclass(frozen=True)
class Attention:
    broken: int = 0  # gold trials with an obviously broken image
    repeat: int = 0  # an earlier trial again, sides swapped (consistency)
    max_failures: int = 0  # failed gold trials tolerated before the session ends


@dataclass(frozen=True)
class Texts:
    version: str
    text: str


@dataclass(frozen=True)
class StudySpec:
    name: str
    title: str = "Image study"
    kind: str = "pair"
    tie: bool = False
    criteria: tuple[Criterion, ...] = ()
    compare: str = "all-pairs"
    reference: str | None = None
    variants: tuple[str, ...] | None = None
    trials_per_criterion: int = 20
    criterion_order: str = "counterbalanced"
    scheduler: str = "balanced"
    scheduler_options: dict = field(default_factory=dict)
    practice_trials: int = 2
    attention: Attention = Attention()
    min_width: int = 0
    min_height: int = 0
    refuse_mobile: bool = False
    min_display_ms: int = DEFAULT_MIN_DISPLAY_MS
    time_limit_minutes: float | None = None
    consent: Texts = Texts("1", "")
    instructions: Texts = Texts("1", "")
    scale_labels: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_SCALE))
    completion_codes: dict[str, str] = field(default_factory=dict)
    completion_url: str | None = None
    seed: int = 0

    def to_json(self) -> str:
        """Canonical JSON: the same spec always gives the same text (and fingerprint)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StudySpec:
        data = {**LEGACY_DEFAULTS, **json.loads(text)}
        data["criteria"] = tuple(Criterion(**c) for c in data["criteria"])
        data["attention"] = Attention(**data["attention"])
        data["consent"] = Texts(**data["consent"])
        data["instructions"] = Texts(**data["instructions"])
        data["scale_labels"] = {int(k): v for k, v in data["scale_labels"].items()}
        if data["variants"] is not None:
            data["variants"] = tuple(data["variants"])
        return cls(**data)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def criterion(self, name: str) -> Criterion:
        return next(c for c in self.criteria if c.name == name)

    def completion_link(self, code: str) -> str | None:
        return self.completion_url.replace("{code}", code) if self.completion_url else None

    def completion_code(self, outcome: str | None, *, per_participant: bool) -> str | None:
        """The code a participant with ``outcome`` is given (None if the spec has none): the
        spec's own, or with ``per_participant`` that code with a random suffix (module
        docstring)."""
        code = self.completion_codes.get(outcome or "")
        if code is None or not per_participant:
            return code
        return f"{code}-{secrets.token_hex(4).upper()}"

    @property
    def trials_per_participant(self) -> int:
        """Every trial a participant who completes the study answers."""
        main = self.trials_per_criterion * len(self.criteria)
        return self.practice_trials + main + self.attention.broken + self.attention.repeat


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec YAML file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"study spec {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        message = " ".join(str(exc).split())
        raise UserError(f"study spec {path} is not valid YAML: {message}") from None
    return parse_spec(data, source=str(path))


def parse_spec(data: Any, *, source: str = "spec") -> StudySpec:
    """Validate a spec given as a dict (as YAML loads it)."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: the spec must be a mapping of fields")
    known = {
        "name", "title", "kind", "tie", "criteria", "compare", "reference", "variants",
        "trials_per_criterion", "scheduler", "scheduler_options", "practice_trials", "attention",
        "min_viewport", "refuse_mobile", "time_limit_minutes", "consent", "instructions",
        "scale_labels", "completion_codes", "completion_url", "seed", "criterion_order",
        "min_display_ms",
    }  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{source}: unknown field(s) {', '.join(unknown)}")

    def fail(message: str) -> UserError:
        return UserError(f"{source}: {message}")

    def integer(key: str, default: int, low: int = 0, high: int = 10_000) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise fail(f"'{key}' must be an integer between {low} and {high}, got {value!r}")
        return value

    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise fail("'name' is required: 1-100 letters, digits, '_', '.' or '-'")
    kind = data.get("kind", "pair")
    if kind not in KINDS:
        raise fail(f"'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    tie = data.get("tie", False)
    if not isinstance(tie, bool):
        raise fail("'tie' must be true or false")
    if tie and kind != "pair":
        raise fail("'tie' applies to kind: pair only")

    criteria = _criteria(data.get("criteria"), kind, fail)
    compare = data.get("compare", "all-pairs")
    if compare not in ("all-pairs", "reference"):
        raise fail(f"'compare' must be all-pairs or reference, got {compare!r}")
    reference = data.get("reference")
    if compare == "reference" and not isinstance(reference, str):
        raise fail("compare: reference needs 'reference: <variant name>'")
    variants = data.get("variants")
    if variants is not None:
        if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
            raise fail("'variants' must be a list of variant names")
        if len(set(variants)) != len(variants):
            raise fail("'variants' lists a variant twice")
        variants = tuple(variants)

    criterion_order = data.get("criterion_order", "counterbalanced")
    if criterion_order not in CRITERION_ORDERS:
        raise fail(
            f"'criterion_order' must be one of {', '.join(CRITERION_ORDERS)}, "
            f"got {criterion_order!r}"
        )
    scheduler = data.get("scheduler", "balanced")
    if scheduler not in SCHEDULERS:
        raise fail(f"'scheduler' must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    scheduler_options = data.get("scheduler_options") or {}
    if not isinstance(scheduler_options, dict):
        raise fail("'scheduler_options' must be a mapping")

    attention = data.get("attention") or {}
    if not isinstance(attention, dict) or set(attention) - {"broken", "repeat", "max_failures"}:
        raise fail("'attention' takes broken, repeat and max_failures")
    att = Attention(
        **{k: _int_in(attention, k, 0, 0, 1000, fail) for k in ("broken", "repeat", "max_failures")}
    )

    viewport = data.get("min_viewport") or {}
    if not isinstance(viewport, dict) or set(viewport) - {"width", "height"}:
        raise fail("'min_viewport' takes width and height (CSS pixels)")
    min_width = _int_in(viewport, "width", 0, 0, 10_000, fail)
    min_height = _int_in(viewport, "height", 0, 0, 10_000, fail)

    refuse_mobile = data.get("refuse_mobile", False)
    if not isinstance(refuse_mobile, bool):
        raise fail("'refuse_mobile' must be true or false")
    time_limit = data.get("time_limit_minutes")
    if time_limit is not None and (
        isinstance(time_limit, bool) or not isinstance(time_limit, int | float) or time_limit <= 0
    ):
        raise fail("'time_limit_minutes' must be a positive number")

    scale = data.get("scale_labels")
    if scale is None:
        scale = dict(DEFAULT_SCALE)
    elif not isinstance(scale, dict) or sorted(scale) != [1, 2, 3, 4, 5]:
        raise fail("'scale_labels' must give a label for each of 1, 2, 3, 4, 5")
    else:
        scale = {int(k): str(v) for k, v in scale.items()}

    codes = data.get("completion_codes") or {}
    if not isinstance(codes, dict) or set(codes) - {"completed", "failed_attention", "timed_out"}:
        raise fail("'completion_codes' takes completed, failed_attention and timed_out")
    if not all(isinstance(v, str | int) and str(v).strip() for v in codes.values()):
        raise fail("completion codes must be non-empty strings")
    codes = {k: str(v) for k, v in codes.items()}
    url = data.get("completion_url")
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("http://", "https://"))
    ):
        raise fail("'completion_url' must be an http(s) URL, with {code} where the code goes")

    title = data.get("title", "Image study")
    if not isinstance(title, str) or not title.strip():
        raise fail("'title' must be a non-empty string")

    return StudySpec(
        name=name,
        title=title,
        kind=kind,
        tie=tie,
        criteria=criteria,
        compare=compare,
        reference=reference if compare == "reference" else None,
        variants=variants,
        trials_per_criterion=integer("trials_per_criterion", 20, 1, 10_000),
        criterion_order=criterion_order,
        scheduler=scheduler,
        scheduler_options=scheduler_options,
        practice_trials=integer("practice_trials", 2, 0, 100),
        attention=att,
        min_width=min_width,
        min_height=min_height,
        refuse_mobile=refuse_mobile,
        min_display_ms=integer("min_display_ms", DEFAULT_MIN_DISPLAY_MS, 0, 10_000),
        time_limit_minutes=time_limit,
        consent=_texts(data.get("consent"), "consent", fail),
        instructions=_texts(data.get("instructions"), "instructions", fail),
        scale_labels=scale,
        completion_codes=codes,
        completion_url=url,
        seed=integer("seed", 0, 0, 2**31 - 1),
    )


def spec_warnings(spec: StudySpec) -> list[str]:
    """What in a valid spec is risky, one sentence each (empty: nothing)."""
    warnings = []
    if spec.completion_url and "{code}" not in spec.completion_url:
        warnings.append(
            "completion_url has no {code}: every participant is sent to the same address "
            "whatever their outcome, and Prolific gets no completion code (use e.g. "
            "https://app.prolific.com/submissions/complete?cc={code})"
        )
    if spec.completion_codes or spec.completion_url:
        needed = {"completed": True, "failed_attention": spec.attention.broken > 0}
        needed["timed_out"] = spec.time_limit_minutes is not None
        for outcome in OUTCOME_CODES:
            if needed[outcome] and outcome not in spec.completion_codes:
                warnings.append(
                    f"no completion code for {outcome}: those participants get no code to "
                    "submit (on Prolific they would have to return the study or write to you)"
                )
    n = spec.trials_per_participant
    minutes = n * SECONDS_PER_TRIAL[spec.kind] / 60
    if n > MAX_ADVISED_TRIALS:
        warnings.append(
            f"{n} trials per participant ({spec.trials_per_criterion} per criterion): about "
            f"{minutes:.0f} minutes of looking; more than {MAX_ADVISED_TRIALS} trials tire "
            "participants: lower trials_per_criterion and recruit more people"
        )
    if spec.time_limit_minutes is not None and minutes > spec.time_limit_minutes:
        warnings.append(
            f"{n} trials take about {minutes:.0f} minutes at "
            f"{SECONDS_PER_TRIAL[spec.kind]:g} s each, more than time_limit_minutes "
            f"({spec.time_limit_minutes:g}): many participants would time out"
        )
    return warnings


def _int_in(mapping: dict, key: str, default: int, low: int, high: int, fail) -> int:
    value = mapping.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise fail(f"'{key}' must be an integer between {low} and {high}, got {value!r}")
    return value


def _criteria(raw: Any, kind: str, fail) -> tuple[Criterion, ...]:
    if raw is None:
        return (Criterion("quality", DEFAULT_QUESTIONS[kind]),)
    if not isinstance(raw, list) or not raw:
        raise fail("'criteria' must be a non-empty list")
    out = []
    for entry in raw:
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or set(entry) - {"name", "question", "show_prompt"}:
            raise fail("each criterion takes name, question and show_prompt")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise fail(f"criterion name {name!r} must be letters, digits, '_', '.' or '-'")
        question = entry.get("question", DEFAULT_QUESTIONS[kind])
        show_prompt = entry.get("show_prompt", False)
        if not isinstance(question, str) or not isinstance(show_prompt, bool):
            raise fail(f"criterion {name}: question must be text, show_prompt true or false")
        out.append(Criterion(name, question, show_prompt))
    if len({c.name for c in out}) != len(out):
        raise fail("two criteria have the same name")
    return tuple(out)


def _texts(raw: Any, key: str, fail) -> Texts:
    if raw is None:
        return Texts("1", "")
    if isinstance(raw, str):
        return Texts(hashlib.sha256(raw.encode()).hexdigest()[:12], raw)
    if (
        isinstance(raw, dict)
        and set(raw) <= {"version", "text"}
        and isinstance(raw.get("text"), str)
    ):
        return Texts(str(raw.get("version", "1")), raw["text"])
    raise fail(f"'{key}' must be text, or {{version: ..., text: ...}}")
