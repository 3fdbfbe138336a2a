"""The README's study commands run as written, in a fresh working folder, with this
checkout's hprune (the shipped demo stimuli and spec, a real gunicorn server)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess

import pandas as pd
import pytest

from hprune.contracts.participants import read_participants
from tests.study.conftest import free_port
from tests.study.test_serve import BIN, ROOT, answers, started, wait_until


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
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HPRUNE_INSTANCE")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", PYTHONPATH=str(ROOT))
    exports = ""
    with contextlib.ExitStack() as stack:
        for line in lines:
            line = line.replace("5000", port)
            if line.startswith("export "):
                exports += line + "\n"
                continue
            command = ["bash", "-ec", exports + line.removesuffix("&")]
            if line.endswith("&"):
                stack.enter_context(started(command, env, work / "background.log", cwd=work))
                wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), "the server")
                continue
            done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    instance = work / "my-study"
    assert (instance / "study.sqlite3").is_file() and (work / "study-backup.sqlite3").is_file()
    people = read_participants(work / "export")
    assert (people["source"] == "simulated").sum() == 3 and people["prolific_pid"].isna().all()
    responses = pd.read_parquet(work / "export" / "responses.parquet")
    assert responses["participant"].nunique() == 3
