"""What each request of a participant's session costs the study app, in-process, per database.

Complements benchmarks/study_load.py (throughput under gunicorn): here one thread drives
``--participants`` simulated participants one after another through the real endpoints with
Flask's test client (no HTTP server, no other load), and the CPU time (``time.process_time``:
this process only, so PostgreSQL's own work is not in it) of every request is summed by kind.
The figures say where an answer's time goes: the answer request itself, and the pages each
participant passes once (shared out over their answers). A bare Flask JSON endpoint measured
the same way gives the floor of Flask + test client.

    .venv/bin/python benchmarks/study_request_cost.py
    .venv/bin/python benchmarks/study_request_cost.py --databases sqlite --scheduler active
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from study_load import add_study_options, study_stimuli  # noqa: E402

from tests.study.conftest import answer_for, import_spec, postgres_schema  # noqa: E402


def bare_cost(n: int = 2000) -> float:
    """CPU ms of one POST to a Flask endpoint that parses JSON and answers JSON."""
    from flask import Flask, jsonify, request

    app = Flask("bare")

    @app.post("/answer")
    def answer():
        body = request.get_json()
        return jsonify({"status": "recorded", "trial": body["trial"]})

    client = app.test_client()
    body = {"trial": "t", "choice": "left", "rt_ms": 800.0}
    for _ in range(200):
        client.post("/answer", json=body)
    start = time.process_time()
    for _ in range(n):
        client.post("/answer", json=body)
    return (time.process_time() - start) / n * 1e3


def session_costs(database: str, args, workdir: Path) -> dict[str, list[float]]:
    """CPU seconds of every request, by kind, over ``args.participants`` whole sessions."""
    from study.app import create_app
    from study.db import upgrade

    with contextlib.ExitStack() as stack:
        if database == "sqlite":
            url = f"sqlite:///{workdir / 'cost.sqlite3'}"
        else:
            url = stack.enter_context(postgres_schema())
        upgrade(url)
        os.environ["HPRUNE_INSTANCE"] = str(workdir)
        app = create_app(
            {"TESTING": True, "DATABASE_URL": url, "MEDIA_DIR": str(workdir / "media"),
             "SECRET_KEY": "benchmark"}
        )  # fmt: skip
        study = import_spec(
            app,
            args.stimuli,
            trials_per_criterion=args.trials,
            scheduler=args.scheduler,
            attention={"broken": 1, "repeat": 1, "max_failures": 1},
        )
        costs: dict[str, list[float]] = defaultdict(list)
        rng = np.random.default_rng(0)
        for k in range(args.participants):
            one_session(app.test_client(), study.key, f"cost-{k}", costs, rng)
        app.extensions["hprune_db"].dispose()
    return costs


def one_session(client, key: str, pid: str, costs: dict, rng: np.random.Generator) -> None:
    """One participant from the Prolific link to the end page, each request timed by kind."""

    def timed(kind: str, method: str, path: str, **options):
        start = time.process_time()
        response = getattr(client, method)(path, **options)
        costs[kind].append(time.process_time() - start)
        return response

    page, api = f"/s/{key}", f"/api/s/{key}"
    entry = {"PROLIFIC_PID": pid, "STUDY_ID": "s", "SESSION_ID": pid}
    timed("entry", "get", page, query_string=entry)
    session = timed("api session", "get", f"{api}/session").get_json()
    headers = {"X-CSRFToken": session["csrf_token"]}
    for phase, form in (
        ("check", {"width": 1280, "height": 900, "touch": 0}),
        ("consent", {"decision": "agree"}),
        ("instructions", {}),
    ):
        timed(f"{phase} page", "get", f"{page}/{phase}")
        timed(f"{phase} post", "post", f"{page}/{phase}", data=form, headers=headers)
    timed("trials page", "get", f"{page}/trials")
    body = timed("api trial", "get", f"{api}/trial").get_json()
    while body["phase"] == "trials":
        payload = {"trial": body["trial"]["id"], "rt_ms": 800.0, **answer_for(body["trial"], rng)}
        body = timed("answer", "post", f"{api}/answer", json=payload, headers=headers).get_json()
    timed("end page", "get", f"{page}/end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_study_options(parser, participants=60)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hprune-cost-") as tmp:
        workdir = Path(tmp)
        args.stimuli = study_stimuli(args, workdir)
        print(
            f"{args.participants} participants one after another, {args.scheduler} scheduler, "
            f"{args.variants} variants x {args.prompts} prompts, {args.trials} main trials; "
            f"bare Flask POST: {bare_cost():.3f} ms CPU"
        )
        for database in args.databases.split(","):
            (workdir / database).mkdir()
            costs = session_costs(database, args, workdir / database)
            answers = len(costs["answer"])
            total = sum(sum(v) for v in costs.values())
            print(f"{database}: CPU ms per request (mean) and per answer (share)")
            for kind, values in costs.items():
                print(
                    f"  {kind:18s} {np.mean(values) * 1e3:6.3f} ms x {len(values):5d} = "
                    f"{sum(values) / answers * 1e3:6.3f} ms per answer"
                )
            pages = total - sum(costs["answer"])
            print(
                f"  total {total / answers * 1e3:.3f} ms per answer: the answer request "
                f"{sum(costs['answer']) / answers * 1e3:.3f}, the other requests "
                f"{pages / answers * 1e3:.3f}"
            )


if __name__ == "__main__":
    main()
