"""hprune as a lab installs it: a real wheel, installed non-editable into a fresh virtualenv
with the study extra only (no torch), run from a working folder of its own. The study's data
goes to the user's data folder: nothing is written inside the virtualenv, and uninstalling
hprune leaves the database whole.

The wheel and the virtualenv are built once per test session. pip takes the study extra's
dependencies from wherever it is configured to (the package index, a local wheel folder), and
installs them without compiling bytecode (``--no-compile``, most of an install's time), so
Python writes ``__pycache__`` files at first import: those are the interpreter's, and the only
files the check of the virtualenv lets by.
"""

from __future__ import annotations

import csv
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.study.servers import serving

pytestmark = pytest.mark.slow

PACKAGES = ("hprune", "generation", "study", "analysis", "migrations")
# The caller's settings must not reach the installed hprune: it has to find its data alone.
CLEARED = ("PYTHONPATH", "VIRTUAL_ENV", "HPRUNE_INSTANCE", "HPRUNE_MEDIA_DIR", "DATABASE_URL",
           "SECRET_KEY", "HPRUNE_ENV", "XDG_DATA_HOME")  # fmt: skip


def run(args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@dataclass
class Installed:
    venv: Path
    site_packages: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """hprune's wheel, built from a copy of the sources (a build writes build/ and *.egg-info
    beside pyproject.toml, which must not happen in the checkout)."""
    source = tmp_path_factory.mktemp("source") / "hprune"
    for name in PACKAGES:
        shutil.copytree(
            REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, source])
    (built,) = out.glob("hprune-*.whl")
    return built


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory) -> Installed:
    venv = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "--no-compile", f"{wheel}[study]"])
    site_packages = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    ).stdout.strip()
    return Installed(venv, Path(site_packages))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` but bytecode caches: path -> (size, mtime)."""
    files = {}
    for path in folder.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            stat = path.stat()
            files[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return files


def test_an_installed_hprune_keeps_study_data_outside_the_installed_packages(
    installed: Installed, tmp_path
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["HOME"] = str(home)

    def hprune(*args: str) -> subprocess.CompletedProcess:
        return run([installed.bin("hprune"), *args], cwd=work, env=env)

    no_torch = run(
        [installed.bin("python"), "-c", "import importlib.util as u; print(u.find_spec('torch'))"]
    )
    assert no_torch.stdout.strip() == "None"
    assert (installed.site_packages / "study").is_dir()
    assert not (installed.site_packages / "hprune.egg-link").exists()  # not editable
    before = snapshot(installed.venv)

    refused = subprocess.run(
        [installed.bin("hprune"), "study", "--instance",
         installed.site_packages / "instance", "init"],
        cwd=work, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "refusing to keep the instance folder inside the installed packages" in refused.stderr

    instance = home / ".local" / "share" / "hprune" / "instance"
    init = hprune("study", "init")
    assert init.stdout.splitlines()[0] == f"instance folder: {instance} (created)"
    imported = hprune(
        "study", "import", "--manifest", str(REPO_ROOT / "demo" / "stimuli" / "manifest.csv"),
        "--spec", str(REPO_ROOT / "demo" / "study.yaml"),
    )  # fmt: skip
    assert f"  image copies in {instance / 'media'}" in imported.stdout.splitlines()

    serve = [installed.bin("hprune"), "study", "serve", "--workers", "1", "--port"]
    port, server = serving(lambda port: [*serve, str(port)], env, tmp_path / "serve.log", cwd=work)
    with server:
        simulated = hprune("study", "simulate", "-n", "1", "--url", f"http://127.0.0.1:{port}")
    assert "participants: completed 1" in simulated.stdout, simulated.stdout

    hprune("study", "export", "--out", "export")
    with open(work / "export" / "responses.csv", newline="") as f:
        answered = sum(1 for _ in csv.DictReader(f))
    assert answered > 0

    after = snapshot(installed.venv)
    assert after == before, f"written inside the virtualenv: {sorted(set(after) ^ set(before))}"
    assert sorted(p.name for p in work.iterdir()) == ["export"]

    run([installed.bin("python"), "-m", "pip", "uninstall", "-y", "-q", "hprune"], env=env)
    assert not (installed.site_packages / "study").exists()
    with sqlite3.connect(f"{(instance / 'study.sqlite3').as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM answers").fetchone() == (answered,)
    assert (instance / "secret_key").is_file()
    assert len(list((instance / "media").rglob("*.png"))) > 0
