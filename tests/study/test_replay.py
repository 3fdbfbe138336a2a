"""Reproducible participants: with the app's ``RANDOM_SEED`` the same arrivals get the same
trials on every run, and any participant's trials can be replayed from the seed recorded for
them (the participants export's ``order_seed``), on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import aliased

from study.export import export_participants
from study.flow.identity import order_seed
from study.flow.planning import plan
from study.models import Participant, Stimulus, Study, Trial
from study.spec import parse_spec
from tests.study.conftest import BASE_SPEC, RANDOM_SEED, import_spec, person
from tests.study.conftest import Participant as Client

#: Two criteria, so that the (counterbalanced) block order is part of what must replay.
SPEC = {
    "criteria": [
        {"name": "quality", "question": "Which image looks better?"},
        {"name": "alignment", "question": "Which matches the text?"},
    ],
    "trials_per_criterion": 3,
    "attention": {"broken": 2, "repeat": 2, "max_failures": 9},
}


def layout(app, key: str, external_id: str) -> list[tuple]:
    """The participant's trials in order, as a participant sees them play out: kind, check,
    what it repeats, the gold answer, criterion, item and the variants on each side."""
    left, right = aliased(Stimulus), aliased(Stimulus)
    with app.extensions["hprune_db"].read() as s:
        return s.execute(
            select(
                Trial.position, Trial.kind, Trial.check, Trial.repeat_of, Trial.expected,
                Trial.criterion, Trial.prompt_id, Trial.seed, left.variant, right.variant,
            )
            .join(Participant, Participant.id == Trial.participant_id)
            .join(Study, Study.id == Participant.study_id)
            .join(left, left.id == Trial.left_id)
            .outerjoin(right, right.id == Trial.right_id)
            .where(Study.public_key == key, Participant.external_id == external_id)
            .order_by(Trial.position)
        ).all()  # fmt: skip


@pytest.fixture(scope="module")
def seeded(app):
    """Apps on the same database as ``app`` with RANDOM_SEED 7 and 8."""
    from study.app import create_app

    made = {
        seed: create_app({**app.config, "RANDOM_SEED": seed, "TESTING": True}) for seed in (7, 8)
    }
    yield made
    for other in made.values():
        other.extensions["hprune_db"].dispose()


def _start(app, key: str, pid: str) -> None:
    Client(app.test_client(), key).start(pid=pid)


def test_the_same_seed_gives_the_same_trials_and_another_seed_others(app, seeded, stimuli_dir):
    studies = [import_spec(app, stimuli_dir, **SPEC) for _ in range(3)]
    for study, seed in zip(studies, (7, 7, 8), strict=True):
        _start(seeded[seed], study.key, "PID-seeded")
    first, again, other = (layout(app, s.key, "PID-seeded") for s in studies)
    assert len(first) == 1 + 6 + 4
    assert first == again
    assert first != other
    seeds = {s.name: export_participants(app.config["DATABASE_URL"], s.name) for s in studies}
    recorded = [int(frame["order_seed"].iloc[0]) for frame in seeds.values()]
    assert recorded[0] == recorded[1] == order_seed(7, "PID-seeded") != recorded[2]


def test_anonymous_arrivals_are_seeded_by_their_place_in_the_study(app, seeded, stimuli_dir):
    studies = [import_spec(app, stimuli_dir, **SPEC) for _ in range(2)]
    for study in studies:
        for _ in range(2):
            _start(seeded[7], study.key, None)
    frames = [export_participants(app.config["DATABASE_URL"], s.name) for s in studies]
    assert [list(f["order_seed"]) for f in frames] == [
        [order_seed(7, "anonymous #0"), order_seed(7, "anonymous #1")]
    ] * 2


def test_the_recorded_seed_replays_a_participants_trials(app, stimuli_dir):
    """Any participant (the test app's are seeded by RANDOM_SEED): the plan from the exported
    seed and block order is the stored one, and a fresh copy of the study given that seed
    plays the same trials, images and sides included."""
    original = import_spec(app, stimuli_dir, **SPEC)
    for i in range(3):  # the study's state moves on: later participants see other counts
        _start(app, original.key, f"PID-replay{i}")
    people = export_participants(app.config["DATABASE_URL"], original.name)
    first = people.iloc[0]
    assert int(first["order_seed"]) == order_seed(RANDOM_SEED, "PID-replay0")
    played = layout(app, original.key, "PID-replay0")

    spec = parse_spec({**BASE_SPEC, **SPEC, "name": original.name})
    order = tuple(first["criterion_order"].split("|"))
    slots = plan(spec, np.random.default_rng(int(first["order_seed"])), order)
    assert [(s.kind, s.check, s.criterion) for s in slots] == [
        (kind, check, criterion) for _, kind, check, _, _, criterion, *_ in played
    ]

    replay = import_spec(app, stimuli_dir, **SPEC)  # the study as it was: nobody has started
    client = Client(app.test_client(), replay.key)
    client.consent(PROLIFIC_PID="PID-replayed", STUDY_ID="s", SESSION_ID="x")
    with app.extensions["hprune_db"].write() as s:  # the recorded seed, before trials exist
        s.execute(
            update(Participant)
            .where(person(replay.key, "PID-replayed"))
            .values(order_seed=int(first["order_seed"]))
        )
    assert client.post("instructions").status_code == 303
    assert layout(app, replay.key, "PID-replayed") == played
