"""Simultaneous participants on a real threaded server: no duplicated or conflicting
assignments, one participant per person, one answer per trial."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from study.models import Answer, Participant, Stimulus, Study, Trial
from tests.study.conftest import person, serve_in_thread


def _start(base: str, key: str, pid: str, barrier: threading.Barrier | None = None):
    http = requests.Session()
    if barrier:
        barrier.wait()
    http.get(f"{base}/s/{key}", params={"PROLIFIC_PID": pid, "STUDY_ID": "s", "SESSION_ID": "x"})
    token = http.get(f"{base}/api/s/{key}/session").json()["csrf_token"]
    h = {"X-CSRFToken": token}
    http.post(f"{base}/s/{key}/check", data={"width": 1200, "height": 800, "touch": 0}, headers=h)
    http.post(f"{base}/s/{key}/consent", data={"decision": "agree"}, headers=h)
    r = http.post(f"{base}/s/{key}/instructions", headers=h)  # assigns the trials
    assert r.status_code == 200 and r.url.endswith("/trials"), r.text
    return http, h


def _tasks(app, key):
    left, right = aliased(Stimulus), aliased(Stimulus)
    with app.extensions["hprune_db"].read() as s:
        return s.execute(
            select(
                Participant.external_id,
                Trial.position,
                Trial.prompt_id,
                left.variant,
                right.variant,
            )
            .select_from(Trial)
            .join(Participant, Participant.id == Trial.participant_id)
            .join(Study, Study.id == Participant.study_id)
            .join(left, left.id == Trial.left_id)
            .join(right, right.id == Trial.right_id)
            .where(Study.public_key == key, Trial.kind == "pair")
        ).all()


def test_simultaneous_arrivals_get_balanced_non_conflicting_assignments(app, make_study):
    study = make_study(trials_per_criterion=5, practice_trials=0, attention={})
    n = 12
    barrier = threading.Barrier(n)
    with serve_in_thread(app) as base, ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda i: _start(base, study.key, f"PIDc{i:02d}", barrier), range(n)))
    rows = _tasks(app, study.key)
    assert len(rows) == n * 5
    per_person = Counter()
    for pid, _, prompt, lv, rv in rows:
        per_person[(pid, prompt, *sorted((lv, rv)))] += 1
    assert max(per_person.values()) == 1  # nobody got the same task twice
    pairs = Counter(tuple(sorted((lv, rv))) for *_, lv, rv in rows)
    assert max(pairs.values()) - min(pairs.values()) <= 1  # assignments saw each other
    cells = Counter((p, *sorted((lv, rv))) for _, _, p, lv, rv in rows)
    assert max(cells.values()) - min(cells.values()) <= 1


def test_same_person_in_two_browsers_at_once_is_one_participant(app, make_study):
    study = make_study()
    with serve_in_thread(app) as base, ThreadPoolExecutor(4) as pool:
        barrier = threading.Barrier(4)
        list(pool.map(lambda _: _start(base, study.key, "PID-twice", barrier), range(4)))
    with app.extensions["hprune_db"].read() as s:
        count = s.scalar(
            select(func.count(Participant.id))
            .join(Study)
            .where(Study.public_key == study.key, Participant.external_id == "PID-twice")
        )
        trials = s.scalar(
            select(func.count(Trial.id)).join(Participant).where(person(study.key, "PID-twice"))
        )
    assert count == 1
    assert trials == 1 + 6 + 1 + 1  # one assignment, not four


def test_two_tabs_answering_the_same_trial_store_one_answer(app, make_study):
    study = make_study()
    with serve_in_thread(app) as base:
        http, h = _start(base, study.key, "PID-tabs")
        trial = http.get(f"{base}/api/s/{study.key}/trial").json()["trial"]
        barrier = threading.Barrier(6)

        def answer(i):
            barrier.wait()
            body = {"trial": trial["id"], "choice": ["left", "right"][i % 2], "rt_ms": 100 + i}
            return http.post(f"{base}/api/s/{study.key}/answer", json=body, headers=h)

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(answer, range(6)))
    statuses = Counter((r.status_code, r.json().get("status")) for r in responses)
    assert statuses[(200, "recorded")] == 1
    assert sum(statuses.values()) == 6
    assert set(statuses) <= {(200, "recorded"), (200, "already_recorded"), (409, None)}
    with app.extensions["hprune_db"].read() as s:
        stored = s.scalars(select(Answer).join(Trial).where(Trial.public_id == trial["id"])).all()
    assert len(stored) == 1
