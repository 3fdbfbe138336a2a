"""Toy-model fixtures shared by every generation test.

Each toy pipeline is built and saved once per test session. The saved
directories are shared: treat them as read-only (copy or write elsewhere).

- ``toy_model_dir(arch)``: a factory giving the directory of the "sd3",
  "sd35" or "flux" toy pipeline (as ``hprune toy-model`` writes it).
- ``sd3_toy_dir``, ``sd35_toy_dir``, ``flux_toy_dir``: the same, one per arch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine, two threads spin-wait
    on each other and a 7 ms forward pass takes 30-700 ms (measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _hprune_cache_dir(tmp_path_factory) -> Path:
    """Keep the fingerprint cache of the tests out of the user's ~/.cache."""
    path = tmp_path_factory.mktemp("hprune-cache")
    os.environ["HPRUNE_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory) -> Callable[[str], Path]:
    from generation.store.toy_models import save_toy_pipeline

    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = save_toy_pipeline(arch, tmp_path_factory.mktemp(f"toy-{arch}") / "model")
        return built[arch]

    return get


@pytest.fixture(scope="session")
def sd3_toy_dir(toy_model_dir) -> Path:
    return toy_model_dir("sd3")


@pytest.fixture(scope="session")
def sd35_toy_dir(toy_model_dir) -> Path:
    return toy_model_dir("sd35")


@pytest.fixture(scope="session")
def flux_toy_dir(toy_model_dir) -> Path:
    return toy_model_dir("flux")
