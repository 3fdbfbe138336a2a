"""The README's study commands run as written, in a fresh working folder, with this
checkout's hprune (the shipped demo stimuli and spec, a real gunicorn server)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess

import pandas as pd
import pytest
import requests

from hprune.contracts.participants import read_participants
from tests.study.servers import BIN, ROOT, serving


def readme_study_commands() -> list[str]:
    """The lines of the README's ``hprune study`` code block, comments dropped."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### The web study (`hprune study`)", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)[1]
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [line for line in lines if line]


@pytest.mark.slow
def test_the_readme_study_commands_run_as_written(tmp_path):
    """Was: `hprune study simulate --db ...` failed (--db only before the subcommand). The one
    change made to the lines: port 5000 becomes a free port (the machine is shared); a line
    ending in `&` runs in the background, and the next waits until the server answers."""
    lines = readme_study_commands()
    assert lines[0].startswith("export HPRUNE_INSTANCE=")
    assert any(line.startswith("hprune study simulate") and "--db" in line for line in lines)
    work = tmp_path / "work"
    work.mkdir()
    (work / "demo").symlink_to(ROOT / "demo")
    port = 5000  # until the server line gives it a free one
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HPRUNE_INSTANCE")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", PYTHONPATH=str(ROOT))
    exports, out = "", {}

    def run(line: str) -> str:
        command = ["bash", "-ec", exports + line]
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    with contextlib.ExitStack() as stack:
        for line in lines:
            line = line.replace("5000", str(port))
            if line.startswith("export "):
                exports += line + "\n"
                continue
            if line.endswith("&"):
                command = exports + line.removesuffix("&")
                port, server = serving(
                    lambda free, command=command: ["bash", "-ec", command.replace("5000", str(free))],
                    env, work / "background.log", cwd=work,
                )  # fmt: skip
                stack.enter_context(server)
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
                assert health.json() == {"ok": True}
                continue
            out[line.split()[2]] = run(line)
        base = f"http://127.0.0.1:{port}"
        key = re.search(r"participant URL: \S*/s/([A-Za-z0-9_-]+)", out["import"])[1]
        entry = requests.get(f"{base}/s/{key}", params={"PROLIFIC_PID": "x"}, timeout=10)
        assert entry.status_code == 400 and "STUDY_ID" in entry.text  # the study is served
        password = re.search(r"temporary password[^:]*: (\S+)", out["admin"])[1]
        assert _admin_login(base, "alice", password) == 303
        listed = run("hprune study list")
    assert listed.startswith("demo\t"), listed
    instance = work / "my-study"
    assert (instance / "study.sqlite3").is_file() and (work / "study-backup.sqlite3").is_file()
    people = read_participants(work / "export")
    assert (people["source"] == "simulated").sum() == 3 and people["prolific_pid"].isna().all()
    responses = pd.read_parquet(work / "export" / "responses.parquet")
    assert responses["participant"].nunique() == 3

    # The README's analysis of the export folder, with the demo stimuli's metrics. Three
    # simulated participants leave some variants unbeaten: maximum likelihood has no scores,
    # which the command says in one line, advising the prior that the second run takes.
    analyze = (
        "hprune analyze --responses export/ --metrics demo/stimuli/metrics.csv "
        "--stimuli demo/stimuli/ --out report/ --rounds 20 --workers 1 --no-mixed-models"
    )
    first = subprocess.run(["bash", "-ec", analyze], cwd=work, env=env, capture_output=True,
                           text=True)  # fmt: skip
    if first.returncode != 0:  # the simulated answers depend on the server's timing
        assert first.returncode == 2 and "--prior" in first.stderr, first.stderr
        assert len(first.stderr.strip().splitlines()) == 1
        assert not (work / "report").exists()  # nothing half-written
        run(analyze + " --prior 1")
    report = work / "report"
    assert "<html" in (report / "report.html").read_text().lower()
    tables = sorted((report / "tables").glob("*.csv"))
    assert tables and all(len(pd.read_csv(t).columns) for t in tables)
    scored = sorted((report / "tables").glob("scores_*.csv"))
    variants = set(responses["left_variant"].dropna()) | set(responses["right_variant"].dropna())
    assert scored and all(set(pd.read_csv(t)["variant"]) <= variants for t in scored)
    assert {p.suffix for p in (report / "plots").iterdir()} == {".png"}
    assert (report / "warnings.txt").is_file()


def _admin_login(base: str, username: str, password: str) -> int:
    """The status of an admin login with ``password`` (303: logged in)."""
    http = requests.Session()
    page = http.get(f"{base}/admin/login", timeout=10).text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page)[1]
    response = http.post(
        f"{base}/admin/login",
        data={"username": username, "password": password, "csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    return response.status_code
