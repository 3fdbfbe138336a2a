"""The layout is the architecture, checked at run time too.

`lint-imports` (in `make test`) checks the contracts in pyproject.toml against the static
imports. An import made by name at run time (importlib, a plugin) escapes it, so each package
that a "forbidden" contract names is imported here whole, in a fresh interpreter, and
sys.modules must hold none of the modules that contract forbids.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO_ROOT


def _forbidden_contracts() -> dict[str, list[str]]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    found: dict[str, list[str]] = {}
    for contract in config["contracts"]:
        if contract["type"] == "forbidden":
            for source in contract["source_modules"]:
                found.setdefault(source, []).extend(contract["forbidden_modules"])
    return found


FORBIDDEN = _forbidden_contracts()


def _modules(package: str) -> list[str]:
    root = REPO_ROOT.joinpath(*package.split("."))
    found = pkgutil.walk_packages([str(root)], prefix=f"{package}.")
    return [package] + [info.name for info in found]


def test_the_runtime_check_covers_every_package() -> None:
    assert {"generation", "study", "analysis", "hprune.contracts"} <= set(FORBIDDEN)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_without_forbidden_dependencies(package: str) -> None:
    forbidden = FORBIDDEN[package]
    if package == "hprune.contracts":  # the contracts stand below all three packages
        forbidden = [*forbidden, "generation", "study", "analysis", "hprune.commands"]
    code = (
        "import importlib, sys\n"
        f"for name in {_modules(package)!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = [m for m in {forbidden!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"{package} pulled in {out.stdout.strip()}"
