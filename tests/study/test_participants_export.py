"""The participants export: one row per participant beside the responses, from the database."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from analysis.data import read_responses
from analysis.qc import study_attention_policy
from hprune.contracts.participants import read_participants
from hprune.contracts.prolific import APPROVALS_CSV, BULK_APPROVE_JSON
from hprune.contracts.responses import read_responses_table
from study.export import EXPORT_FILES_ALL, write_export
from study.simulate.driver import run_simulation
from study.simulate.observer import Preferences
from study.simulate.oracle import StimulusOracle
from tests.study.conftest import (
    VARIANTS,
    attentive,
    import_spec,
    make_stimuli,
    person,
    run_cli,
    run_through,
    serve_in_thread,
)
from tests.study.conftest import Participant as Client

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
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES_ALL)
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


def test_the_ledger_pays_and_rejects_on_prolific_and_codes_lab_participants(
    app, make_study, tmp_path
):
    """Was: no Prolific approvals, one study-wide code for everyone, no attention policy."""
    study = make_study(attention={"broken": 1, "repeat": 1, "max_failures": 0})
    done = Client(app.test_client(), study.key)
    run_through(done, done.start(pid="PIDledger-done"), pick=attentive(app))
    failed = Client(app.test_client(), study.key)
    run_through(failed, failed.start(pid="PIDledger-fail"), pick=careless(app))
    Client(app.test_client(), study.key).consent(  # consents, never goes on
        PROLIFIC_PID="PIDledger-idle", STUDY_ID="s", SESSION_ID="idle-session"
    )
    lab = Client(app.test_client(), study.key)
    lab.consent(id="p01")
    assert lab.post("instructions").status_code == 303
    run_through(lab, lab.trial(), pick=attentive(app))
    end_page = lab.client.get(f"/s/{study.key}/end").get_data(as_text=True)
    lab_code = re.search(r"DONE123-[0-9A-F]{8}", end_page)[0]  # the lab's own code

    out = write_export(app.config["DATABASE_URL"], tmp_path / "out", study=study.name)
    people = read_participants(tmp_path / "out")
    by_source = people.set_index("participant")
    lab_row = people[people["source"] == "lab"].iloc[0]
    assert lab_row["external_id"] == "p01" and pd.isna(lab_row["prolific_pid"])
    assert lab_row["completion_code"] == lab_code
    prolific = people[people["source"] == "prolific"].set_index("prolific_pid")
    assert prolific.loc["PIDledger-done", "completion_code"] == "DONE123"  # Prolific's own
    assert (people["attention_max_failures"] == 0).all()
    assert not by_source["simulated"].any()

    approvals = pd.read_csv(out[APPROVALS_CSV]).set_index("participant_id")
    assert approvals["action"].to_dict() == {
        "PIDledger-done": "APPROVE", "PIDledger-fail": "REJECT", "PIDledger-idle": "REVIEW"
    }  # fmt: skip
    assert (approvals["submission_id"] == "x").sum() == 2  # conftest's SESSION_ID
    assert json.loads(out[BULK_APPROVE_JSON].read_text()) == [{"submission_ids": ["x"]}]
    assert len(approvals.loc["PIDledger-fail", "message"]) >= 100

    # The analysis reads the study's attention policy from the responses export.
    responses = read_responses(tmp_path / "out")
    policy = study_attention_policy(responses)
    assert policy is not None and set(policy) == {0}
    assert set(responses["prolific_pid"].dropna()) == {"PIDledger-done", "PIDledger-fail"}


def test_simulated_participants_never_look_like_prolific_ones(app, db_url, make_study, tmp_path):
    """Was: the simulator's participants were exported as source prolific with a PROLIFIC_PID."""
    handle = make_study(trials_per_criterion=2, practice_trials=0)
    oracle = StimulusOracle.from_database(db_url, handle.name)
    with serve_in_thread(app) as base:
        report = run_simulation(
            oracle, Preferences.evenly_spaced(VARIANTS, 0.5, attention_failure_rate=0.0),
            base_url=base, participants=2, concurrency=2, seed=1, progress=False,
        )  # fmt: skip
    assert report.errors() == []
    out = write_export(db_url, tmp_path / "sim", study=handle.name)
    people = read_participants(tmp_path / "sim")
    assert (people["source"] == "simulated").all() and people["simulated"].all()
    assert people[["prolific_pid", "prolific_study_id", "prolific_session_id"]].isna().all().all()
    assert people["external_id"].str.startswith("sim-").all()
    assert people["completion_code"].str.fullmatch(r"DONE123-[0-9A-F]{8}").all()
    assert pd.read_csv(out[APPROVALS_CSV]).empty
    assert json.loads(out[BULK_APPROVE_JSON].read_text()) == []


def test_export_cells_cannot_run_as_spreadsheet_formulas(app, tmp_path):
    """Manifest fields reached the CSV exports verbatim (a variant `=1+2` ran as a formula)."""
    stimuli = make_stimuli(tmp_path / "stimuli", variants=["=1+2", "@SUM(A1)"],
                           prompts=["+A1", "-A2", "p03"])  # fmt: skip
    handle = import_spec(app, stimuli, trials_per_criterion=2)
    p = Client(app.test_client(), handle.key)
    run_through(p, p.start(pid="-PIDformula"), pick=attentive(app))
    write_export(app.config["DATABASE_URL"], tmp_path / "out", study=handle.name)
    raw = pd.read_csv(tmp_path / "out" / "responses.csv", dtype=str, keep_default_na=False)
    for column in ("left_variant", "right_variant", "prompt_id", "left_image"):
        cells = raw[column][raw[column] != ""]
        assert not cells.str.match(r"[=+\-@\t\r]").any(), column
    assert set(raw["prompt_id"]) <= {"'+A1", "'-A2", "p03"}
    people = pd.read_csv(tmp_path / "out" / "participants.csv", dtype=str)
    assert people["prolific_pid"].tolist() == ["'-PIDformula"]
    # Read back by the contracts (and in Parquet) they are what the manifest and link said.
    assert set(read_responses_table(tmp_path / "out" / "responses.csv")["prompt_id"]) <= {
        "+A1",
        "-A2",
        "p03",
    }
    parquet = pd.read_parquet(tmp_path / "out" / "responses.parquet")
    assert set(parquet["left_variant"].dropna()) >= {"=1+2", "@SUM(A1)"} - {None}
    assert read_participants(tmp_path / "out")["prolific_pid"].tolist() == ["-PIDformula"]


def test_a_participant_timed_out_by_someone_elses_assignment_still_gets_a_code(
    app, make_study, tmp_path
):
    from datetime import timedelta

    from sqlalchemy import select

    from study.models import Participant as Row
    from study.models import utcnow

    study = make_study()
    late = Client(app.test_client(), study.key)
    late.consent(id="late-lab")
    assert late.post("instructions").status_code == 303
    with app.extensions["hprune_db"].write() as db:
        row = db.scalar(select(Row).where(person(study.key, "lab:late-lab")))
        row.deadline_at = utcnow() - timedelta(seconds=1)
    Client(app.test_client(), study.key).start(pid="PIDlate-other")  # times the late one out
    page = late.client.get(f"/s/{study.key}/end", follow_redirects=True).get_data(as_text=True)
    code = re.search(r"LATE789-[0-9A-F]{8}", page)[0]
    write_export(app.config["DATABASE_URL"], tmp_path / "out", study=study.name)
    people = read_participants(tmp_path / "out").set_index("external_id")
    assert people.loc["late-lab", "outcome"] == "timed_out"
    assert people.loc["late-lab", "completion_code"] == code
