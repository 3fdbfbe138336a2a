"""Load: simulated participants against the study app under gunicorn, on SQLite and PostgreSQL.

For each database, a fresh study (``--variants`` x ``--prompts`` small PNG stimuli, pairwise,
``--trials`` main trials per participant plus practice and attention trials) is served by
``hprune study serve --workers 2`` (gunicorn, gthread) on loopback, and ``--participants``
simulated participants (study.simulate, one thread and HTTP session each, all at once) go from
the Prolific entry URL to the end page. Measured: answers/s while answers flow, p50/p99 latency
of the answer endpoint; then, against the database, that every acknowledged answer is stored
once and nothing else is (zero lost, zero duplicated).

Side by side in the same run, the same client load (the same number of threads, each posting the
same number of JSON bodies one after another) hits a bare Flask endpoint served the same way
(gunicorn through study.wsgi.run_gunicorn, 2 workers, same threads): it parses the JSON and
answers JSON, no database. The ratio answers/s / bare requests/s is the figure of merit
(goal >= 0.5). Client and server share the machine, so both sides pay the same client cost.

    .venv/bin/python benchmarks/study_load.py                      # both databases
    .venv/bin/python benchmarks/study_load.py --databases sqlite --participants 50
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.study.conftest import free_port, make_stimuli, postgres_schema  # noqa: E402

BARE_APP = """
from flask import Flask, jsonify, request
from study.wsgi import run_gunicorn

app = Flask("bare")

@app.post("/answer")
def answer():
    body = request.get_json()
    return jsonify({"status": "recorded", "trial": body["trial"]})

run_gunicorn(app, bind="127.0.0.1:%(port)d", workers=%(workers)d, threads=%(threads)d)
"""


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds so far), from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU time so far of the server's process tree, of this process (the clients), and of the
    PostgreSQL server processes (all of them: other users of the server count too)."""
    table = _processes()
    tree, frontier = set(), {server_pid}
    while frontier:
        tree |= frontier
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier} - tree
    return {
        "server": sum(table[pid][2] for pid in tree if pid in table),
        "clients": table.get(os.getpid(), (0, "", 0.0))[2],
        "postgres": sum(cpu for _, name, cpu in table.values() if name == "postgres"),
    }


@contextlib.contextmanager
def server(command: list[str], port: int, env: dict, workers: int) -> Iterator[subprocess.Popen]:
    """A gunicorn server on ``port``, up once it answers HTTP and all its ``workers`` run (the
    first worker up would otherwise take every connection of the burst of clients and keep
    them, kept alive, to the end); stopped (by its pid) afterwards."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO
        )
        process.base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server exited: {log.read().decode()[-2000:]}")
                try:
                    requests.get(process.base + "/", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            for _ in range(100):
                if sum(ppid == process.pid for ppid, _, _ in _processes().values()) >= workers:
                    break
                time.sleep(0.1)
            time.sleep(0.5)  # the last worker forked: let it reach its accept loop
            yield process
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def bare_load(process: subprocess.Popen, clients: int, requests_each: int) -> dict:
    """``clients`` threads, each posting ``requests_each`` JSON bodies in turn."""
    base = process.base

    def client(k: int) -> list[tuple[float, float]]:
        done = []
        with requests.Session() as http:
            for i in range(requests_each):
                start = time.perf_counter()
                body = {"trial": f"t{k}-{i}", "choice": "left", "rt_ms": 800.0}
                response = http.post(base + "/answer", json=body, timeout=60)
                response.raise_for_status()
                done.append((start, time.perf_counter()))
        return done

    before = cpu_seconds(process.pid)
    with ThreadPoolExecutor(clients) as pool:
        stamps = [s for chunk in pool.map(client, range(clients)) for s in chunk]
    cpu = _per_request(before, cpu_seconds(process.pid), len(stamps))
    starts, ends = np.array(stamps).T
    latency = (ends - starts) * 1e3
    return {
        "per_s": len(stamps) / (ends.max() - starts.min()),
        "p50": np.percentile(latency, 50),
        "p99": np.percentile(latency, 99),
        "n": len(stamps),
        "cpu_ms": cpu,
    }


def _per_request(before: dict, after: dict, n: int) -> dict[str, float]:
    return {k: (after[k] - before[k]) * 1e3 / n for k in before}


def check_database(url: str, study_name: str, report) -> dict:
    """Stored answers against acknowledged ones: lost, duplicated, unexpected."""
    from sqlalchemy import func, select

    from study.db import Database
    from study.models import Answer, Participant, Study, Trial

    db = Database(url)
    try:
        with db.read() as session:
            rows = session.execute(
                select(
                    Participant.external_id, func.count(Answer.id), func.count(Trial.id.distinct())
                )
                .join(Study, Study.id == Participant.study_id)
                .join(Answer, Answer.participant_id == Participant.id)
                .join(Trial, Trial.id == Answer.trial_id)
                .where(Study.name == study_name)
                .group_by(Participant.external_id)
            ).all()
    finally:
        db.dispose()
    stored = {pid: n for pid, n, _ in rows}
    duplicated = sum(n - trials for _, n, trials in rows)
    lost = sum(max(r.answers - stored.get(r.participant, 0), 0) for r in report.results)
    unexpected = sum(max(stored.get(r.participant, 0) - r.answers, 0) for r in report.results)
    return {
        "stored": sum(stored.values()),
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
    }


def study_load(database: str, args, workdir: Path) -> dict:
    from study.db import Database, upgrade
    from study.importer import import_study
    from study.simulate.driver import run_simulation
    from study.simulate.observer import Preferences
    from study.simulate.oracle import StimulusOracle
    from study.spec import parse_spec

    with contextlib.ExitStack() as stack:
        if database == "sqlite":
            url = f"sqlite:///{workdir / f'{database}.sqlite3'}"
        else:
            url = stack.enter_context(postgres_schema())
        upgrade(url)
        instance = workdir / f"instance-{database}"
        instance.mkdir()
        spec = parse_spec(
            {
                "name": f"load-{database}",
                "kind": "pair",
                "tie": True,
                "criteria": [{"name": "quality", "question": "Which image looks better?"}],
                "trials_per_criterion": args.trials,
                "scheduler": args.scheduler,
                "practice_trials": 1,
                "attention": {"broken": 1, "repeat": 1, "max_failures": 1},
                "min_viewport": {"width": 800, "height": 500},
                "time_limit_minutes": 60,
                "consent": {"version": "1", "text": "You agree to look at images."},
                "instructions": {"version": "1", "text": "Pick the better image."},
                "completion_codes": {
                    "completed": "C1",
                    "failed_attention": "C2",
                    "timed_out": "C3",
                },
            }
        )
        db = Database(url)
        import_study(db, args.stimuli, spec, instance / "media", progress=False)
        db.dispose()
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "HPRUNE_INSTANCE": str(instance),
            "SECRET_KEY": secrets.token_hex(16),
        }
        command = [str(REPO / ".venv/bin/hprune"), "study", "serve", "--port", str(port)]
        command += ["--workers", str(args.workers), "--threads", str(args.threads)]
        oracle = StimulusOracle.from_database(url, spec.name)
        preferences = Preferences.evenly_spaced(oracle.variants, 0.3)
        with server(command, port, env, args.workers) as process:
            before = cpu_seconds(process.pid)
            report = run_simulation(
                oracle,
                preferences,
                base_url=process.base,
                participants=args.participants,
                concurrency=args.participants,
                seed=1,
                progress=False,
            )
            cpu = _per_request(before, cpu_seconds(process.pid), max(report.answers, 1))
        answered = [t for r in report.results for t in r.answer_seconds]
        checks = check_database(url, spec.name, report)
    return {
        "report": report,
        "answers_per_s": report.answers / report.answering_seconds,
        "session_answers_per_s": report.answers / report.wall_seconds,
        "p50": report.latency_ms(0.5),
        "p99": report.latency_ms(0.99),
        "n": len(answered),
        "cpu_ms": cpu,
        **checks,
    }


def _cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())


def add_study_options(parser: argparse.ArgumentParser, *, participants: int) -> None:
    """The options that describe the benchmark study (shared with study_request_cost.py)."""
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--participants", type=int, default=participants)
    parser.add_argument("--trials", type=int, default=20, help="main trials per participant")
    parser.add_argument("--variants", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--scheduler", default="balanced", choices=["balanced", "active"])


def study_stimuli(args, workdir: Path) -> Path:
    """``--variants`` x ``--prompts`` small PNG stimuli with their manifest, in ``workdir``."""
    variants = [f"variant-{k}" for k in range(args.variants)]
    prompts = [f"prompt-{k:03d}" for k in range(args.prompts)]
    return make_stimuli(workdir / "stimuli", variants=variants, prompts=prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_study_options(parser, participants=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hprune-load-") as tmp:
        workdir = Path(tmp)
        args.stimuli = study_stimuli(args, workdir)
        print(
            f"{args.participants} participants at once, {args.trials} main + 1 practice + 2 "
            f"attention trials each, {args.scheduler} scheduler, {args.variants} variants x "
            f"{args.prompts} prompts; gunicorn {args.workers} workers x {args.threads} threads"
        )
        for database in args.databases.split(","):
            bare_port = free_port()
            bare_cmd = [
                sys.executable,
                "-c",
                BARE_APP % {"port": bare_port, "workers": args.workers, "threads": args.threads},
            ]
            per_client = args.trials + 3
            with server(bare_cmd, bare_port, dict(os.environ), args.workers) as process:
                bare = bare_load(process, args.participants, per_client)
            study = study_load(database, args, workdir)
            ratio = study["answers_per_s"] / bare["per_s"]
            outcomes = study["report"].outcomes()
            print(
                f"{database:8s} answers/s {study['answers_per_s']:7.1f} "
                f"({study['session_answers_per_s']:.1f} over whole sessions), "
                f"answer p50 {study['p50']:.0f} ms p99 {study['p99']:.0f} ms | bare Flask "
                f"{bare['per_s']:7.1f} req/s p50 {bare['p50']:.0f} ms p99 {bare['p99']:.0f} ms | "
                f"ratio {ratio:.2f} | answers acknowledged {study['report'].answers}, stored "
                f"{study['stored']}, lost {study['lost']}, duplicated {study['duplicated']}, "
                f"unexpected {study['unexpected']}, re-sent {sum(r.retried for r in study['report'].results)} | "
                f"outcomes {outcomes}"
            )
            print(
                f"  CPU ms per answer (whole sessions): {_cpu_text(study['cpu_ms'])} | per bare "
                f"request: {_cpu_text(bare['cpu_ms'])}"
            )
            errors = study["report"].errors()
            if errors:
                print(f"  {len(errors)} participant errors, e.g. {errors[:3]}")


if __name__ == "__main__":
    main()
