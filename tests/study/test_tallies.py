"""The running tallies (study.tallies) always equal a count over the trials themselves: after
answers, attention failures, time-outs (found by another participant's assignment, or by the
participant's own next request), declines, for balanced and active pairs and for ratings; and
the migration that creates them fills them from the trials of a study already running."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import numpy as np
import pytest
from alembic import command
from sqlalchemy import select, update

from study.db import alembic_config, upgrade
from study.models import Participant, Stimulus, Study, TallyCell, TallyPair, Trial, utcnow
from tests.study.conftest import Participant as Client
from tests.study.conftest import person, run_through

ATTENTION = {"broken": 1, "repeat": 1, "max_failures": 0}


def recount(app, key: str) -> tuple[dict, dict]:
    """Pair and cell counts of a study, from its trials, answers and participants."""
    pairs: dict = {}
    cells: Counter = Counter()
    with app.extensions["hprune_db"].read() as s:
        variant = dict(s.execute(select(Stimulus.id, Stimulus.variant)).all())
        trials = s.execute(
            select(Trial, Participant.outcome)
            .join(Participant, Participant.id == Trial.participant_id)
            .join(Study, Study.id == Participant.study_id)
            .where(Study.public_key == key, Trial.kind.in_(("pair", "rating")))
        ).all()
        for trial, outcome in trials:
            if trial.left_id is None or outcome in ("failed_attention", "timed_out", "declined"):
                continue
            left = variant[trial.left_id]
            if trial.right_id is None:
                cells[(trial.criterion, left, "", trial.prompt_id, trial.seed)] += 1
                continue
            right = variant[trial.right_id]
            a, b = sorted((left, right))
            cells[(trial.criterion, a, b, trial.prompt_id, trial.seed)] += 1
            row = pairs.setdefault((trial.criterion, a, b), Counter())
            row["assigned"] += 1
            row["a_left"] += left == a
            choice = trial.answer.choice if trial.answer else None
            if choice == "tie":
                row["ties"] += 1
            elif choice is not None:
                row["a_wins" if (choice == "left") == (left == a) else "b_wins"] += 1
    return pairs, +cells


def stored(app, key: str) -> tuple[dict, dict]:
    with app.extensions["hprune_db"].read() as s:
        study_id = s.scalar(select(Study.id).where(Study.public_key == key))
        pairs = {
            (r.criterion, r.variant_a, r.variant_b): +Counter(
                assigned=r.assigned, a_left=r.a_left, a_wins=r.a_wins, b_wins=r.b_wins, ties=r.ties
            )
            for r in s.scalars(select(TallyPair).where(TallyPair.study_id == study_id))
        }
        cells = Counter(
            {
                (r.criterion, r.variant_a, r.variant_b, r.prompt_id, r.seed): r.assigned
                for r in s.scalars(select(TallyCell).where(TallyCell.study_id == study_id))
            }
        )
    return {k: v for k, v in pairs.items() if v}, +cells


def _expected_answer(app, trial: dict, wrong: bool = False) -> dict:
    """Answer gold trials correctly (or, with ``wrong``, incorrectly), others at random."""
    with app.extensions["hprune_db"].read() as s:
        expected = s.scalar(select(Trial.expected).where(Trial.public_id == trial["id"]))
    if trial["kind"] == "rating":
        good = 1 if expected else 4
        return {"rating": 5 if (expected and wrong) else good}
    if expected:
        other = "right" if expected == "left" else "left"
        return {"choice": other if wrong else expected}
    return {"choice": ["left", "right", "tie"][int(np.random.default_rng().integers(3))]}


def _set_deadline_past(app, key: str, pid: str) -> None:
    with app.extensions["hprune_db"].write() as s:
        s.execute(
            update(Participant)
            .where(person(key, pid))
            .values(deadline_at=utcnow() - timedelta(seconds=1))
        )


def _outcome(app, key: str, pid: str) -> str | None:
    with app.extensions["hprune_db"].read() as s:
        return s.scalar(select(Participant.outcome).where(person(key, pid)))


def _drive(app, handle, tag: str) -> None:
    """Finishers, an attention failure, two time-outs and a decline, checked after each step."""
    key = handle.key

    def check() -> None:
        assert stored(app, key) == recount(app, key)

    def start(pid: str) -> tuple[Client, dict]:
        client = Client(app.test_client(), key)
        return client, client.start(pid=pid)

    for i in range(3):
        client, body = start(f"{tag}-done-{i}")
        run_through(client, body, pick=lambda t: _expected_answer(app, t))
        check()

    client, body = start(f"{tag}-fails")
    while body["phase"] == "trials":
        body = client.answer(body["trial"]["id"], **_expected_answer(app, body["trial"], True))
        body = body.get_json()
    assert _outcome(app, key, f"{tag}-fails") == "failed_attention"
    check()

    late, body = start(f"{tag}-late")
    body = late.answer(body["trial"]["id"], **_expected_answer(app, body["trial"])).get_json()
    _set_deadline_past(app, key, f"{tag}-late")
    start(f"{tag}-next")  # an assignment times out who is past their limit
    assert _outcome(app, key, f"{tag}-late") == "timed_out"
    assert late.answer(body["trial"]["id"], choice="left").status_code == 410
    check()

    late2, body = start(f"{tag}-late2")
    _set_deadline_past(app, key, f"{tag}-late2")
    assert late2.answer(body["trial"]["id"], choice="left").status_code == 410
    assert _outcome(app, key, f"{tag}-late2") == "timed_out"
    check()

    declines = Client(app.test_client(), key)
    declines.enter(PROLIFIC_PID=f"{tag}-declines", STUDY_ID="s", SESSION_ID="x")
    assert declines.post("consent", decision="decline").status_code == 303
    check()


@pytest.mark.parametrize(
    "overrides",
    [
        {"scheduler": "balanced"},
        {"scheduler": "active", "scheduler_options": {"warmup": 3}},
        {"kind": "rating", "tie": False, "trials_per_criterion": 3},
    ],
    ids=["balanced", "active", "rating"],
)
def test_tallies_equal_a_recount_through_a_study(app, make_study, overrides) -> None:
    handle = make_study(attention=ATTENTION, **overrides)
    _drive(app, handle, f"T{handle.key[:6]}")


def test_migration_fills_the_tallies_of_a_running_study(app, make_study, db_url) -> None:
    handle = make_study(attention=ATTENTION)
    for i in range(3):
        client = Client(app.test_client(), handle.key)
        body = client.start(pid=f"M{handle.key[:6]}-{i}")
        for _ in range(3):
            fields = _expected_answer(app, body["trial"], wrong=i == 0)
            body = client.answer(body["trial"]["id"], **fields).get_json()
            if body["phase"] != "trials":
                break
    before = stored(app, handle.key)
    assert before == recount(app, handle.key)
    command.downgrade(alembic_config(db_url), "0001")
    upgrade(db_url)
    assert stored(app, handle.key) == before
