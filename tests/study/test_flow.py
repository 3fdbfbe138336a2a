"""The participant flow through the real endpoints, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select

from study.models import Answer, Trial
from study.models import Participant as ParticipantRow
from tests.study.conftest import attentive, run_through


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
        row = db.scalar(select(ParticipantRow).where(ParticipantRow.external_id == "PID0001"))
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
            .where(ParticipantRow.external_id == "PID-gold")
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
        row = db.scalar(select(ParticipantRow).where(ParticipantRow.external_id == "PID-late"))
        row.deadline_at = utcnow() - timedelta(seconds=1)
    response = p.answer(body["trial"]["id"], choice="left")
    assert response.status_code == 410
    assert response.get_json()["redirect"].endswith("/end")
    assert "LATE789" in p.client.get(f"/s/{study.key}/end").get_data(as_text=True)
    with app.extensions["hprune_db"].read() as db:
        row = db.scalar(select(ParticipantRow).where(ParticipantRow.external_id == "PID-late"))
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
