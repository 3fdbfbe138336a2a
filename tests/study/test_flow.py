"""The participant flow through the real endpoints, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select

from study.models import Answer, Trial
from study.models import Participant as ParticipantRow
from tests.study.conftest import Participant as Client
from tests.study.conftest import attentive, person, run_through


def test_full_session_from_prolific_link_to_completion_code(participant, app):
    p, study = participant()
    body = p.start(pid="PID0001")
    assert body["phase"] == "trials"
    assert body["progress"] == {"done": 0, "total": 8, "practice_done": 0, "practice_total": 1}
    assert body["trial"]["practice"] is True
    final = run_through(p, body, pick=lambda t: {"choice": "left"} if t["images"]["left"] else {})
    assert final["phase"] == "end"
    page = p.client.get(f"/s/{study.key}/end").get_data(as_text=True)
    assert ("DONE123" in page) or ("FAIL456" in page)
    with app.extensions["hprune_db"].read() as db:
        row = db.scalar(select(ParticipantRow).where(person(study.key, "PID0001")))
        assert row.outcome in ("completed", "failed_attention")
        assert row.consent_version == "c1" and row.instructions_version == "i1"


def test_gold_trials_answered_correctly_complete_the_study(participant, app):
    p, study = participant()
    body = p.start(pid="PID-gold")

    final = run_through(p, body, pick=attentive(app))
    assert final["phase"] == "end"
    assert "DONE123" in p.client.get(f"/s/{study.key}/end").get_data(as_text=True)
    with app.extensions["hprune_db"].read() as db:
        n = db.scalar(
            select(func.count(Answer.id))
            .join(ParticipantRow, ParticipantRow.id == Answer.participant_id)
            .where(person(study.key, "PID-gold"))
        )
    assert n == 9  # 1 practice + 6 main + 1 gold + 1 repeat


def test_reopening_the_link_resumes_at_the_same_trial(participant, app):
    p, study = participant(attention={"broken": 1, "repeat": 1, "max_failures": 3})
    body = p.start(pid="PID-resume")
    rng = np.random.default_rng(1)
    for _ in range(3):
        body = p.answer(body["trial"]["id"], choice="left").get_json()
    current = body["trial"]["id"]
    # a fresh browser: no cookie, same Prolific link
    q, _ = participant(study.key)
    response = q.enter(PROLIFIC_PID="PID-resume", STUDY_ID="s", SESSION_ID="x")
    assert response.status_code == 303 and response.location.endswith("/trials")
    assert q.trial()["trial"]["id"] == current
    assert rng is not None


def test_time_limit_ends_the_session_with_the_timed_out_code(participant, app):
    from datetime import timedelta

    from study.models import utcnow

    p, study = participant()
    body = p.start(pid="PID-late")
    with app.extensions["hprune_db"].write() as db:
        row = db.scalar(select(ParticipantRow).where(person(study.key, "PID-late")))
        row.deadline_at = utcnow() - timedelta(seconds=1)
    response = p.answer(body["trial"]["id"], choice="left")
    assert response.status_code == 410
    assert response.get_json()["redirect"].endswith("/end")
    assert "LATE789" in p.client.get(f"/s/{study.key}/end").get_data(as_text=True)
    with app.extensions["hprune_db"].read() as db:
        row = db.scalar(select(ParticipantRow).where(person(study.key, "PID-late")))
        assert (row.phase, row.outcome) == ("end", "timed_out")
        assert db.scalar(select(func.count(Answer.id)).where(Answer.participant_id == row.id)) == 0


def test_a_trial_whose_filling_was_lost_is_refused_then_filled_again(participant, app):
    # On PostgreSQL the choice of an active trial commits without waiting for the disk: if the
    # database crashed right after, the participant would hold the id of a trial whose images
    # the database no longer has. Answering it must not record an answer to unknown images.
    from sqlalchemy import update

    p, _ = participant(
        scheduler="active", practice_trials=0, attention={}, scheduler_options={"warmup": 0}
    )
    body = p.start(pid="PID-lost-fill")
    shown = body["trial"]
    with app.extensions["hprune_db"].write() as db:
        db.execute(
            update(Trial)
            .where(Trial.public_id == shown["id"])
            .values(left_id=None, right_id=None, prompt_id=None, seed=None, shown_at=None)
        )
    response = p.answer(shown["id"], choice="left")
    assert response.status_code == 409
    again = p.trial()["trial"]
    assert again["id"] == shown["id"] and again["images"]["left"]
    assert p.answer(again["id"], choice="left").status_code == 200


def test_criterion_blocks_come_in_counterbalanced_orders_recorded_in_the_export(app, make_study):
    from study.export import export_responses

    criteria = [
        {"name": "quality", "question": "Which image looks better?"},
        {"name": "alignment", "question": "Which matches the text?", "show_prompt": True},
    ]
    study = make_study(criteria=criteria, trials_per_criterion=2, practice_trials=2, attention={})
    orders = []
    for i in range(6):
        p = Client(app.test_client(), study.key)
        body = p.start(pid=f"PID-order{i}")
        asked = []
        while body["phase"] == "trials":
            asked.append((body["trial"]["practice"], body["trial"]["question"]))
            body = p.answer(body["trial"]["id"], choice="left", load_ms=12.5).get_json()
        main = [q for practice, q in asked if not practice]
        first = main[0]
        assert main == [first] * 2 + [q for q in {c["question"] for c in criteria} - {first}] * 2
        assert [q for practice, q in asked if practice] == [main[0], main[2]]  # same order
        orders.append(first)
    assert sorted(orders.count(c["question"]) for c in criteria) == [3, 3]
    frame = export_responses(app.config["DATABASE_URL"], study=study.name)
    per_person = frame.groupby("participant")["criterion_order"].unique()
    assert sorted(v[0] for v in per_person) == ["alignment|quality"] * 3 + ["quality|alignment"] * 3
    first_block = frame[frame["kind"] == "pair"].groupby("participant").first()
    assert (first_block["criterion"] == first_block["criterion_order"].str.split("|").str[0]).all()
    assert (frame["min_display_ms"] == 300).all() and (frame["load_ms"] == 12.5).all()


def test_a_fixed_criterion_order_and_specs_stored_before_it_existed(participant, app):
    import json

    from study.spec import StudySpec, parse_spec

    criteria = [{"name": "quality"}, {"name": "alignment"}]
    p, study = participant(criteria=criteria, criterion_order="fixed", practice_trials=0)
    body = p.start(pid="PID-fixed")
    assert body["trial"]["question"] == "Which image looks better?"
    with app.extensions["hprune_db"].read() as db:
        order = db.scalar(
            select(ParticipantRow.criterion_order).where(person(study.key, "PID-fixed"))
        )
    assert order == "quality|alignment"
    stored = json.loads(parse_spec({"name": "old", "criteria": criteria}).to_json())
    for key in ("criterion_order", "min_display_ms"):  # as a version imported before
        del stored[key]
    old = StudySpec.from_json(json.dumps(stored))
    assert (old.criterion_order, old.min_display_ms) == ("fixed", 0)
