"""HierarchicalPrune in miniature: the paper's chain run on the mini teacher by hprune's own commands.

The chain (each step is one ``hprune`` command line, run in a subprocess and skipped when
its output already exists, so an interrupted run continues where it stopped)::

    mini data      captioned shapes images for distillation
    contrib        block and subcomponent contributions, scored by fidelity (SSIM to the
                   unablated image) and by mini-GenEval
    prune          HPP at ~20% (moderate) and ~30% (aggressive) of the parameters, from the
                   fidelity contributions; BK-SDM and KOALA at the same budgets
    distill        PWP (frozen prefix, output distillation), SGDistill (output + feature
                   distillation, binary or inverse block weights); the baselines get the
                   same distillation without the positional freeze (their own recipe: KD
                   on every remaining block)
    quantize       NF4 of the original and of the paper's two released configurations
    render         every variant on the held-out prompts at several seeds
    score          mini-GenEval and SSIM to the original's image of the same prompt and seed
    profile        parameters, weight bytes and CPU latency of one step, each model alone
    latency        image latency of every variant, interleaved in one process (``mini.latency``)

The headline variants are distilled a second time from another seed (``-s1``), so the
table shows seed-to-seed variation. ``run_steps`` records each step's and each stage's
wall time in ``timings.json``. ``write_report`` turns the outputs into
``docs/mini-results.md``: the table shaped like the paper's with a 95% bootstrap interval
per mini-GenEval, the paper's claims as paired tests over prompt x seed with Holm's
correction (``mini.stats``), the timings, and the block x component contribution heatmaps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from generation.mini import EVALUATION_PROMPTS
from generation.mini.teacher import RENDER_OPTIONS, TEACHER_DIR

DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass(frozen=True)
class PaperConfig:
    """Everything the miniature run depends on."""

    teacher: Path = TEACHER_DIR
    work: Path = Path("runs/mini-paper")
    prompts: Path = EVALUATION_PROMPTS
    eval_seeds: str = "0-3"
    eval_per_category: int | None = None  # None: every held-out prompt (84)
    contrib_per_category: int = 2
    contrib_seeds: str = "0"
    moderate: float = 0.8  # fraction of the transformer's parameters kept
    aggressive: float = 0.7
    # HPP's critical blocks: drop >= this x the largest. The paper's 0.25 separates HPSv2
    # collapses on SD3.5 (drops 6.9-23.7 against 0.1-5.4); the mini teacher's SSIM drops are
    # flat (about 0.1-0.45, nothing collapses), so at 0.25 nearly every block would be
    # critical and nothing could be pruned: only blocks near the largest drop count here.
    hpp_critical_fraction: float = 0.75
    data_images: int = 2000
    distill_steps: int = 200
    distill_batch: int = 16
    distill_lr: float = 5e-4
    lambda_feat: float = 1e-4
    profile_repeats: int = 5
    latency_repeats: int = 9
    # distilled again from seed 1 (as ``<name>-s1``): the headline comparisons' variants
    second_seed: tuple[str, ...] = (
        "hpp-20-pwp",
        "hpp-30-pwp-sgd",
        "bk-sdm-30-kd",
        "koala-30-kd",
    )
    bootstrap_rounds: int = 2000
    permutation_rounds: int = 20_000
    render: dict = field(default_factory=lambda: dict(RENDER_OPTIONS))


@dataclass(frozen=True)
class Step:
    """One hprune command line and the file or folder it makes."""

    name: str
    args: tuple[str, ...]
    output: Path
    # the command splits its own work over processes (``hprune render`` under torchrun):
    # with ``jobs > 1`` it runs as that many processes instead of beside other steps
    shardable: bool = False


@dataclass(frozen=True)
class PaperVariant:
    """A row of the results table: a model folder and how it was made."""

    name: str
    label: str
    level: str  # "-", "20%", "30%"
    model: Path


def _levels(config: PaperConfig) -> dict[str, float]:
    return {"20": config.moderate, "30": config.aggressive}


def variants(config: PaperConfig) -> list[PaperVariant]:
    """The variants compared, in table order."""
    m = config.work / "models"
    rows = [
        PaperVariant("original", "Original (mini teacher)", "-", config.teacher),
        PaperVariant("original-nf4", "Original + NF4", "-", m / "original-nf4"),
    ]
    for level in ("20", "30"):
        pct = f"{level}%"
        rows += [
            PaperVariant(f"hpp-{level}", "HPP", pct, m / f"hpp-{level}"),
            PaperVariant(f"hpp-{level}-pwp", "HPP + PWP", pct, m / f"hpp-{level}-pwp"),
            PaperVariant(
                f"hpp-{level}-pwp-sgd",
                "HPP + PWP + SGDistill (binary)",
                pct,
                m / f"hpp-{level}-pwp-sgd",
            ),
            PaperVariant(
                f"hpp-{level}-pwp-sgd-inv",
                "HPP + PWP + SGDistill (inverse)",
                pct,
                m / f"hpp-{level}-pwp-sgd-inv",
            ),
        ]
        release = f"hpp-{level}-pwp-nf4" if level == "20" else f"hpp-{level}-pwp-sgd-nf4"
        label = "HPP + PWP + NF4" if level == "20" else "HPP + PWP + SGDistill + NF4"
        rows.append(PaperVariant(release, label, pct, m / release))
        for method, name in (("bk-sdm", "BK-SDM"), ("koala", "KOALA")):
            rows += [
                PaperVariant(f"{method}-{level}", name, pct, m / f"{method}-{level}"),
                PaperVariant(
                    f"{method}-{level}-kd", f"{name} + KD", pct, m / f"{method}-{level}-kd"
                ),
            ]
            if level == "30":  # quantised like the released configuration, for the demo
                rows.append(
                    PaperVariant(
                        f"{method}-30-kd-nf4", f"{name} + KD + NF4", pct, m / f"{method}-30-kd-nf4"
                    )
                )
    by_name = {row.name: row for row in rows}
    for name in config.second_seed:
        row = by_name[name]
        rows.append(
            PaperVariant(f"{name}-s1", f"{row.label} (seed 1)", row.level, m / f"{name}-s1")
        )
    return rows


def _seed_of(name: str) -> str:
    """The seed-0 variant a ``-s1`` variant repeats (itself otherwise)."""
    return name.removesuffix("-s1")


def plan(config: PaperConfig) -> list[Step]:
    """Every command of the chain, in order."""
    w, m = config.work, config.work / "models"
    r = config.render
    render_args = (
        "--steps", str(r["steps"]),
        "--guidance", str(r["guidance"]),
        "--max-sequence-length", str(r["max_sequence_length"]),
    )  # fmt: skip
    steps = [
        Step(
            "data",
            (
                "mini",
                "data",
                "--out",
                str(w / "data"),
                "-n",
                str(config.data_images),
                "--seed",
                "1",
            ),
            w / "data",
        ),
    ]
    for scorer in ("fidelity", "mini-geneval"):
        out = w / f"contrib-{scorer}.json"
        steps.append(
            Step(
                f"contrib-{scorer}",
                (
                    "contrib", "--model", str(config.teacher), "--prompts", str(config.prompts),
                    "--per-category", str(config.contrib_per_category), "--seeds", config.contrib_seeds,
                    "--scorer", scorer, "--batch-size", "16", *render_args, "--out", str(out),
                ),
                out,
            )
        )  # fmt: skip
    contrib = str(w / "contrib-fidelity.json")
    for level, budget in _levels(config).items():
        for method in ("hpp", "bk-sdm", "koala"):
            out = m / f"{method}-{level}"
            args = [
                "prune",
                "--model",
                str(config.teacher),
                "--method",
                method,
                "--budget",
                str(budget),
            ]
            if method in ("hpp", "koala"):
                args += ["--contrib", contrib]
            if method == "hpp":
                args += ["--critical-fraction", str(config.hpp_critical_fraction)]
            steps.append(Step(f"prune-{method}-{level}", (*args, "--out", str(out)), out))
    distill_common = (
        "--teacher", str(config.teacher), "--data", str(w / "data"),
        "--steps", str(config.distill_steps), "--batch-size", str(config.distill_batch),
        "--lr", str(config.distill_lr), "--max-sequence-length", str(r["max_sequence_length"]),
        "--cache-dir", str(w / "cache"), "--log-every", "50",
    )  # fmt: skip
    for level in _levels(config):
        student = str(m / f"hpp-{level}")
        runs = {
            f"hpp-{level}-pwp": (student, "auto", "binary", "0"),
            f"hpp-{level}-pwp-sgd": (student, "auto", "binary", str(config.lambda_feat)),
            f"hpp-{level}-pwp-sgd-inv": (student, "auto", "inverse", str(config.lambda_feat)),
            f"bk-sdm-{level}-kd": (
                str(m / f"bk-sdm-{level}"),
                "none",
                "binary",
                str(config.lambda_feat),
            ),
            f"koala-{level}-kd": (
                str(m / f"koala-{level}"),
                "none",
                "binary",
                str(config.lambda_feat),
            ),
        }
        for name, (source, freeze, weighting, lambda_feat) in runs.items():
            args = ("distill", *distill_common, "--student", source, "--freeze", freeze,
                    "--weighting", weighting, "--lambda-feat", lambda_feat)  # fmt: skip
            if weighting == "inverse":
                args += ("--contrib", contrib)
            steps.append(Step(f"distill-{name}", (*args, "--out", str(m / name)), m / name))
            if name in config.second_seed:
                again = m / f"{name}-s1"
                steps.append(
                    Step(f"distill-{name}-s1", (*args, "--seed", "1", "--out", str(again)), again)
                )
    for source, name in (
        (str(config.teacher), "original-nf4"),
        (str(m / "hpp-20-pwp"), "hpp-20-pwp-nf4"),
        (str(m / "hpp-30-pwp-sgd"), "hpp-30-pwp-sgd-nf4"),
        (str(m / "bk-sdm-30-kd"), "bk-sdm-30-kd-nf4"),
        (str(m / "koala-30-kd"), "koala-30-kd-nf4"),
    ):
        out = m / name
        steps.append(
            Step(
                f"quantize-{name}",
                ("quantize", "--model", source, "--scheme", "nf4", "--out", str(out)),
                out,
            )
        )
    steps.append(
        Step(
            "render",
            ("render", "--variants", str(w / "variants.yaml"), "--prompts", str(config.prompts),
             "--seeds", config.eval_seeds, "--batch-size", "16", "--out", str(w / "stimuli"),
             *(("--per-category", str(config.eval_per_category)) if config.eval_per_category else ())),
            w / "stimuli" / "manifest.csv",
            shardable=True,
        )
    )  # fmt: skip
    steps.append(
        Step(
            "score",
            ("score", "--stimuli", str(w / "stimuli"), "--scorer", "mini-geneval,ssim-vs-original",
             "--out", str(w / "metrics.csv")),
            w / "metrics.csv",
        )
    )  # fmt: skip
    for variant in variants(config):
        if _seed_of(variant.name) != variant.name:
            continue  # the same architecture as its seed-0 twin: the same parameters and bytes
        out = w / "profiles" / f"{variant.name}.json"
        steps.append(
            Step(
                f"profile-{variant.name}",
                ("profile", "--model", str(variant.model), "--device", "cpu", "--steps", str(r["steps"]),
                 "--guidance", str(r["guidance"]), "--height", str(r["resolution"]), "--width", str(r["resolution"]),
                 "--max-sequence-length", str(r["max_sequence_length"]),
                 "--repeats", str(config.profile_repeats), "--out", str(out)),
                out,
            )
        )  # fmt: skip
    steps.append(
        Step(
            "latency",
            ("mini", "latency", "--variants", str(w / "variants.yaml"),
             "--repeats", str(config.latency_repeats), "--out", str(w / "latency.json")),
            w / "latency.json",
        )
    )  # fmt: skip
    return steps


def write_variants_yaml(path: Path, rows: Sequence[PaperVariant], render: dict) -> None:
    """variants.yaml for ``hprune render``: every row with the teacher's render settings."""
    import yaml

    from hprune.fileio import atomic_write_text

    entries = [
        {
            "name": v.name,
            "model": str(v.model.resolve()),
            **({"reference": True} if v.name == "original" else {}),
            "pipeline": dict(render),
        }
        for v in rows
    ]
    atomic_write_text(path, yaml.safe_dump(entries, sort_keys=False))


def run_step(
    step: Step,
    *,
    echo=print,
    log: Path | None = None,
    env: dict | None = None,
    processes: int = 1,
) -> float | None:
    """Run one ``hprune`` command in a subprocess unless its output exists already; its wall
    seconds (None when skipped).

    With ``log`` the command's output goes to that file (parallel steps would interleave);
    with ``processes > 1`` a shardable step runs under ``torchrun --standalone`` (its
    rendezvous binds a free port itself).
    """
    if step.output.exists():
        echo(f"[skip] {step.name}: {step.output} exists")
        return None
    launcher = ["-m", "hprune.cli"]
    if step.shardable and processes > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(processes), *launcher]  # fmt: skip
    command = [sys.executable, *launcher, *step.args]
    echo(f"[run]  hprune {' '.join(step.args)}")
    start = time.perf_counter()
    if log is None:
        subprocess.run(command, check=True, env=env)
        return time.perf_counter() - start
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        raise RuntimeError(f"step {step.name} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


# Steps of one stage never read each other's output; a stage starts when the last one ends.
STAGES = (
    "data", "contrib", "prune", "distill", "quantize", "render", "score", "profile", "latency",
)  # fmt: skip
SOLO_STAGES = ("profile", "latency")  # timings: each runs alone, as a user would


def _stage(step: Step) -> int:
    return STAGES.index(step.name.removeprefix("demo-").split("-")[0])


def run_steps(
    steps: Sequence[Step], *, jobs: int = 1, logs: Path, echo=print, timings: Path | None = None
) -> dict:
    """Run ``steps`` stage by stage, up to ``jobs`` steps of a stage at once; the wall
    seconds of each step run and of each stage, merged into ``timings`` (JSON) when given,
    so a resumed chain keeps the timings of the steps it skips.

    The chain's models are small, and a small model's step is mostly per-operation
    overhead that a second torch thread barely shortens; two one-thread processes side by
    side finish a stage sooner than one two-thread process after another. So with
    ``jobs > 1`` every step runs with one torch thread and logs to ``logs/<step>.log``,
    and a stage that is one shardable step (the render) runs as ``jobs`` processes.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor
    from itertools import groupby

    from hprune.fileio import atomic_write_text

    record = {"steps": {}, "stages": {}, "jobs": jobs}
    if timings is not None and timings.exists():
        record = {**record, **json.loads(timings.read_text()), "jobs": jobs}

    def note(stage: str, start: float, seconds: dict[str, float | None]) -> None:
        ran = {name: s for name, s in seconds.items() if s is not None}
        record["steps"].update(ran)
        if ran:
            record["stages"][stage] = time.perf_counter() - start
        if timings is not None:
            atomic_write_text(timings, json.dumps(record, indent=2) + "\n")

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if jobs > 1 else None
    ordered = sorted(steps, key=_stage)  # stable: plan order within a stage
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for stage, of_stage in groupby(ordered, key=_stage):
            group, start = list(of_stage), time.perf_counter()
            if jobs <= 1:
                seconds = {step.name: run_step(step, echo=echo) for step in group}
            elif len(group) == 1 and group[0].shardable:
                step = group[0]
                seconds = {
                    step.name: run_step(
                        step, echo=echo, log=logs / f"{step.name}.log", env=env, processes=jobs
                    )
                }
            elif STAGES[stage] in SOLO_STAGES:
                seconds = {
                    step.name: run_step(step, echo=echo, log=logs / f"{step.name}.log")
                    for step in group
                }
            else:
                futures = {
                    step.name: pool.submit(
                        run_step, step, echo=echo, log=logs / f"{step.name}.log", env=env
                    )
                    for step in group
                }
                seconds = {name: future.result() for name, future in futures.items()}
            note(STAGES[stage], start, seconds)
    return record


def run(
    config: PaperConfig, *, echo=print, only: Sequence[str] | None = None, jobs: int = 1
) -> None:
    """The whole chain (or the steps whose names start with one of ``only``)."""
    config.work.mkdir(parents=True, exist_ok=True)
    write_variants_yaml(config.work / "variants.yaml", variants(config), config.render)
    steps = [
        step
        for step in plan(config)
        if not only or any(step.name.startswith(prefix) for prefix in only)
    ]
    run_steps(
        steps, jobs=jobs, logs=config.work / "logs", echo=echo, timings=config.work / "timings.json"
    )


# ---------------------------------------------------------------------------- demo stimuli

DEMO_DIR = DOCS.parent / "demo" / "stimuli"

# The five variants ``make demo`` serves: the original, the paper's two released
# configurations, and the two baselines (distilled, then NF4 like the released ones) at the
# aggressive level's budget.
DEMO_VARIANTS = {
    "original": None,
    "hpp-20-pwp-nf4": "quantize-hpp-20-pwp-nf4",
    "hpp-30-pwp-sgd-nf4": "quantize-hpp-30-pwp-sgd-nf4",
    "bk-sdm-30-kd-nf4": "quantize-bk-sdm-30-kd-nf4",
    "koala-30-kd-nf4": "quantize-koala-30-kd-nf4",
}
DEMO_PER_CATEGORY = 4
DEMO_SEEDS = "0-1"


def _step_by_name(config: PaperConfig) -> dict[str, Step]:
    return {step.name: step for step in plan(config)}


def _needs(config: PaperConfig, name: str) -> list[str]:
    """``name`` and every chain step it depends on, dependencies first (from the command lines)."""
    steps = _step_by_name(config)
    made_by = {str(step.output): step.name for step in steps.values()}
    order: list[str] = []

    def visit(current: str) -> None:
        if current in order:
            return
        for arg in steps[current].args:
            if arg in made_by and made_by[arg] != current:
                visit(made_by[arg])
        order.append(current)

    visit(name)
    return order


def demo_plan(config: PaperConfig, out: Path = DEMO_DIR) -> list[Step]:
    """The chain steps the demo variants need, then their render and score into ``out``."""
    names: list[str] = []
    for step in DEMO_VARIANTS.values():
        for name in _needs(config, step) if step else []:
            if name not in names:
                names.append(name)
    steps = _step_by_name(config)
    variants_yaml = config.work / "demo-variants.yaml"
    return [
        *(steps[name] for name in names),
        Step(
            "demo-render",
            ("render", "--variants", str(variants_yaml), "--prompts", str(config.prompts),
             "--per-category", str(DEMO_PER_CATEGORY), "--seeds", DEMO_SEEDS,
             "--batch-size", "16", "--out", str(out)),
            out / "manifest.csv",
            shardable=True,
        ),
        Step(
            "demo-score",
            ("score", "--stimuli", str(out), "--scorer", "mini-geneval,ssim-vs-original",
             "--out", str(out / "metrics.csv")),
            out / "metrics.csv",
        ),
    ]  # fmt: skip


def run_demo(config: PaperConfig, out: Path = DEMO_DIR, *, echo=print, jobs: int = 1) -> None:
    """Build (or reuse) the demo variants in ``config.work`` and render and score the demo set."""
    config.work.mkdir(parents=True, exist_ok=True)
    rows = {v.name: v for v in variants(config)}
    write_variants_yaml(
        config.work / "demo-variants.yaml",
        [rows[name] for name in DEMO_VARIANTS],
        config.render,
    )
    run_steps(demo_plan(config, out), jobs=jobs, logs=config.work / "logs", echo=echo)
