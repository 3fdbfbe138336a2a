"""Bad input gets a 4xx with a clear message, never a 500, and leaves the database unchanged."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from study.models import Answer, Participant, Study, Trial
from tests.study.conftest import Participant as Client

FIXTURE_OK = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def snapshot(app) -> tuple:
    """Everything an answer or an arrival could change."""
    with app.extensions["hprune_db"].read() as s:
        answers = s.execute(
            select(Answer.trial_id, Answer.choice, Answer.rating, Answer.rt_ms, Answer.passed)
        ).all()
        people = s.execute(select(Participant.id, Participant.phase, Participant.outcome)).all()
        trials = s.scalar(select(func.count(Trial.id)))
        studies = s.execute(select(Study.id, Study.status)).all()
    return sorted(answers), sorted(people), trials, sorted(studies)


@pytest.fixture
def started(participant):
    p, study = participant()
    body = p.start(pid="PID-bad-1")
    p.trial()  # the current trial is marked shown before the snapshots
    return p, study, body


def _assert_clean_4xx(response, *statuses):
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    if statuses:
        assert response.status_code in statuses
    data = response.get_json(silent=True)
    message = data["error"] if data else response.get_data(as_text=True)
    assert message and "Traceback" not in message


any_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.sampled_from(["left", "right", "tie", "up", "LEFT", "3", ""]),
)
answer_fields = st.dictionaries(
    st.sampled_from(["choice", "rating", "rt_ms", "load_ms", "extra"]), any_value
)
MAX_MS = 24 * 3600 * 1000


def _duration(value) -> bool:
    return type(value) in (int, float) and 0 <= value < MAX_MS


def acceptable(fields: dict, trial: dict) -> bool:
    """Whether ``fields`` answer ``trial`` validly (docs/study-api.md), decided independently
    of the server: a pair trial takes a choice (tie only where offered), a rating trial a
    whole number on its scale, both a response time, perhaps a loading time, nothing else."""
    if set(fields) - {"choice", "rating", "rt_ms", "load_ms"} or not _duration(fields.get("rt_ms")):
        return False
    if fields.get("load_ms") is not None and not _duration(fields["load_ms"]):
        return False
    choice, rating = fields.get("choice"), fields.get("rating")
    if trial["kind"] == "rating":
        scale = range(trial["scale"]["min"], trial["scale"]["max"] + 1)
        return choice is None and type(rating) is int and rating in scale
    sides = ("left", "right", "tie") if trial["tie"] else ("left", "right")
    return rating is None and isinstance(choice, str) and choice in sides


@pytest.fixture(params=["pair, no ties", "rating"])
def current(request, participant):
    """A participant at their first trial (marked shown), in a pair study without ties or a
    rating study: (client, study, the current trial)."""
    spec = {"tie": False} if request.param == "pair, no ties" else {"kind": "rating", "tie": False}
    p, study = participant(**spec)
    trial = p.start(pid="PID-fuzz")["trial"]
    assert trial["kind"] == ("rating" if request.param == "rating" else "pair")
    return p, study, trial


DELETE = object()
#: One field of a valid answer changed: what a participant's buggy or tampered page sends.
one_change = st.tuples(
    st.sampled_from(["choice", "rating", "rt_ms", "load_ms", "extra"]),
    st.one_of(st.just(DELETE), any_value),
)


def _valid(trial: dict) -> dict:
    fields = {"rating": 3} if trial["kind"] == "rating" else {"choice": "left"}
    return {"rt_ms": 500.0, "load_ms": 20.0, **fields}


@FIXTURE_OK
@given(fields=answer_fields, change=one_change, mode=st.sampled_from(["random", "one change"]))
def test_invalid_answers_to_the_current_trial_are_400_without_change(
    app, current, fields, change, mode
):
    """The real current trial's id, so that every answer reaches the answer's validation: a
    random answer, or a valid one with one field changed, each kept only where an independent
    oracle finds it invalid."""
    p, study, trial = current
    if mode == "one change":
        fields = _valid(trial)
        name, value = change
        if value is DELETE:
            fields.pop(name, None)
        else:
            fields[name] = value
    body = {"trial": trial["id"], **fields}
    assume(not acceptable(fields, trial))
    before = snapshot(app)
    response = p.client.post(
        f"/api/s/{study.key}/answer", json=body, headers={"X-CSRFToken": p.csrf}
    )
    _assert_clean_4xx(response, 400)
    assert snapshot(app) == before


PAIR_REFUSALS = [
    ({"choice": "tie"}, "The choice must be one of: left, right."),  # ties are off
    ({"choice": "up"}, "The choice must be one of: left, right."),
    ({"choice": "LEFT"}, "The choice must be one of: left, right."),
    ({"choice": True}, "The choice must be left, right or tie."),
    ({"choice": 1}, "The choice must be left, right or tie."),
    ({"rating": 3}, "This trial needs a choice (left or right), not a rating."),
    ({"choice": "left", "rating": 3}, "This trial needs a choice (left or right), not a rating."),
    ({}, "This trial needs a choice (left or right), not a rating."),
]
RATING_REFUSALS = [
    ({"rating": 0}, "The rating must be one of [1, 2, 3, 4, 5]."),
    ({"rating": 6}, "The rating must be one of [1, 2, 3, 4, 5]."),
    ({"rating": -1}, "The rating must be one of [1, 2, 3, 4, 5]."),
    ({"rating": 10**6}, "The rating must be one of [1, 2, 3, 4, 5]."),
    ({"rating": 2.5}, "The rating must be a whole number."),
    ({"rating": 3.0}, "The rating must be a whole number."),
    ({"rating": "3"}, "The rating must be a whole number."),
    ({"rating": True}, "The rating must be a whole number."),
    ({"rating": False}, "The rating must be a whole number."),
    ({"rating": [3]}, "The rating must be a whole number."),
    ({"choice": "left"}, "This trial needs a rating, not a choice."),
    ({"choice": "left", "rating": 3}, "This trial needs a rating, not a choice."),
]


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [("pair", f, m) for f, m in PAIR_REFUSALS] + [("rating", f, m) for f, m in RATING_REFUSALS],
)
def test_each_invalid_answer_is_400_with_its_message_and_changes_nothing(
    app, participant, kind, fields, message
):
    """Then the same trial takes a valid answer: the refusals were the validation's."""
    p, _ = participant(tie=False, **({"kind": "rating"} if kind == "rating" else {}))
    trial = p.start(pid="PID-refused")["trial"]
    assert not acceptable({"rt_ms": 500.0, **fields}, trial)
    before = snapshot(app)
    response = p.answer(trial["id"], **fields)
    assert (response.status_code, response.get_json()) == (400, {"error": message})
    assert snapshot(app) == before
    valid = {"rating": 1} if kind == "rating" else {"choice": "right"}
    accepted = p.answer(trial["id"], **valid)
    assert accepted.status_code == 200 and accepted.get_json()["status"] == "recorded"
    assert snapshot(app) != before


@FIXTURE_OK
@given(raw=st.binary(max_size=6000))
def test_arbitrary_bytes_are_rejected_without_change(app, started, raw):
    _assert_raw_answer_refused(app, started, raw, 400, 413)


def _assert_raw_answer_refused(app, started, raw: bytes, *statuses) -> None:
    """``raw`` posted as an answer's JSON body is refused (``statuses``) and changes nothing."""
    p, study, _ = started
    before = snapshot(app)
    response = p.client.post(
        f"/api/s/{study.key}/answer",
        data=raw,
        headers={"X-CSRFToken": p.csrf, "Content-Type": "application/json"},
    )
    _assert_clean_4xx(response, *statuses)
    assert snapshot(app) == before


@FIXTURE_OK
@given(trial_id=st.text(min_size=1, max_size=64))
def test_forged_trial_ids_are_404(app, started, trial_id):
    p, _, body = started
    if trial_id == body["trial"]["id"]:
        return
    before = snapshot(app)
    response = p.answer(trial_id, choice="left")
    _assert_clean_4xx(response, 404)
    assert snapshot(app) == before


def test_another_participants_trial_is_not_found(app, started, participant):
    _, study, body = started
    q, _ = participant(study.key)
    q.start(pid="PID-bad-2")
    before = snapshot(app)
    _assert_clean_4xx(q.answer(body["trial"]["id"], choice="left"), 404)
    assert snapshot(app) == before


def test_double_submit_is_idempotent_and_a_changed_answer_conflicts(app, started):
    p, _, body = started
    trial_id = body["trial"]["id"]
    first = p.answer(trial_id, choice="left")
    assert first.status_code == 200 and first.get_json()["status"] == "recorded"
    before = snapshot(app)
    again = p.answer(trial_id, choice="left")
    assert again.status_code == 200 and again.get_json()["status"] == "already_recorded"
    assert again.get_json()["trial"]["id"] == first.get_json()["trial"]["id"]
    _assert_clean_4xx(p.answer(trial_id, choice="right"), 409)
    assert snapshot(app) == before


def test_answering_a_later_trial_first_is_a_conflict(app, started):
    p, study, _ = started
    with app.extensions["hprune_db"].read() as s:
        later = s.scalar(
            select(Trial.public_id)
            .join(Participant)
            .where(Participant.external_id == "PID-bad-1", Trial.position == 5)
            .join(Study)
            .where(Study.public_key == study.key)
        )
    before = snapshot(app)
    _assert_clean_4xx(p.answer(later, choice="left"), 409)
    assert snapshot(app) == before


def test_wrong_or_missing_csrf_token_is_refused(app, started):
    p, study, body = started
    before = snapshot(app)
    payload = {"trial": body["trial"]["id"], "choice": "left", "rt_ms": 10}
    for headers in ({"X-CSRFToken": "forged.token"}, {}):
        response = p.client.post(f"/api/s/{study.key}/answer", json=payload, headers=headers)
        _assert_clean_4xx(response, 400)
        assert "CSRF" in response.get_json()["error"]
    response = p.client.post(f"/s/{study.key}/consent", data={"decision": "agree"})
    _assert_clean_4xx(response, 400)
    assert snapshot(app) == before


def test_oversized_answer_is_413(app, started):
    p, study, body = started
    before = snapshot(app)
    payload = json.dumps(
        {"trial": body["trial"]["id"], "choice": "left", "rt_ms": 1, "pad": "x" * 5000}
    )
    response = p.client.post(
        f"/api/s/{study.key}/answer",
        data=payload,
        headers={"X-CSRFToken": p.csrf, "Content-Type": "application/json"},
    )
    _assert_clean_4xx(response, 413)
    assert snapshot(app) == before


def test_unknown_study_malformed_link_and_no_session(app, started):
    _, study, _ = started
    before = snapshot(app)
    fresh = app.test_client()
    _assert_clean_4xx(fresh.get("/s/NoSuchStudy1", query_string={"PROLIFIC_PID": "x"}), 404)
    _assert_clean_4xx(fresh.get("/api/s/NoSuchStudy1/trial"), 404)
    _assert_clean_4xx(fresh.get(f"/s/{study.key}", query_string={"PROLIFIC_PID": "<script>"}), 400)
    _assert_clean_4xx(fresh.get(f"/api/s/{study.key}/trial"), 403)
    _assert_clean_4xx(fresh.get(f"/s/{study.key}/trials"), 403)
    assert snapshot(app) == before


def test_closed_study_takes_no_new_participants_but_lets_started_ones_finish(app, started):
    p, study, body = started
    with app.extensions["hprune_db"].write() as s:
        s.scalar(select(Study).where(Study.public_key == study.key)).status = "closed"
    before = snapshot(app)
    newcomer = Client(app.test_client(), study.key)
    response = newcomer.enter(PROLIFIC_PID="PID-late", STUDY_ID="s", SESSION_ID="x")
    _assert_clean_4xx(response, 410)
    assert "not accepting" in response.get_data(as_text=True)
    assert snapshot(app) == before
    assert p.answer(body["trial"]["id"], choice="left").status_code == 200


def test_answer_before_the_trials_phase_is_a_conflict(app, participant):
    p, _ = participant()
    p.enter(PROLIFIC_PID="PID-early", STUDY_ID="s", SESSION_ID="x")
    _assert_clean_4xx(p.answer("anything", choice="left"), 403)  # nobody has consented yet
    p.consent(PROLIFIC_PID="PID-early", STUDY_ID="s", SESSION_ID="x")
    before = snapshot(app)
    _assert_clean_4xx(p.answer("anything", choice="left"), 404)
    bad_check = p.post("consent", decision="maybe")
    _assert_clean_4xx(bad_check, 400)
    assert snapshot(app) == before


@pytest.mark.parametrize(
    "raw",
    [
        b'{"trial": "x", "choice": "left", "rt_ms": 1' + b"0" * 400 + b"}",  # 400 digits
        b'{"trial": "x", "choice": "left", "rt_ms": -1' + b"0" * 400 + b"}",
        b'{"trial": "x", "rating": 1' + b"0" * 30 + b', "rt_ms": 5}',
        b"[" * 1500 + b"]" * 1500,  # deeper than Python's JSON parser recurses (1000)
        b'{"trial": "x", "rt_ms": ' + b"[" * 1900 + b"]" * 1900 + b"}",  # under the size limit
        b'{"trial": "x", "choice": "left", "rt_ms": NaN}',
        b'{"trial": "x", "choice": "left", "rt_ms": 1e999}',
    ],
    ids=[
        "400-digits",
        "negative-400-digits",
        "long-rating",
        "nested-list",
        "nested-field",
        "nan",
        "overflowing-float",
    ],
)
def test_malformed_json_is_400_not_500(app, started, raw):
    """Was a 500: an int too large for a float (OverflowError), and a RecursionError."""
    _assert_raw_answer_refused(app, started, raw, 400)
