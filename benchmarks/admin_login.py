"""Admin login time for a user name that exists and one that does not (both with a wrong
password), measured side by side: the study checks a password against a dummy hash for an
unknown name (study.admins.password_matches), so the two should take the same time, where an
unknown name used to answer without any scrypt work (7 ms against 129 ms).

Each round logs in once as each (interleaved), from its own client address so that the rate
limit never refuses, through the real app and a fresh SQLite database; the figures are the
medians over the rounds, and the ratio unknown / known.

    .venv/bin/python benchmarks/admin_login.py --rounds 40
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from study.admins import set_admin_password
from study.app import create_app
from study.db import upgrade


def login_ms(app, username: str, address: str) -> float:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    page = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page)[1]
    form = {"username": username, "password": "a wrong password", "csrf_token": token}
    start = time.perf_counter()
    response = client.post("/admin/login", data=form)
    elapsed = (time.perf_counter() - start) * 1e3
    assert response.status_code == 401, response.status_code
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'study.sqlite3'}"
        upgrade(url)
        app = create_app({"TESTING": True, "DATABASE_URL": url, "SECRET_KEY": "benchmark"})
        set_admin_password(app.extensions["hprune_db"], "alice", "correct horse battery")
        times: dict[str, list[float]] = {"known": [], "unknown": []}
        for k in range(args.rounds):
            for kind, name in (("known", "alice"), ("unknown", f"nobody{k}")):
                times[kind].append(login_ms(app, name, f"10.{k // 250}.{k % 250}.{len(kind)}"))
        app.extensions["hprune_db"].dispose()
    known, unknown = (statistics.median(times[k]) for k in ("known", "unknown"))
    print(f"rounds: {args.rounds}")
    print(f"known user name, wrong password:   median {known:.1f} ms")
    print(f"unknown user name, wrong password: median {unknown:.1f} ms")
    print(f"ratio unknown / known: {unknown / known:.2f}")


if __name__ == "__main__":
    main()
