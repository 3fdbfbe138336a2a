"""How the default ``hprune analyze`` scales with the number of responses and variants.

Synthetic exports (simulated participants, 40 pair trials each over 200 prompts, Davidson
ties, a position effect, participant and prompt offsets, 2% spammers) are written through
``hprune.contracts.responses.write_responses``; then ``hprune analyze`` with its defaults
(1000-round participant bootstrap, mixed models on) runs in a child process per size, and
the parent reads the child's wall time, CPU time (user + system, its bootstrap workers
included) and peak resident memory (``os.wait4``'s ru_maxrss: the largest single process)
from the kernel. The growth exponent is the log-log slope of CPU time against responses.

Side by side, where it is feasible, the steps that used to grow faster than the data, in a
child process each: the mixed logit as statsmodels' dense formula fit (``--old-up-to``
responses) against ``analysis.mixed_logit``, and the leave-one-out outlier likelihoods as
one L-BFGS scaling per observer against ``analysis.pwcmp.outlier_likelihoods``.

    git archive 1a37042 | tar -x -C /tmp/before   # the code before, for --before
    nice -n 10 .venv/bin/python benchmarks/analysis_scale.py --before /tmp/before
    nice -n 10 .venv/bin/python benchmarks/analysis_scale.py --sizes 10000 --variants 10,50
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRIALS = 40
PROMPTS = 200


def generate(folder: Path, responses: int, variants: int, seed: int = 0) -> Path:
    """A synthetic responses export of ``responses`` pair trials over ``variants``."""
    from analysis.simulate import PairDesign, simulate_pairs
    from hprune.contracts.responses import COLUMNS, write_responses

    names = tuple(f"v{i:02d}" for i in range(variants))
    design = PairDesign(names, responses // TRIALS, TRIALS, n_prompts=PROMPTS)
    frame = simulate_pairs(
        design, -0.15 * np.arange(variants), seed=seed, tie_log_nu=-1.5, position=0.1,
        participant_sd=0.3, prompt_sd=0.2, spammers=0.02,
    )  # fmt: skip
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    folder.mkdir(parents=True, exist_ok=True)
    write_responses(frame[COLUMNS], folder)
    return folder


def measure(command: list[str], code: str | None = None) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds and peak GB of a child process, and its stdout.

    ``code``: a checkout whose packages the child imports instead (PYTHONPATH first).
    """
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([code, *filter(None, [env.get("PYTHONPATH")])])
    start = time.perf_counter()
    child = subprocess.Popen(  # cwd: ``python -m`` puts the working folder first on the path
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=code
    )
    output = child.stdout.read().decode() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}):\n{output[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20, output


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


OLD_MIXED = """
import sys, warnings, pandas as pd
from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM
r = pd.read_parquet(sys.argv[1]); d = r[(r.kind == "pair") & r.choice.isin(["left", "right"])]
data = pd.DataFrame({"win": (d.choice == "left").to_numpy(float), "left": 1.0,
                     "participant": d.participant.to_numpy(str), "prompt": d.prompt_id.to_numpy(str)})
names = sorted(set(d.left_variant) | set(d.right_variant))
for k, name in enumerate(names[1:]):
    data[f"x{k}"] = (d.left_variant == name).to_numpy(float) - (d.right_variant == name).to_numpy(float)
terms = " + ".join(["left"] + [f"x{k}" for k in range(len(names) - 1)])
model = BinomialBayesMixedGLM.from_formula(f"win ~ 0 + {terms}",
    {"participant": "0 + C(participant)", "prompt": "0 + C(prompt)"}, data)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fit = model.fit_vb(fit_method="L-BFGS-B")
print("FIXED", *fit.fe_mean[1:])
"""

NEW_MIXED = """
import sys, pandas as pd
from analysis.mixed_logit import mixed_logit
r = pd.read_parquet(sys.argv[1]); pairs = r[r.kind == "pair"]
names = sorted(set(pairs.left_variant) | set(pairs.right_variant))
print("FIXED", *mixed_logit(pairs, names[0]).fixed["estimate"].to_numpy()[1:])
"""

OLD_LOO = """
import sys, numpy as np, pandas as pd
from scipy.special import log_ndtr
from analysis.comparisons import from_pairs
from analysis.pwcmp import SIGMA, _log10_binomial, preference_matrix, scale_with_prior
r = pd.read_parquet(sys.argv[1]); pairs = r[r.kind == "pair"]
items = tuple(sorted(set(pairs.left_variant) | set(pairs.right_variant)))
everybody = preference_matrix(from_pairs(pairs, items)[0])
full, _ = scale_with_prior(everybody)
values = []
for person, trials in pairs.groupby("participant"):
    mine = preference_matrix(from_pairs(trials, items)[0])
    q, _ = scale_with_prior(everybody - mine, full)
    n = mine + mine.T
    i, j = np.nonzero(np.triu(n > 0, 1))
    x = (q[i] - q[j]) / SIGMA
    ll = np.maximum(_log10_binomial(mine[i, j], n[i, j], log_ndtr(x), log_ndtr(-x)), -200)
    values.append(ll.sum() / len(i))
print("LOO", np.mean(values))
"""

NEW_LOO = """
import sys, pandas as pd
from analysis.pwcmp import outlier_likelihoods
r = pd.read_parquet(sys.argv[1]); pairs = r[r.kind == "pair"]
print("LOO", outlier_likelihoods(pairs)["loo_log10_lik"].mean())
"""


def _value(output: str, tag: str) -> np.ndarray:
    line = next(x for x in output.splitlines() if x.startswith(tag))
    return np.array(line.split()[1:], float)


def side_by_side(export: Path) -> list[str]:
    """The old and new mixed logit and leave-one-out outlier steps on one export."""
    parquet = str(export / "responses.parquet")
    rows = []
    for step, old, new, tag in (
        ("mixed logit", OLD_MIXED, NEW_MIXED, "FIXED"),
        ("leave-one-out outliers", OLD_LOO, NEW_LOO, "LOO"),
    ):
        _, c_old, m_old, out_old = measure(_python(old, parquet))
        _, c_new, m_new, out_new = measure(_python(new, parquet))
        diff = float(np.max(np.abs(_value(out_old, tag) - _value(out_new, tag))))
        rows.append(
            f"| {step} | {c_old:.1f} s / {m_old:.2f} GB | {c_new:.1f} s / {m_new:.2f} GB | "
            f"{c_old / c_new:.1f}x | {m_old / m_new:.1f}x | {diff:.1e} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="responses per run")
    parser.add_argument("--variants", default="8", help="variant counts (comma list)")
    parser.add_argument(
        "--old-up-to", type=int, default=10000, help="also time the old steps up to this size"
    )
    parser.add_argument("--keep", default=None, help="folder for the exports (default: temp)")
    parser.add_argument(
        "--before", default=None,
        help="a checkout of the code before (git archive <commit> | tar -x -C DIR): its "
        "default analyze runs beside, up to --before-up-to responses",
    )  # fmt: skip
    parser.add_argument("--before-up-to", type=int, default=100000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(v) for v in args.variants.split(",")]
    root = Path(args.keep or tempfile.mkdtemp(prefix="hprune-scale-"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| variants | responses | participants | wall | CPU | peak memory |")
    print("|---:|---:|---:|---:|---:|---:|")
    results, old_rows = [], []
    for variants in counts:
        for size in sizes:
            export = root / f"export-{variants}-{size}"
            if not (export / "responses.parquet").exists():
                generate(export, size, variants)
            out = root / f"report-{variants}-{size}"
            command = [sys.executable, "-m", "hprune.cli", "analyze", "--responses", str(export),
                       "--out", str(out), "--overwrite"]  # fmt: skip
            wall, cpu, peak, _ = measure(command)
            results.append((variants, size, wall, cpu, peak))
            print(
                f"| {variants} | {size:,} | {size // TRIALS:,} | {wall:.1f} s | {cpu:.1f} s | "
                f"{peak:.2f} GB |",
                flush=True,
            )
            if args.before and size <= args.before_up_to:
                b_wall, b_cpu, b_peak, _ = measure(command, code=args.before)
                print(
                    f"| {variants} | {size:,} (before) | {size // TRIALS:,} | {b_wall:.1f} s | "
                    f"{b_cpu:.1f} s ({b_cpu / cpu:.1f}x) | {b_peak:.2f} GB ({b_peak / peak:.1f}x) |",
                    flush=True,
                )
            if size <= args.old_up_to and variants <= 10:  # the old LOO: minutes at 50
                old_rows += [f"| {variants} | {size:,} " + row for row in side_by_side(export)]
    for variants in counts:
        points = [(s, c) for v, s, _, c, _ in results if v == variants]
        if len(points) >= 2:
            (s0, c0), (s1, c1) = points[0], points[-1]
            slope = math.log(c1 / c0) / math.log(s1 / s0)
            print(f"{variants} variants: CPU time grows as responses^{slope:.2f} "
                  f"({s0:,} -> {s1:,})")  # fmt: skip
    if len(counts) >= 2:
        for size in sizes:
            by = {v: c for v, s, _, c, _ in results if s == size}
            print(f"{size:,} responses: {counts[-1]} variants take {by[counts[-1]] / by[counts[0]]:.1f}x "
                  f"the CPU time of {counts[0]}")  # fmt: skip
    if old_rows:
        print("\n| variants | responses | step | old: CPU / peak | new: CPU / peak | CPU ratio | "
              "memory ratio | max abs diff |")  # fmt: skip
        print("|---:|---:|---|---:|---:|---:|---:|---:|")
        print("\n".join(old_rows))


if __name__ == "__main__":
    main()
