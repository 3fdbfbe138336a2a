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
    profile        parameters, weight bytes and CPU latency per image

``write_report`` turns the outputs into ``docs/mini-results.md`` (a table shaped like the
paper's) and the block x component contribution heatmaps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from generation.mini import EVALUATION_PROMPTS
from generation.mini.teacher import RENDER_OPTIONS, TEACHER_DIR
from generation.shapes_world.shapes import CATEGORIES

DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass(frozen=True)
class PaperConfig:
    """Everything the miniature run depends on."""

    teacher: Path = TEACHER_DIR
    work: Path = Path("runs/mini-paper")
    prompts: Path = EVALUATION_PROMPTS
    eval_seeds: str = "0-1"
    eval_per_category: int | None = 4  # None: every held-out prompt
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
    render: dict = field(default_factory=lambda: dict(RENDER_OPTIONS))


@dataclass(frozen=True)
class Step:
    """One hprune command line and the file or folder it makes."""

    name: str
    args: tuple[str, ...]
    output: Path


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
    return rows


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


def run_step(step: Step, *, echo=print, log: Path | None = None, env: dict | None = None) -> None:
    """Run one ``hprune`` command in a subprocess unless its output exists already.

    With ``log`` the command's output goes to that file (parallel steps would interleave).
    """
    if step.output.exists():
        echo(f"[skip] {step.name}: {step.output} exists")
        return
    command = [sys.executable, "-m", "hprune.cli", *step.args]
    echo(f"[run]  hprune {' '.join(step.args)}")
    if log is None:
        subprocess.run(command, check=True, env=env)
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        raise RuntimeError(f"step {step.name} failed (exit {done.returncode}); see {log}")


# Steps of one stage never read each other's output; a stage starts when the last one ends.
STAGES = ("data", "contrib", "prune", "distill", "quantize", "render", "score", "profile")


def _stage(step: Step) -> int:
    return STAGES.index(step.name.removeprefix("demo-").split("-")[0])


def run_steps(steps: Sequence[Step], *, jobs: int = 1, logs: Path, echo=print) -> None:
    """Run ``steps`` stage by stage, up to ``jobs`` steps of a stage at once.

    The chain's models are small, and a small model's step is mostly per-operation
    overhead that a second torch thread barely shortens; two one-thread processes side by
    side finish a stage sooner than one two-thread process after another. So with
    ``jobs > 1`` every step runs with one torch thread and logs to ``logs/<step>.log``.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor
    from itertools import groupby

    if jobs <= 1:
        for step in steps:
            run_step(step, echo=echo)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ordered = sorted(steps, key=_stage)  # stable: plan order within a stage
    with ThreadPoolExecutor(jobs) as pool:
        for stage, group in groupby(ordered, key=_stage):
            if STAGES[stage] == "profile":  # timings: each runs alone, as a user would
                for step in group:
                    run_step(step, echo=echo, log=logs / f"{step.name}.log")
                continue
            futures = [
                pool.submit(run_step, step, echo=echo, log=logs / f"{step.name}.log", env=env)
                for step in group
            ]
            for future in futures:
                future.result()


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
    run_steps(steps, jobs=jobs, logs=config.work / "logs", echo=echo)


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


# ---------------------------------------------------------------------------- the report


def results_table(config: PaperConfig) -> list[dict]:
    """One dict per variant: sizes and latency (profiles) and scores (metrics.csv) relative to the original."""
    import pandas as pd

    from generation.measurement.metric_importers import geneval_summary
    from hprune.contracts.manifest import read_manifest
    from hprune.contracts.metrics import read_metrics

    metrics = read_metrics(config.work / "metrics.csv")
    manifest = pd.DataFrame([vars(row) for row in read_manifest(config.work / "stimuli")])
    metrics = metrics.merge(manifest[["image_id", "category", "seed"]], on="image_id")
    profiles = {
        v.name: json.loads((config.work / "profiles" / f"{v.name}.json").read_text())
        for v in variants(config)
    }
    base = profiles["original"]
    rows = []
    for v in variants(config):
        p = profiles[v.name]
        mine = metrics[metrics["variant"] == v.name]
        geneval = mine[mine["metric"] == "mini-geneval"]
        summary = geneval_summary(
            {"tag": c, "correct": value >= 0.5, "prompt_id": pid}
            for c, value, pid in zip(
                geneval["category"], geneval["value"], geneval["prompt_id"], strict=True
            )
        )
        ssim = mine[mine["metric"] == "ssim-vs-original"]["value"].mean()
        if v.name == "original":  # the reference: scored against itself by definition
            ssim = 1.0
        rows.append(
            {
                "name": v.name,
                "label": v.label,
                "level": v.level,
                "parameters": p["parameters"],
                "parameters_pct": 100 * p["parameters"] / base["parameters"],
                "weights_bytes": p["weights_bytes"],
                "weights_pct": 100 * p["weights_bytes"] / base["weights_bytes"],
                "step_ms": p["step"]["latency_ms_median"],
                "step_pct": 100
                * p["step"]["latency_ms_median"]
                / base["step"]["latency_ms_median"],
                "latency_ms": p["image"]["latency_ms_median"],
                "latency_pct": 100
                * p["image"]["latency_ms_median"]
                / base["image"]["latency_ms_median"],
                "overall": summary.overall,
                **{c: summary.tasks.get(c, float("nan")) for c in CATEGORIES},
                "ssim": float(ssim),
                "images": len(geneval),
            }
        )
    return rows


def contribution_heatmap(contrib_paths: dict[str, Path], out: Path) -> None:
    """Block x component heatmaps of the score drops, one panel per contrib.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(contrib_paths), figsize=(4.2 * len(contrib_paths), 5.2))
    axes = np.atleast_1d(axes)
    for ax, (title, path) in zip(axes, contrib_paths.items(), strict=True):
        data = json.loads(path.read_text())
        components = list(dict.fromkeys(e["component"] for e in data["entries"]))
        blocks = sorted({e["block"] for e in data["entries"]})
        grid = np.full((len(blocks), len(components)), np.nan)
        for e in data["entries"]:
            grid[blocks.index(e["block"]), components.index(e["component"])] = e["drop"]
        limit = np.nanmax(np.abs(grid)) or 1.0
        image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(components)), components, rotation=45, ha="right")
        ax.set_yticks(range(len(blocks)), [str(b) for b in blocks])
        ax.set_ylabel("block")
        ax.set_title(
            f"{title}\n(drop when removed; baseline {data['baseline']['score']:.3f})", fontsize=9
        )
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _pct(value: float) -> str:
    return f"{value:.1f}%"


NOISE = (
    0.1  # overall mini-GenEval differences below this are within the sample's noise (report text)
)


def _comparisons(rows: list[dict]) -> list[str]:
    """Plain statements of who wins at each level, from the numbers alone."""
    lines = []
    by_name = {r["name"]: r for r in rows}
    for level in ("20", "30"):
        candidates = [r for r in rows if r["level"] == f"{level}%" and "nf4" not in r["name"]]
        if not candidates:
            continue
        best = max(candidates, key=lambda r: r["overall"])
        closest = max(candidates, key=lambda r: r["ssim"])
        lines.append(
            f"- At {level}% pruning the highest mini-GenEval is {best['label']} "
            f"({best['overall']:.3f}); the closest to the original (SSIM) is {closest['label']} "
            f"({closest['ssim']:.3f})."
        )
        hpp = by_name.get(f"hpp-{level}-pwp-sgd" if level == "30" else f"hpp-{level}-pwp")
        for baseline in (f"bk-sdm-{level}-kd", f"koala-{level}-kd"):
            if hpp and baseline in by_name:
                other = by_name[baseline]
                verdict = (
                    "beats"
                    if hpp["overall"] > other["overall"]
                    else ("ties" if hpp["overall"] == other["overall"] else "does not beat")
                )
                noise = (
                    " -- within the noise of this sample"
                    if abs(hpp["overall"] - other["overall"]) < NOISE
                    else ""
                )
                lines.append(
                    f"  {hpp['label']} {verdict} {other['label']} on mini-GenEval "
                    f"({hpp['overall']:.3f} vs {other['overall']:.3f}{noise}; "
                    f"SSIM {hpp['ssim']:.3f} vs {other['ssim']:.3f})."
                )
    return lines


def write_report(
    config: PaperConfig, out: Path = DOCS / "mini-results.md", *, machine: str = ""
) -> None:
    """docs/mini-results.md (results table, commands, comparisons) and the contribution heatmap PNG."""
    from hprune.contracts.prompts import read_prompts
    from hprune.fileio import atomic_write_text

    rows = results_table(config)
    heatmap = out.parent / "mini-contrib-heatmap.png"
    contribution_heatmap(
        {
            "fidelity (1 - SSIM)": config.work / "contrib-fidelity.json",
            "mini-GenEval": config.work / "contrib-mini-geneval.json",
        },
        heatmap,
    )
    base = rows[0]
    head = (
        "| Method | Pruned | Params | Weights | Latency / step | Latency / image | mini-GenEval | "
        + " | ".join(CATEGORIES)
        + " | SSIM to original |"
    )
    rule = "|" + "---|" * (9 + len(CATEGORIES) - 1)
    table = [head, rule]
    for r in rows:
        cells = [
            r["label"],
            r["level"],
            _pct(r["parameters_pct"]),
            _pct(r["weights_pct"]),
            f"{r['step_ms']:.1f} ms ({_pct(r['step_pct'])})",
            f"{r['latency_ms']:.0f} ms ({_pct(r['latency_pct'])})",
            f"**{r['overall']:.3f}**",
            *(f"{r[c]:.2f}" for c in CATEGORIES),
            f"{r['ssim']:.3f}",
        ]
        table.append("| " + " | ".join(cells) + " |")
    commands = "\n".join(f"hprune {' '.join(step.args)}" for step in plan(config))
    text = f"""# HierarchicalPrune in miniature

The paper's chain run on the shipped mini teacher (`generation/mini/assets/teacher`, a
`StableDiffusion3Pipeline` with a {base["parameters"]:,}-parameter MMDiT trained on the shapes
world) by hprune's own commands. Regenerate everything with `hprune mini paper` (outputs in
`{config.work}`; steps whose output exists are skipped).

Evaluation: {len(read_prompts(config.prompts, per_category=config.eval_per_category))} held-out prompts
(`generation/mini/assets/evaluation_metadata.jsonl`, {config.eval_per_category or "all"} per category
where there are that many; seeded sample 0) at seeds {config.eval_seeds}, rendered
with {config.render["steps"]} Euler steps and guidance {config.render["guidance"]}; every
variant starts each (prompt, seed) from the same noise. mini-GenEval is the mean of the six
task means (GenEval's summary); SSIM is to the original's image of the same prompt and seed.
Params and weights are the transformer's (stored tensor bytes, NF4 packed bytes plus
quantisation state; the teacher is stored in fp32, so NF4 is about a sixth of it rather than
the ~28% of bf16 of the full-size models); latency is the median of {config.profile_repeats} runs of one transformer
step (the guidance batch of 2) and of a whole image (text encoding, {config.render["steps"]} steps
with classifier-free guidance, VAE decoding) on the CPU{f", {machine}" if machine else ""}, each
model profiled alone. NF4 is slower on a CPU: bitsandbytes dequantises every weight on every
call (the paper's latency gain is a GPU memory-bandwidth effect).

Sample size: every mini-GenEval task mean here is over 6 to 8 images (single_object has 3
held-out prompts, the others 4, times 2 seeds), so one image moves a task mean by 0.12-0.17
and the overall by 0.02-0.03; overall differences below about 0.1 are within the noise of
this sample. `hprune mini eval --model DIR` judges one model on all 84 prompts.

{chr(10).join(table)}

Levels: {_pct(100 * (1 - config.moderate))} (moderate) and {_pct(100 * (1 - config.aggressive))}
(aggressive) of the transformer's parameters removed. Distillation: {config.distill_steps} steps,
batch {config.distill_batch}, AdamW lr {config.distill_lr}, on {config.data_images} captioned
shapes images (`hprune mini data`); PWP = frozen prefix + output distillation (λ_feat = 0);
SGDistill = output + feature distillation (λ_feat = {config.lambda_feat}) with binary or
inverse-sensitivity block weights; "+ KD" = the baselines' own recipe, the same distillation
with every remaining block trainable (`--freeze none`).

## What it shows

{chr(10).join(_comparisons(rows))}

## Contributions

![block x component contributions](mini-contrib-heatmap.png)

Score drop when a block (column `block`) or one subcomponent is replaced by an identity,
on {config.contrib_per_category} prompts per category at seeds {config.contrib_seeds}. Left:
fidelity (drop of SSIM to the unablated image), which HPP and KOALA use here; right:
mini-GenEval.

## The commands

```
{commands}
```
"""
    atomic_write_text(out, text)
