"""The contracts are the ground floor: importing any of them pulls in no model or web stack."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import hprune.contracts
from tests.conftest import REPO_ROOT

HEAVY = ["torch", "diffusers", "transformers", "bitsandbytes", "flask", "sqlalchemy"]
PROJECT = ["generation", "study", "analysis", "hprune.commands", "hprune.cli"]


def test_every_contract_module_imports_without_heavy_or_project_packages() -> None:
    names = [info.name for info in pkgutil.iter_modules(hprune.contracts.__path__)]
    assert {"prompts", "variants", "manifest", "metrics", "responses", "participants"} <= set(names)
    modules = [f"hprune.contracts.{name}" for name in names]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = [m for m in {HEAVY + PROJECT!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"hprune.contracts pulled in {out.stdout.strip()}"
