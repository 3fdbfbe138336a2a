"""kill -9 of the gunicorn server under load, then a restart: no acknowledged answer is lost
and every participant resumes at the right trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from sqlalchemy import select

from study.models import Answer, Participant, Study, Trial
from tests.conftest import REPO_ROOT
from tests.study.conftest import PortTaken, on_a_free_port

pytestmark = pytest.mark.slow


def _gunicorn(app, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": app.config["DATABASE_URL"],
        "HPRUNE_MEDIA_DIR": app.config["MEDIA_DIR"],
        "SECRET_KEY": app.config["SECRET_KEY"],
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "--threads", "2", "-k", "gthread",
         "-b", f"127.0.0.1:{port}", "study.wsgi:app"],
        cwd=REPO_ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                    return process
            except requests.RequestException:
                time.sleep(0.05)
            if process.poll() is not None:
                log = process.stderr.read().decode()
                if "Connection in use" in log:  # another process took the port first
                    raise PortTaken(port)
                raise AssertionError(log)
        raise AssertionError("gunicorn did not start")
    except BaseException:
        _kill(process)
        raise


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


class Worker(threading.Thread):
    """One participant answering as fast as the server allows, keeping what was acknowledged."""

    def __init__(self, base: str, key: str, pid: str) -> None:
        super().__init__(daemon=True)
        self.base, self.key, self.pid = base, key, pid
        self.http = requests.Session()
        self.acknowledged: dict[str, str] = {}
        self.stop = threading.Event()

    def start_session(self) -> None:
        b, k = self.base, self.key
        self.http.get(
            f"{b}/s/{k}", params={"PROLIFIC_PID": self.pid, "STUDY_ID": "s", "SESSION_ID": "x"}
        )
        self.headers = {"X-CSRFToken": self.http.get(f"{b}/api/s/{k}/session").json()["csrf_token"]}
        self.http.post(
            f"{b}/s/{k}/check",
            data={"width": 1200, "height": 800, "touch": 0},
            headers=self.headers,
        )
        self.http.post(f"{b}/s/{k}/consent", data={"decision": "agree"}, headers=self.headers)
        self.http.post(f"{b}/s/{k}/instructions", headers=self.headers)

    def run(self) -> None:
        try:
            body = self.http.get(f"{self.base}/api/s/{self.key}/trial", timeout=5).json()
            while body["phase"] == "trials" and not self.stop.is_set():
                trial = body["trial"]
                choice = "left" if len(self.acknowledged) % 3 else "right"
                response = self.http.post(
                    f"{self.base}/api/s/{self.key}/answer",
                    json={"trial": trial["id"], "choice": choice, "rt_ms": 5},
                    headers=self.headers, timeout=5,
                )  # fmt: skip
                if response.status_code != 200:
                    return
                self.acknowledged[trial["id"]] = choice
                body = response.json()
        except (requests.RequestException, ValueError):
            return  # the server died under us


def test_kill_minus_nine_under_load_loses_no_acknowledged_answer(app, make_study):
    study = make_study(trials_per_criterion=40, practice_trials=0, attention={})
    port, server = on_a_free_port(lambda free: _gunicorn(app, free))
    base = f"http://127.0.0.1:{port}"
    try:
        workers = [Worker(base, study.key, f"PIDk{i}") for i in range(6)]
        for w in workers:
            w.start_session()
        for w in workers:
            w.start()
        deadline = time.monotonic() + 60
        while sum(len(w.acknowledged) for w in workers) < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        _kill(server)  # mid-flight: requests are being served right now
        for w in workers:
            w.join(10)
        acknowledged = {t: c for w in workers for t, c in w.acknowledged.items()}
        assert len(acknowledged) >= 40
        server = _gunicorn(app, port)

        db = app.extensions["hprune_db"]
        with db.read() as s:
            stored = dict(
                s.execute(
                    select(Trial.public_id, Answer.choice)
                    .join(Answer, Answer.trial_id == Trial.id)
                    .join(Participant)
                    .join(Study)
                    .where(Study.public_key == study.key)
                ).all()
            )
        missing = {t: c for t, c in acknowledged.items() if stored.get(t) != c}
        assert missing == {}
        for w in workers:  # same cookie, restarted server: the first unanswered trial
            body = w.http.get(f"{base}/api/s/{study.key}/trial", timeout=5).json()
            with db.read() as s:
                expected = s.scalar(
                    select(Trial.public_id)
                    .join(Participant)
                    .outerjoin(Answer, Answer.trial_id == Trial.id)
                    .where(Participant.external_id == w.pid, Answer.id.is_(None))
                    .join(Study)
                    .where(Study.public_key == study.key)
                    .order_by(Trial.position)
                    .limit(1)
                )
            assert body["trial"]["id"] == expected
            assert expected not in acknowledged
    finally:
        _kill(server)
