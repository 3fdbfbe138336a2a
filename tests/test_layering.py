"""The layout is the architecture: study never imports torch, analysis never torch or Flask,
and the file contracts (hprune.contracts) nothing heavy and none of the three packages."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

FORBIDDEN = {
    "study": ["torch", "diffusers", "transformers", "bitsandbytes"],
    "analysis": ["torch", "diffusers", "transformers", "bitsandbytes", "flask"],
    "generation": ["flask"],
    "hprune.contracts": [
        "torch",
        "diffusers",
        "transformers",
        "bitsandbytes",
        "flask",
        "sqlalchemy",
        "generation",
        "study",
        "analysis",
        "hprune.commands",
    ],
}


def _modules(package: str) -> list[str]:
    root = REPO_ROOT.joinpath(*package.split("."))
    found = pkgutil.walk_packages([str(root)], prefix=f"{package}.")
    return [package] + [info.name for info in found]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_without_forbidden_dependencies(package: str) -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {_modules(package)!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = [m for m in {FORBIDDEN[package]!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"{package} pulled in {out.stdout.strip()}"
