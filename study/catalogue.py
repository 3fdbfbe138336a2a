"""A study version's fixed facts: its spec, its images and the design they span.

A version never changes once imported (a changed spec or manifest makes a new version), so
these are read once per process and kept in the cache of the :class:`~study.db.Database`
the session belongs to (``session.info``): a request then needs no query for the spec, the
image tokens, or which variant, prompt and seed a stimulus shows.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from study.models import Stimulus, Study, StudyVersion, VersionStimulus
from study.spec import StudySpec


@dataclass(frozen=True, slots=True)
class StimulusFacts:
    token: str  # its only public name
    prompt: str
    variant: str
    prompt_id: str
    seed: int
    role: str  # stimulus | broken


@dataclass(frozen=True)
class Catalogue:
    """A study version: its spec and what can be assigned from it."""

    version_id: int
    study_id: int
    spec: StudySpec
    variants: list[str]
    items: list[tuple[str, int]]
    pairs: list[tuple[str, str]]  # the variant pairs the spec compares
    by_cell: dict[tuple[str, str, int], int]  # (variant, prompt_id, seed) -> stimulus id
    broken: list[tuple[int, tuple[str, int]]]  # (stimulus id, item) of the broken images
    stimuli: dict[int, StimulusFacts]

    def variant_of(self, stimulus_id: int | None) -> str | None:
        return None if stimulus_id is None else self.stimuli[stimulus_id].variant


def cache_of(session: Session) -> dict:
    """The cache of the database ``session`` belongs to (a throw-away dict for other sessions)."""
    return session.info.get("hprune_cache", {})


def catalogue(session: Session, version_id: int) -> Catalogue:
    """The catalogue of a study version, read once per process and database."""
    cache = cache_of(session).setdefault("catalogues", {})
    found = cache.get(version_id)
    if found is None:
        found = cache[version_id] = _load(session, version_id)
    return found


def study_id_of(session: Session, public_key: str) -> int | None:
    """The id of the study with this public key (a key never changes hands); None if unknown."""
    cache = cache_of(session).setdefault("study_ids", {})
    found = cache.get(public_key)
    if found is None:
        found = session.scalar(select(Study.id).where(Study.public_key == public_key))
        if found is not None:
            cache[public_key] = found
    return found


def _load(session: Session, version_id: int) -> Catalogue:
    study_id, spec_json = session.execute(
        select(StudyVersion.study_id, StudyVersion.spec_json).where(StudyVersion.id == version_id)
    ).one()
    spec = StudySpec.from_json(spec_json)
    rows = session.execute(
        select(
            Stimulus.id,
            Stimulus.token,
            Stimulus.prompt,
            Stimulus.variant,
            Stimulus.prompt_id,
            Stimulus.seed,
            Stimulus.role,
        )
        .join(VersionStimulus, VersionStimulus.stimulus_id == Stimulus.id)
        .where(VersionStimulus.version_id == version_id)
        .order_by(Stimulus.id)
    ).all()
    stimuli, by_cell, broken = {}, {}, []
    for sid, *facts in rows:
        stimulus = stimuli[sid] = StimulusFacts(*facts)
        if stimulus.role == "broken":
            broken.append((sid, (stimulus.prompt_id, stimulus.seed)))
        else:
            by_cell[(stimulus.variant, stimulus.prompt_id, stimulus.seed)] = sid
    variants = list(spec.variants) if spec.variants else sorted({v for v, _, _ in by_cell})
    items = sorted({(p, s) for _, p, s in by_cell})
    if spec.compare == "reference":
        pairs = [(spec.reference, v) for v in variants if v != spec.reference]
    else:
        pairs = list(itertools.combinations(variants, 2))
    return Catalogue(version_id, study_id, spec, variants, items, pairs, by_cell, broken, stimuli)
