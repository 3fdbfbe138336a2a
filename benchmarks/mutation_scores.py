"""Mutation score per module from a ``mutmut run`` (``make mutation``), and the survivors.

mutmut 3 keeps each mutated file's results in ``mutants/<path>.meta`` (JSON, mutant name ->
the exit code of its test run). A mutant counts as killed when a test failed or timed out;
"no tests" (no selected test reached the function) and "survived" count against the score;
mutants not yet run are listed apart. Usage::

    python benchmarks/mutation_scores.py [--survivors] [module.py ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KILLED = {1, 3, 36, 37, 24, -24, 152, 255}  # test failure, pytest error, timeouts, type check
SURVIVED = {0}
NO_TESTS = {5, 33}
NOT_RUN = {None, 2, 34}  # not checked, interrupted, skipped


def classify(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    if code in NOT_RUN:
        return "not run"
    return "suspicious"


def scores(root: Path) -> dict[str, tuple[Counter, list[str]]]:
    out = {}
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(root / "mutants")).removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        counts = Counter(classify(c) for c in codes.values())
        survivors = sorted(k for k, c in codes.items() if classify(c) in ("survived", "no tests"))
        out[module] = (counts, survivors)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="limit to these paths (e.g. analysis/qc.py)")
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants")
    args = parser.parse_args()
    found = scores(REPO)
    if not found:
        sys.exit("no mutmut results under mutants/: run `make mutation` first")
    print(
        f"{'module':45} {'killed':>7} {'survived':>8} {'no tests':>8} {'not run':>7} {'score':>6}"
    )
    for module, (counts, survivors) in found.items():
        if args.modules and module not in args.modules:
            continue
        tested = counts["killed"] + counts["survived"] + counts["no tests"] + counts["suspicious"]
        score = f"{counts['killed'] / tested:.0%}" if tested else "-"
        print(
            f"{module:45} {counts['killed']:7} {counts['survived']:8} {counts['no tests']:8} "
            f"{counts['not run']:7} {score:>6}"
        )
        if args.survivors:
            for name in survivors:
                print(f"    {name}")


if __name__ == "__main__":
    main()
