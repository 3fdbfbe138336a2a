"""The participants export: one row per participant beside the responses, from the database."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hprune.contracts.participants import read_participants
from hprune.contracts.responses import read_responses_table
from tests.study.conftest import Participant as Client
from tests.study.conftest import attentive, run_cli, run_through

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile"


def careless(app):
    """Answers every gold trial wrongly (and the rest as an attentive person would)."""
    from sqlalchemy import select

    from study.models import Trial

    honest = attentive(app)

    def pick(trial: dict) -> dict:
        with app.extensions["hprune_db"].read() as db:
            expected = db.scalar(select(Trial.expected).where(Trial.public_id == trial["id"]))
        if expected == "<=2":
            return {"rating": 5}
        if expected in ("left", "right"):
            return {"choice": "right" if expected == "left" else "left"}
        return honest(trial)

    return pick


def with_times(pick):
    """The same answers, each with a different response time (the first, practice, slowest)."""
    times = iter(range(3000, 0, -170))
    return lambda trial: {**pick(trial), "rt_ms": float(next(times))}


def test_export_writes_one_row_per_participant_beside_the_responses(app, make_study, tmp_path):
    study = make_study()
    done = Client(app.test_client(), study.key)
    run_through(done, done.start(pid="PIDpart-done"), pick=with_times(attentive(app)))
    failed = Client(app.test_client(), study.key)
    end = run_through(failed, failed.start(pid="PIDpart-fail"), pick=careless(app))
    assert end["phase"] == "end"
    phone = app.test_client()
    phone.environ_base["HTTP_USER_AGENT"] = IPHONE
    idle = Client(phone, study.key)  # agreed, then left before the trials
    idle.consent(PROLIFIC_PID="PIDpart-idle", STUDY_ID="st", SESSION_ID="se")

    out = tmp_path / "export"
    result = run_cli("study", "--db", app.config["DATABASE_URL"], "export", "--study",
                     study.name, "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert str(out / "participants.csv") in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "codebook.json",
        "participants.csv",
        "responses.csv",
        "responses.parquet",
    ]
    people = read_participants(out).set_index("prolific_pid")
    assert sorted(people.index) == ["PIDpart-done", "PIDpart-fail", "PIDpart-idle"]
    assert people.loc["PIDpart-done", "outcome"] == "completed"
    assert people.loc["PIDpart-fail", "outcome"] == "failed_attention"
    assert pd.isna(people.loc["PIDpart-idle", "outcome"])
    assert people.loc["PIDpart-done", "completion_code"] == "DONE123"
    assert people.loc["PIDpart-fail", "completion_code"] == "FAIL456"
    assert pd.isna(people.loc["PIDpart-idle", "completion_code"])
    assert bool(people.loc["PIDpart-done", "passed_checks"])
    assert not bool(people.loc["PIDpart-fail", "passed_checks"])
    assert people.loc["PIDpart-fail", "attention_failed"] >= 1
    assert (people["source"] == "prolific").all() and (people["study"] == study.name).all()
    assert people.loc["PIDpart-idle", "prolific_study_id"] == "st"
    assert people.loc["PIDpart-idle", "device_class"] == "mobile"
    assert people.loc["PIDpart-done", "device_class"] == "desktop"
    assert people.loc["PIDpart-done", "viewport_width"] == 1280
    assert not pd.isna(people.loc["PIDpart-idle", "consented_at"])
    assert people.loc["PIDpart-idle", "trials_answered"] == 0
    assert pd.isna(people.loc["PIDpart-idle", "median_rt_ms"])

    # The same people as the responses, counted and timed from the same answers.
    responses = read_responses_table(out / "responses.csv")
    by_person = people.set_index("participant")
    answered = responses.groupby("participant").size()
    assert answered.to_dict() == by_person.loc[answered.index, "trials_answered"].to_dict()
    timed = responses[responses["kind"] != "practice"].groupby("participant")["rt_ms"].median()
    assert np.allclose(timed, by_person.loc[timed.index, "median_rt_ms"].astype(float))
    attention = responses[responses["kind"] == "attention"].groupby("participant").size()
    assert attention.to_dict() == by_person.loc[attention.index, "attention_answered"].to_dict()
    wrong = responses[responses["kind"] == "attention"].groupby("participant")["check_passed"]
    wrong = wrong.apply(lambda passed: int((passed == False).sum()))  # noqa: E712
    assert wrong.to_dict() == by_person.loc[wrong.index, "attention_failed"].to_dict()
    checks = responses.groupby("participant")["passed_checks"].first()
    assert checks.to_dict() == by_person.loc[checks.index, "passed_checks"].to_dict()
