"""Fixtures every test area shares: offline hub access and the reference data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub: tiny models are built from config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_shared_data() -> Path | None:
    """The reference data folder: $HPRUNE_SHARED_DATA, else ../shared/data beside the checkout."""
    candidates = [os.environ.get("HPRUNE_SHARED_DATA"), REPO_ROOT.parent / "shared" / "data"]
    candidates.append("/work/shared/data")
    for candidate in candidates:
        if candidate and (Path(candidate) / "README.md").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real prompt sets, pairwise data and full-size architecture configs (../shared/data)."""
    path = find_shared_data()
    if path is None:
        pytest.fail("reference data not found: set HPRUNE_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep files worth looking at afterwards (screenshots, plots)."""
    path = REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, driven by playwright (launched once, for the tests that ask).

    One for the whole run: playwright's sync API refuses to start while another instance of
    it is open in the same thread, so every test area shares this one."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def pytest_terminal_summary(terminalreporter, config) -> None:
    """The test order's seed (pytest-randomly) at the end too, where ``-q`` still shows it:
    ``pytest -p randomly --randomly-seed=N`` repeats a failing order."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int):
        terminalreporter.write_line(f"test order: --randomly-seed={seed}")
